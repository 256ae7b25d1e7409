"""Core benchmarks: overhead per exit, proxy passthrough, broker calls per exit in bursts.

Each compares the raw client, the seed-style baseline and nija-guard on the
paper exchange. Run them with ``python benchmarks/run.py --only exit_sync``
(``passthrough``, ``burst``); this file alone runs the three.
Numbers are measurements, never assertions.
"""

from __future__ import annotations

import sys
import threading
import timeit
from collections import Counter
from typing import Any

import ccxt
import wrapt
from _common import (
    SYSTEMS,
    close,
    fmt_calls,
    interleaved_us,
    paper,
    per_exit,
    stub_clients,
    symbol_names,
    wrap,
)

import nija_guard

GUARD_REFUSALS = (nija_guard.ExitInProgress, nija_guard.NothingToSell, nija_guard.DustPosition)


def exit_sync(quick: bool = False) -> dict[str, Any]:
    """Row 1: one market sell at a time on a zero-latency paper exchange."""
    runs = 300 if quick else 3000
    clients = {s: wrap(s, paper(1)) for s in SYSTEMS}
    exchanges = {s: c.__wrapped__ if s != "raw" else c for s, c in clients.items()}
    for client in clients.values():
        client.load_markets()
        for _ in range(50):  # warm up: adoption, price cache, code paths
            client.create_market_sell_order("C0/USDT", 0.01)
    before = {s: Counter(e.call_counts) for s, e in exchanges.items()}
    calls = {
        s: (lambda c=c: c.create_market_sell_order("C0/USDT", 0.01)) for s, c in clients.items()
    }
    balance_paper = paper(1)
    calls["fetch_balance"] = balance_paper.fetch_balance
    timings = interleaved_us(calls, runs)
    blocks_runs = timings["raw"]["samples"]
    broker = {
        s: per_exit(Counter(e.call_counts) - before[s], blocks_runs) for s, e in exchanges.items()
    }
    for system, client in clients.items():
        close(system, client)
    med = {k: v["median"] for k, v in timings.items()}
    balance_us = med["fetch_balance"]
    stub = _stub_exit_sync(runs)
    data = {
        "runs_per_system": blocks_runs,
        "timings_us": timings,
        "broker_calls_per_exit": broker,
        "paper_fetch_balance_us": balance_us,
        "baseline_only_us": round(med["baseline"] - med["raw"] - balance_us, 1),
        "guard_only_us": round(med["guard"] - med["raw"] - balance_us, 1),
        "zero_cost_exchange": stub,
    }
    conditions = (
        f"sync, PaperExchange latency 0, 1 symbol, {blocks_runs} sells per system "
        "(interleaved blocks, after 50 warm-up sells)"
    )
    return {
        "title": "Overhead per exit, sync",
        "rows": [
            {
                "measure": "market sell, sync (median)",
                "conditions": conditions,
                "raw": f"{med['raw']:.1f} µs",
                "baseline": f"{med['baseline']:.1f} µs",
                "guard": f"{med['guard']:.1f} µs",
                "note": "broker calls per exit: "
                + "; ".join(f"{s} {fmt_calls(broker[s])}" for s in SYSTEMS),
            },
            {
                "measure": "same, minus the raw sell and one paper fetch_balance",
                "conditions": f"paper fetch_balance median {balance_us:.1f} µs",
                "raw": "0",
                "baseline": f"{data['baseline_only_us']:.1f} µs",
                "guard": f"{data['guard_only_us']:.1f} µs",
                "note": "the wrapper's own work: lock, clamp, bookkeeping, and the "
                "cache misses of running between the paper exchange's own code",
            },
            stub_row(stub, "sync"),
        ],
        "data": data,
    }


