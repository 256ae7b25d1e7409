"""``nija-guard demo``: the guarded bot never oversells, the unguarded one always does.

Every assertion holds on any interleaving of the bot's threads: each round's
first position has its take-profit filled before the stop fires, and every
worker fires that stop at once (a barrier), so the unguarded bot sells it a
second time whatever the timing; the guarded numbers are the guard's guarantees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nija_guard._cli import main
from nija_guard._demo import DemoResult, format_table, run_demo

SMALL = ["--threads", "4", "--symbols", "10", "--seconds", "0.2"]


def _by_mode(results: list[DemoResult]) -> dict[str, DemoResult]:
    return {r.mode: r for r in results}


def _assert_safe(guarded: dict[str, object]) -> None:
    assert guarded["double_sells"] == 0
    assert guarded["oversold"] == 0
    assert guarded["unknown_left"] == 0
    assert guarded["unsold"] == 0  # every coin the bot owned was sold, exactly once


def test_guarded_run_never_oversells_and_the_unguarded_run_does() -> None:
    results = _by_mode(run_demo(threads=4, symbols=10, seconds=0.3, seed=7, show_progress=False))
    unguarded, guarded = results["unguarded"], results["guarded"]
    for result in (unguarded, guarded):
        assert result.rounds >= 1 and result.positions == 10 * result.rounds
        # Round one always has a take-profit filled in full and one filled in part
        # before the stop fires: at least two stop-loss vs take-profit races.
        assert result.races >= 2
    # The lined-up race of every round: oversold by at least one coin per round.
    assert unguarded.double_sells >= unguarded.rounds
    assert unguarded.oversold >= unguarded.rounds
    _assert_safe(guarded.summary())
    assert guarded.exits_completed > 0 and guarded.latencies_ms


def test_cli_prints_json_of_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *SMALL, "--seed", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"unguarded", "guarded"}
    for mode in data.values():
        assert {"double_sells", "oversold", "races", "unknown_left", "p50_ms", "p99_ms"} <= set(
            mode
        )
    _assert_safe(data["guarded"])
    assert data["unguarded"]["oversold"] > 0


def test_cli_prints_progress_table_and_row_notes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "guarded    [##############################] 100%" in out
    table = out[out.index("unguarded       guarded") :]
    for label in ("double-sells", "oversold quantity", "stop-loss vs take-profit races"):
        assert table.count(label) == 2  # the row, and its one-line explanation
    assert "p99 exit latency (ms)" in table


def test_format_table_lines_up_the_modes() -> None:
    table = format_table([DemoResult("unguarded", double_sells=3), DemoResult("guarded")], False)
    rows = table.splitlines()
    assert rows[0].endswith("unguarded       guarded")
    assert len({len(row) for row in rows}) == 1
    assert "double-sells" in rows[2] and rows[2].split()[-2:] == ["3", "0"]


def test_cli_sqlite_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert url.startswith("sqlite:////")
    assert main(["demo", *SMALL, "--backend", url, "--json"]) == 0
    _assert_safe(json.loads(capsys.readouterr().out)["guarded"])
    assert (tmp_path / "demo.db").exists()  # the guard really used it


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--threads", "0"], "--threads must be at least 1"),
        (["--symbols", "0"], "--symbols must be at least 1"),
        (["--seconds", "0"], "--seconds must be a positive number"),
        (["--ghost-rate", "1.5"], "--ghost-rate must be in [0, 1)"),
        (["--backend", "nope"], "unknown backend 'nope'"),
        (["--backend", "sqlite:///relative.db"], "absolute path"),
        (["--threads", "many"], "invalid int value"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *option])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: nija-guard demo" in err


def test_bad_backend_from_the_shell_has_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nija_guard._cli", "demo", "--backend", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown backend 'nope'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """``nija-guard demo | head -1``: the pipe closes before the table is written."""
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-u", "-m", "nija_guard._cli", "demo", *SMALL],
        stdout=subprocess.PIPE,  # unbuffered (-u): the header is out before the run starts
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `head -1`: the reader is gone before the table
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 1)
    assert first.startswith(b"nija-guard demo:")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
