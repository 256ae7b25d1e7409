"""Memory of the guard's state after many exits over many symbols.

``exits`` sequential market sells, round-robin over ``symbols`` symbols, on a
lean stub exchange (:mod:`stub_exchange`: it keeps nothing per order), so the
run is dominated by the guard. Each system runs in a fresh interpreter
(spawned), and reports:

- RSS growth over the run (``/proc/self/statm``), right after the run;
- for the guard, ``exchange.nija_guard.status()["tables"]`` right after the
  run, then again after the book's retention window: the book keeps settled
  sells ``Book.SETTLED_KEEP_SECONDS`` (120 s) to correct lagging balances; the
  run sets it to 0 on this guard's book (an instance attribute) and makes one
  more exit, which is what lets the book prune, then measures again;
- a tracemalloc sample in another fresh interpreter: ``exits / 10`` exits over
  ``symbols / 10`` symbols (the same exits per symbol), growth by file and by
  line, right after the run and after the window. It always imports the
  pure-Python source of this checkout: tracemalloc files an allocation under
  the innermost Python frame, and compiled modules have none (their
  allocations would land on this file's own lines, which the sample leaves
  out). Both builds make the same Python objects: the RSS rows show it.

The seed-style baseline keeps no state between exits: its rows measure that.

Run with ``python benchmarks/run.py --only memory [--memory-exits N]``.
"""

from __future__ import annotations

import gc
import json
import linecache
import multiprocessing
import os
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import SYSTEMS, fmt_calls, per_exit
from seed_baseline import SeedGuard
from stub_exchange import StubExchange

import nija_guard
from nija_guard import _guard

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _client(system: str, exchange: StubExchange) -> Any:
    if system == "raw":
        return exchange
    if system == "baseline":
        return SeedGuard(exchange)
    # The stub is not a ccxt.Exchange instance, so name the ccxt adapter (the one
    # guard() picks for ccxt clients) instead of letting guard() recognize it.
    adapter = getattr(_guard, "_ADAPTER", None)
    return nija_guard.guard(exchange, load_entrypoints=False, adapter=adapter)


def _sell_all(client: Any, names: list[str], exits: int) -> float:
    count = len(names)
    sell = client.create_market_sell_order
    start = time.perf_counter()
    for i in range(exits):
        sell(names[i % count], 1.0)
    return time.perf_counter() - start


def _after_window(client: Any) -> dict[str, Any]:
    """Shrink this book's keep window to 0, make one more exit: what is left."""
    book = client.nija_guard.book
    book.SETTLED_KEEP_SECONDS = 0.0  # instance attribute: this book only
    client.create_market_sell_order("S0/USDT", 1.0)
    gc.collect()
    return client.nija_guard.status()["tables"]


def rss_run(system: str, exits: int, symbols: int) -> dict[str, Any]:
    """In a fresh process: RSS growth over ``exits`` exits (and after the window, guarded)."""
    exchange = StubExchange(symbols)
    client = _client(system, exchange)
    client.load_markets()
    names = list(exchange.markets or ())
    _sell_all(client, names[:1], 10)  # code paths warm
    gc.collect()
    before = rss_bytes()
    elapsed = _sell_all(client, names, exits)
    gc.collect()
    after = rss_bytes()
    result: dict[str, Any] = {
        "system": system,
        "exits": exits,
        "symbols": symbols,
        "elapsed_s": round(elapsed, 1),
        "us_per_exit": round(elapsed / exits * 1e6, 1),
        "rss_before_mib": round(before / MiB, 1),
        "rss_growth_mib": round((after - before) / MiB, 1),
        "broker_calls_per_exit": per_exit(exchange.calls, exits),
    }
    if system == "guard":
        status = client.nija_guard.status()
        result["tables"] = status["tables"]
        result["broker_calls_by_purpose"] = status.get("broker_calls")
        result["tables_after_window"] = _after_window(client)
        result["rss_growth_after_window_mib"] = round((rss_bytes() - before) / MiB, 1)
        client.nija_guard.close()
    return result