def _stub_exit_sync(runs: int) -> dict[str, Any]:
    """Row 1 again on a zero-cost stub exchange: the guard's own CPU, nothing between."""
    clients = stub_clients()
    for name, client in clients.items():
        if name != "fetch_balance":
            client.load_markets()
            for _ in range(50):
                client.create_market_sell_order("S0/USDT", 0.01)
    calls = {
        name: (lambda c=c: c.create_market_sell_order("S0/USDT", 0.01))
        for name, c in clients.items()
        if name != "fetch_balance"
    }
    calls["fetch_balance"] = clients["fetch_balance"]
    timings = interleaved_us(calls, runs * 2)
    close("guard", clients["guard"])
    return stub_result(timings)


def stub_result(timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    med = {k: v["median"] for k, v in timings.items()}
    return {
        "timings_us": timings,
        "runs_per_system": timings["raw"]["samples"],
        "baseline_only_us": round(med["baseline"] - med["raw"] - med["fetch_balance"], 1),
        "guard_only_us": round(med["guard"] - med["raw"] - med["fetch_balance"], 1),
    }


def stub_row(stub: dict[str, Any], mode: str) -> dict[str, Any]:
    med = {k: v["median"] for k, v in stub["timings_us"].items()}
    return {
        "measure": f"the wrapper's own CPU per exit, {mode}, zero-cost exchange",
        "conditions": f"a stub exchange answering from dicts (raw sell {med['raw']:.1f} µs, "
        f"fetch_balance {med['fetch_balance']:.1f} µs), {stub['runs_per_system']} sells per "
        "system, interleaved; the same subtraction",
        "raw": "0",
        "baseline": f"{stub['baseline_only_us']:.1f} µs",
        "guard": f"{stub['guard_only_us']:.1f} µs",
        "note": "no venue code between the guard's steps: the guard alone",
    }


def _lookup_ns(obj: Any, attr: str, number: int, repeat: int) -> float:
    times = timeit.repeat(f"obj.{attr}", globals={"obj": obj}, number=number, repeat=repeat)
    times.sort()
    return times[len(times) // 2] / number * 1e9


def passthrough(quick: bool = False) -> dict[str, Any]:
    """Row 3: reading attributes and calling a non-order method through each proxy."""
    number, repeat, runs = (50_000, 3, 2000) if quick else (200_000, 7, 20_000)
    objects = {
        "raw": paper(1),
        "wrapt": wrapt.ObjectProxy(paper(1)),
        "baseline": wrap("baseline", paper(1)),
        "guard": wrap("guard", paper(1)),
    }
    for obj in objects.values():
        obj.load_markets()
    empty_ns = timeit.timeit("pass", number=number) / number * 1e9
    lookups = {
        attr: {
            name: round(_lookup_ns(obj, attr, number, repeat), 1) for name, obj in objects.items()
        }
        for attr in ("fetch_ticker", "markets")
    }
    ticker = interleaved_us(
        {name: (lambda o=obj: o.fetch_ticker("C0/USDT")) for name, obj in objects.items()}, runs
    )
    close("guard", objects["guard"])
    tick = {k: v["median"] for k, v in ticker.items()}
    method, data_attr = lookups["fetch_ticker"], lookups["markets"]
    conditions = f"timeit, median of {repeat} x {number:,} lookups (incl. ~{empty_ns:.0f} ns loop)"
    return {
        "title": "Passthrough overhead",
        "rows": [
            {
                "measure": "attribute lookup `exchange.fetch_ticker` (bound method)",
                "conditions": conditions,
                "raw": f"{method['raw']:.0f} ns",
                "baseline": f"{method['baseline']:.0f} ns",
                "guard": f"{method['guard']:.0f} ns",
                "note": f"plain wrapt.ObjectProxy {method['wrapt']:.0f} ns; the guard installs "
                "C-level property(attrgetter('__wrapped__.name')) passthroughs",
            },
            {
                "measure": "attribute lookup `exchange.markets` (instance data)",
                "conditions": conditions,
                "raw": f"{data_attr['raw']:.0f} ns",
                "baseline": f"{data_attr['baseline']:.0f} ns",
                "guard": f"{data_attr['guard']:.0f} ns",
                "note": f"plain wrapt.ObjectProxy {data_attr['wrapt']:.0f} ns",
            },
            {
                "measure": "`fetch_ticker()` call through the proxy (median)",
                "conditions": f"PaperExchange latency 0, {ticker['raw']['samples']} calls each",
                "raw": f"{tick['raw']:.2f} µs",
                "baseline": f"{tick['baseline']:.2f} µs",
                "guard": f"{tick['guard']:.2f} µs",
                "note": f"plain wrapt.ObjectProxy {tick['wrapt']:.2f} µs",
            },
        ],
        "data": {
            "lookup_ns": lookups,
            "empty_statement_ns": round(empty_ns, 1),
            "fetch_ticker_us": ticker,
        },
    }


def burst_once(client: Any, symbols: list[str]) -> dict[str, int]:
    """One sell per entry of ``symbols``, all released at once on their own threads."""
    barrier = threading.Barrier(len(symbols))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def sell(symbol: str) -> None:
        barrier.wait()
        try:
            client.create_market_sell_order(symbol, 1)
            outcome = "sold"
        except GUARD_REFUSALS as exc:
            outcome = f"refused ({type(exc).__name__})"
        except ccxt.BaseError as exc:
            outcome = f"error ({type(exc).__name__})"
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=sell, args=(s,)) for s in symbols]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(outcomes)


