"""Run every benchmark: raw client | seed-style baseline | nija-guard.

    python benchmarks/run.py                   # everything (the memory run takes minutes)
    python benchmarks/run.py --quick           # a short smoke run of everything
    python benchmarks/run.py --only burst      # one (or several: --only a,b --only c)
    python benchmarks/run.py --memory-exits 200000   # a smaller memory run

Each benchmark writes ``benchmarks/results/<name>.json``; then
``results/all.json`` and ``results/summary.md`` are rebuilt from every result
file present (so ``--only`` refreshes one section and keeps the others, each
labelled with when and how it was measured), and the summary is printed.
Numbers are measurements, never assertions: nothing here fails on a slow run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import RESULTS, machine

HERE = Path(__file__).resolve().parent


def _registry() -> dict[str, tuple[str, Callable[..., dict[str, Any]]]]:
    """name -> (row number in the summary, benchmark function); imported lazily."""
    import bench_async
    import bench_backends
    import bench_build
    import bench_contention
    import bench_core
    import bench_instructions
    import bench_memory
    import bench_otel

    return {
        "exit_sync": ("1", bench_core.exit_sync),
        "exit_async": ("2", bench_async.exit_async),
        "builds": ("1+2", bench_build.builds),
        "instructions": ("1", bench_instructions.instructions),
        "passthrough": ("3", bench_core.passthrough),
        "burst": ("4", bench_core.burst),
        "contention": ("5", bench_contention.contention),
        "memory": ("6", bench_memory.memory),
        "backends": ("7", bench_backends.backends),
        "async_concurrency": ("+", bench_async.async_concurrency),
        "otel": ("+", bench_otel.otel),
    }


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _summary(results: dict[str, dict[str, Any]], numbers: dict[str, str]) -> str:
    now = machine()
    lines = [
        "# nija-guard benchmarks",
        "",
        f"Summary written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by "
        "`python benchmarks/run.py`. Machine: Python "
        f"{now['python']} ({now['implementation']}), {now['platform']}, {now['cpus']} CPUs; "
        f"nija-guard {now['nija_guard']} ({now['nija_guard_build']} build), ccxt {now['ccxt']}, "
        f"wrapt {now['wrapt']}.",
        "",
        "Every row compares the raw client, the seed-style baseline (`benchmarks/seed_baseline.py`:"
        " one global lock around every sell, a fetch_balance before it, clamp to the free balance)"
        " and nija-guard on the same exchange. Timings are medians; load average is the machine's"
        " at the start of each benchmark (a loaded machine makes every number noisier).",
        "",
        "| benchmark | measured at (UTC) | mode | took | load average (1/5/15 min) |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        load = result["machine"].get("load_average_1_5_15") or []
        lines.append(
            f"| {name} | {result['started_at']} | {'quick' if result['quick'] else 'full'} "
            f"| {result['duration_s']:.1f} s | {' / '.join(str(x) for x in load)} |"
        )
    lines += [
        "",
        "| # | measure | conditions | raw client | seed-style baseline | nija-guard | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        mode = " (quick run)" if result["quick"] else ""
        for row in result["rows"]:
            cells = [
                numbers[name],
                row["measure"],
                row["conditions"] + mode,
                row.get("raw", ""),
                row.get("baseline", ""),
                row.get("guard", ""),
                row.get("note", ""),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only these (a,b,...)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--memory-exits", type=int, default=None, help="exits of the memory run (1,000,000)"
    )
    parser.add_argument(
        "--memory-symbols", type=int, default=None, help="symbols of the memory run (exits / 10)"
    )
    args = parser.parse_args(argv)
    registry = _registry()
    if args.list:
        for name, (number, fn) in registry.items():
            doc = (fn.__doc__ or sys.modules[fn.__module__].__doc__ or "").strip()
            print(f"{number:>3} {name:<18} {doc.splitlines()[0] if doc else ''}")
        return 0
    selected = [n.strip() for spec in args.only for n in spec.split(",") if n.strip()]
    unknown = sorted(set(selected) - set(registry))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(registry)}")
    names = [n for n in registry if not selected or n in selected]
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    print(
        f"python {info['python']} on {info['platform']}, {info['cpus']} CPUs, "
        f"load average {info['load_average_1_5_15']}",
        file=sys.stderr,
    )
    for name in names:
        _, fn = registry[name]
        kwargs: dict[str, Any] = {"quick": args.quick}
        if name == "memory":
            kwargs.update(exits=args.memory_exits, symbols=args.memory_symbols)
        print(f"[{name}] running{' (quick)' if args.quick else ''}...", file=sys.stderr, flush=True)
        started_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        load_before = machine()
        start = time.perf_counter()
        result = fn(**kwargs)
        duration = time.perf_counter() - start
        record = {
            "name": name,
            "quick": args.quick,
            "started_at": started_at,
            "duration_s": round(duration, 1),
            "machine": load_before,
            **result,
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"[{name}] {duration:.1f} s", file=sys.stderr, flush=True)
    results = {}
    for name in registry:
        path = RESULTS / f"{name}.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if isinstance(stored, dict) and "rows" in stored:  # older formats are left out
                results[name] = stored
    (RESULTS / "all.json").write_text(
        json.dumps({"machine": info, "benchmarks": results}, indent=2, default=str) + "\n"
    )
    summary = _summary(results, {n: number for n, (number, _) in registry.items()})
    (RESULTS / "summary.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