def _where(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        parts = path.parts
        return "/".join(parts[-2:]) if len(parts) > 1 else filename


def _top(after: Any, before: Any, key: str, limit: int) -> list[dict[str, Any]]:
    rows = []
    for stat in after.compare_to(before, key)[:limit]:
        frame = stat.traceback[0]
        where = _where(frame.filename) + (f":{frame.lineno}" if key == "lineno" else "")
        if key == "lineno":
            where += f" `{linecache.getline(frame.filename, frame.lineno).strip()[:70]}`"
        rows.append(
            {"where": where, "kib": round(stat.size_diff / 1024, 1), "blocks": stat.count_diff}
        )
    return rows


def traced_run(exits: int, symbols: int) -> dict[str, Any]:
    """In a fresh process: tracemalloc growth of a guarded run, by file and by line."""
    exchange = StubExchange(symbols)
    client = _client("guard", exchange)
    client.load_markets()
    names = list(exchange.markets or ())
    _sell_all(client, names[:1], 10)
    gc.collect()
    tracemalloc.start()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    start = tracemalloc.take_snapshot().filter_traces(ignore)
    _sell_all(client, names, exits)
    gc.collect()
    run = tracemalloc.take_snapshot().filter_traces(ignore)
    tables = client.nija_guard.status()["tables"]
    tables_after = _after_window(client)
    window = tracemalloc.take_snapshot().filter_traces(ignore)
    tracemalloc.stop()
    client.nija_guard.close()

    def total(snapshot: Any) -> int:
        return sum(s.size_diff for s in snapshot.compare_to(start, "filename"))

    return {
        "exits": exits,
        "symbols": symbols,
        "traced_growth_kib": round(total(run) / 1024, 1),
        "bytes_per_exit": round(total(run) / exits, 1),
        "tables": tables,
        "by_file": _top(run, start, "filename", 8),
        "by_line": _top(run, start, "lineno", 12),
        "after_window_traced_growth_kib": round(total(window) / 1024, 1),
        "after_window_tables": tables_after,
        "after_window_by_line": _top(window, start, "lineno", 8),
    }


def _fresh(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a freshly spawned interpreter: its RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def _fresh_pure_python(exits: int, symbols: int) -> dict[str, Any]:
    """``traced_run`` in a fresh interpreter that imports this checkout's source."""
    here = str(Path(__file__).resolve().parent)
    child = (
        "import json, bench_memory; from nija_guard._build import build_name; "
        f"sample = bench_memory.traced_run({exits}, {symbols}); "
        "print(json.dumps({'build': build_name(), **sample}))"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", child],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), here])),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if result["build"] != "pure Python":
        raise RuntimeError(f"the traced run imported a {result['build']} build")
    return result


def memory(
    quick: bool = False, exits: int | None = None, symbols: int | None = None
) -> dict[str, Any]:
    """Row 6. Full: 1,000,000 exits over 100,000 symbols (``--memory-exits`` to change)."""
    exits = exits or (20_000 if quick else 1_000_000)
    symbols = symbols or max(1, exits // 10)
    sample_exits, sample_symbols = max(1, exits // 10), max(1, symbols // 10)
    started = time.perf_counter()
    runs = {s: _fresh(rss_run, s, exits, symbols) for s in SYSTEMS}
    sample = _fresh_pure_python(sample_exits, sample_symbols)
    duration = time.perf_counter() - started
    g = runs["guard"]
    tables, after = g["tables"], g["tables_after_window"]
    nonzero = {k: v for k, v in tables.items() if v}
    left = {k: v for k, v in after.items() if v}
    conditions = (
        f"{exits:,} sequential market sells round-robin over {symbols:,} symbols, "
        "stub exchange (keeps nothing), fresh process per system"
    )
    top = "; ".join(f"{r['where']} {r['kib'] / 1024:.1f} MiB" for r in sample["by_line"][:4])
    top_after = "; ".join(
        f"{r['where']} {r['kib'] / 1024:.1f} MiB" for r in sample["after_window_by_line"][:4]
    )
    rows = [
        {
            "measure": "RSS growth right after the run",
            "conditions": conditions
            + f"; guard run took {g['elapsed_s']:.0f} s ({g['us_per_exit']:.0f} µs/exit)",
            **{s: f"{runs[s]['rss_growth_mib']:.1f} MiB" for s in SYSTEMS},
            "note": f"guard tables: {fmt_calls(nonzero)}; baseline keeps no state; guard broker "
            f"calls per exit: {fmt_calls(g['broker_calls_per_exit'])}",
        },
        {
            "measure": "RSS growth after the 120 s retention window",
            "conditions": "the guard's book.SETTLED_KEEP_SECONDS set to 0, then one more exit "
            "(what lets the book prune), gc.collect()",
            "raw": "n/a",
            "baseline": "n/a (no state)",
            "guard": f"{g['rss_growth_after_window_mib']:.1f} MiB",
            "note": f"guard tables left: {fmt_calls(left) or 'none'} (RSS rarely shrinks: "
            "freed memory stays with the allocator; see the traced rows)",
        },
        {
            "measure": "tracemalloc growth, guard, right after / after the window",
            "conditions": f"{sample_exits:,} exits over {sample_symbols:,} symbols, fresh "
            "process, pure-Python build (tracemalloc files allocations under Python source "
            "lines; compiled modules have none)",
            "raw": "n/a",
            "baseline": "n/a (no state)",
            "guard": f"{sample['traced_growth_kib'] / 1024:.1f} MiB / "
            f"{sample['after_window_traced_growth_kib'] / 1024:.1f} MiB",
            "note": f"{sample['bytes_per_exit']:.0f} B per exit. Largest right after: {top}. "
            f"After the window: {top_after}",
        },
    ]
    data = {"runs": runs, "tracemalloc_sample": sample, "duration_s": round(duration, 1)}
    return {"title": "Memory of the guard's state", "rows": rows, "data": data}


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--only", "memory", *sys.argv[1:]]))