def burst_calls(
    system: str, exits: int, symbols: int, latency: float, **guard_options: Any
) -> list[dict[str, Any]]:
    """Two bursts on one client (cold: first exits of each symbol; then warm): calls by method."""
    exchange = paper(symbols, latency=latency)
    client = wrap(system, exchange, **guard_options)
    client.load_markets()
    names = symbol_names(symbols)
    targets = [names[i % symbols] for i in range(exits)]
    bursts = []
    for phase in ("cold", "warm"):
        before = Counter(exchange.call_counts)
        outcomes = burst_once(client, targets)
        counts = Counter(exchange.call_counts) - before
        bursts.append(
            {
                "phase": phase,
                "outcomes": outcomes,
                "broker_calls": dict(counts),
                "calls_per_exit": round(sum(counts.values()) / exits, 2),
            }
        )
    close(system, client)
    return bursts


def burst(quick: bool = False) -> dict[str, Any]:
    """Row 4: broker calls per exit when many exits arrive at once (1 ms per broker call)."""
    latency = 0.001
    scenarios = [
        ("100 exits on 100 symbols", 100, 100, {}),
        ("100 exits on 10 symbols, on_conflict='wait'", 100, 10, {"on_conflict": "wait"}),
        ("100 exits on 10 symbols, on_conflict='reject' (default)", 100, 10, {}),
    ]
    data: dict[str, Any] = {}
    rows = []
    for label, exits, symbols, options in scenarios:
        results = {
            s: burst_calls(s, exits, symbols, latency, **(options if s == "guard" else {}))
            for s in SYSTEMS
        }
        data[label] = results
        for index, phase in enumerate(("cold", "warm")):
            cells = {}
            for s in SYSTEMS:
                r = results[s][index]
                sold = r["outcomes"].get("sold", 0)
                cells[s] = f"{r['calls_per_exit']:.2f} ({sold} sold)"
            g = results["guard"][index]
            refused = {k: v for k, v in g["outcomes"].items() if k != "sold"}
            rows.append(
                {
                    "measure": f"broker calls per exit, {label}, {phase}",
                    "conditions": f"{exits} threads released by a barrier, 1 ms per broker call"
                    + (", first exit of each symbol" if phase == "cold" else ", second burst"),
                    **cells,
                    "note": f"guard: {fmt_calls(per_exit(g['broker_calls'], exits))}"
                    + (f"; {fmt_calls(refused)}" if refused else ""),
                }
            )
    return {"title": "Broker calls per exit under bursts", "rows": rows, "data": data}


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--only", "exit_sync,passthrough,burst", *sys.argv[1:]]))
