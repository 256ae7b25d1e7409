"""What every benchmark shares: paper exchanges, timers, the three systems compared.

The three systems of every row: the raw client, the seed-style baseline
(:mod:`seed_baseline`) and nija-guard, all in front of the same kind of paper
exchange. Numbers are measurements, never assertions.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD", "1")

from seed_baseline import AsyncSeedGuard, SeedGuard

import nija_guard
from nija_guard.testing import AsyncPaperExchange, PaperExchange
from nija_guard.testing._venue import Market

RESULTS = Path(__file__).parent / "results"
SYSTEMS = ("raw", "baseline", "guard")


def symbol_names(count: int) -> list[str]:
    return [f"C{i}/USDT" for i in range(count)]


def paper(
    symbols: int = 1,
    *,
    holdings: object = 10**9,
    latency: float = 0.0,
    is_async: bool = False,
) -> Any:
    """A paper exchange with ``symbols`` markets at price 100, holding ``holdings`` of each."""
    markets = {
        s: Market(symbol=s, price=Decimal(100), min_cost=Decimal(1)) for s in symbol_names(symbols)
    }
    balances: dict[str, object] = {m.base: holdings for m in markets.values()}
    balances["USDT"] = 10**9
    cls = AsyncPaperExchange if is_async else PaperExchange
    exchange = cls(markets=markets, balances=balances)
    exchange.latency = latency
    return exchange


def wrap(system: str, client: Any, **guard_options: Any) -> Any:
    """``client`` as ``system`` sees it: itself, behind the seed baseline, or guarded."""
    if system == "raw":
        return client
    if system == "baseline":
        return (
            AsyncSeedGuard(client) if isinstance(client, AsyncPaperExchange) else SeedGuard(client)
        )
    if system == "guard":
        return nija_guard.guard(client, load_entrypoints=False, **guard_options)
    raise ValueError(f"unknown system {system!r}")


def stub_clients(is_async: bool = False) -> dict[str, Any]:
    """The three systems, each on its own zero-cost stub exchange (one symbol, S0/USDT),
    and ``fetch_balance``: a fourth stub's balance call, to subtract.

    The stub answers from a few dicts, so no venue code runs between the guard's
    steps: what remains is the guard's own CPU.
    """
    from stub_exchange import AsyncStubExchange, StubExchange

    from nija_guard import _guard

    cls = AsyncStubExchange if is_async else StubExchange
    clients: dict[str, Any] = {
        "raw": cls(1, lazy_balance=False),
        "baseline": (AsyncSeedGuard if is_async else SeedGuard)(cls(1, lazy_balance=False)),
        # Not a ccxt.Exchange instance: name the adapter guard() picks for ccxt clients.
        "guard": nija_guard.guard(
            cls(1, lazy_balance=False), load_entrypoints=False, adapter=_guard._ADAPTER
        ),
    }
    clients["fetch_balance"] = cls(1, lazy_balance=False).fetch_balance
    return clients


def close(system: str, client: Any) -> None:
    if system == "guard":
        client.nija_guard.close()


async def aclose(system: str, client: Any) -> None:
    if system == "guard":
        await client.nija_guard.aclose()


def _summary(samples: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return {
        "median": round(statistics.median(samples), 2),
        "p25": round(quartiles[0], 2),
        "p75": round(quartiles[2], 2),
        "samples": len(samples),
    }


def interleaved_us(
    calls: Mapping[str, Callable[[], Any]], runs: int, blocks: int = 10
) -> dict[str, dict[str, float]]:
    """Time each call ``runs`` times, in alternating blocks (drift hits all alike); µs."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_block = max(1, runs // blocks)
    clock = time.perf_counter_ns
    for _ in range(blocks):
        for name, call in calls.items():
            out = samples[name]
            for _ in range(per_block):
                start = clock()
                call()
                out.append((clock() - start) / 1000)
    return {name: _summary(values) for name, values in samples.items()}


async def ainterleaved_us(
    calls: Mapping[str, Callable[[], Awaitable[Any]]], runs: int, blocks: int = 10
) -> dict[str, dict[str, float]]:
    """:func:`interleaved_us` for coroutines, awaited one at a time."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_block = max(1, runs // blocks)
    clock = time.perf_counter_ns
    for _ in range(blocks):
        for name, call in calls.items():
            out = samples[name]
            for _ in range(per_block):
                start = clock()
                await call()
                out.append((clock() - start) / 1000)
    return {name: _summary(values) for name, values in samples.items()}


def per_exit(counts: Mapping[str, int], exits: int) -> dict[str, float]:
    """Broker calls by method, per exit."""
    return {k: round(v / exits, 3) for k, v in sorted(counts.items()) if v}


def fmt_calls(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items()))


def machine() -> dict[str, Any]:
    import ccxt
    import wrapt

    from nija_guard._build import build_name

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in load] if load else None,
        "nija_guard": nija_guard.__version__,
        "nija_guard_build": build_name(),
        "ccxt": ccxt.__version__,
        "wrapt": getattr(wrapt, "__version__", "?"),
    }
