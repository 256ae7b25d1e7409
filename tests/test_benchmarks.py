"""The benchmark suite's own plumbing (the numbers are measured, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_every_benchmark_is_listed() -> None:
    listed = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(BENCHMARKS / "run.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    names = {line.split()[1] for line in listed.splitlines() if line.strip()}
    assert {"exit_sync", "exit_async", "builds", "instructions", "passthrough", "burst"} <= names
    assert {"contention", "memory", "backends", "async_concurrency", "otel"} <= names


def test_instruction_counts_are_read_per_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_instructions

    # What callgrind writes: one file per --dump, named in its trigger line; the file
    # written at exit has no dump name and must not count.
    (tmp_path / "callgrind.out.1").write_text(
        "desc: Timerange: Basic block 0 - 140554\ndesc: Trigger: dump guard\n"
        "summary: 0\nfn=(1) main\n5 12\ntotals: 359206000\n"
    )
    (tmp_path / "callgrind.out.2").write_text(
        "desc: Trigger: dump fetch_balance\nsummary: 0\ntotals: 9177000\n"
    )
    (tmp_path / "callgrind.out").write_text(
        "desc: Trigger: Program termination\nsummary: 0\ntotals: 0\n"
    )
    assert bench_instructions._totals(tmp_path) == {
        "guard": 359206000,
        "fetch_balance": 9177000,
    }
