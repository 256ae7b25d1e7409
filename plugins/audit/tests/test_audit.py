from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import ccxt
import pytest

import nija_guard
from nija_guard.testing import PaperExchange
from nija_guard_audit import ENV_PATH, AuditLog
from pytest_nija_guard import FAST_OPTIONS


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def guard(paper: PaperExchange, audit: AuditLog, **options: Any) -> Any:
    return nija_guard.guard(paper, plugins=[audit], **{**FAST_OPTIONS, **options})


def test_every_decision_of_an_exit_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "exits.log"
    audit = AuditLog(path)
    paper = PaperExchange(balances={"BTC": 1, "USDT": 0})
    ex = guard(paper, audit)
    ex.create_market_sell_order("BTC/USDT", 2)  # clamped, settled, flushed
    with pytest.raises(nija_guard.NothingToSell):
        ex.create_market_sell_order("BTC/USDT", 1)
    events = [e["event"] for e in entries(path)]
    assert events == ["requested", "clamped", "submitted", "settled", "flushed", "requested"]
    settled = entries(path)[3]
    assert settled["outcome"] == "filled" and settled["filled"] == 1.0
    assert settled["client_order_id"].startswith("njg") and settled["order_id"]
    clamp = entries(path)[1]
    assert (clamp["clamped_from"], clamp["clamped_to"], clamp["clamp_reason"]) == (2, 1, "holdings")
    ex.nija_guard.close()


def test_blocked_unknown_and_vetoed_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "exits.log"

    class NoEth:
        @nija_guard.hookimpl
        def nija_guard_exit_veto(self, exit: Any) -> str | None:
            return "no ETH today" if exit.symbol == "ETH/USDT" else None

    paper = PaperExchange(balances={"BTC": 1, "ETH": 1, "USDT": 0})
    ex = nija_guard.guard(
        paper, plugins=[AuditLog(path), NoEth()], **{**FAST_OPTIONS, "reconcile_timeout": 0.05}
    )
    resting = ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("ETH/USDT", 0.5)
    ex.cancel_order(resting["id"], "BTC/USDT")
    paper.inject("create_order", ccxt.RequestTimeout("lost"), after=True)
    for method in ("fetch_order", "fetch_open_orders", "fetch_my_trades"):
        paper.inject(method, ccxt.ExchangeNotAvailable("down"), times=1000)
    with pytest.raises(nija_guard.OutcomeUnknown):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    by_event = {e["event"]: e for e in entries(path)}
    assert by_event["blocked"]["block_reason"] == "in_progress"
    assert by_event["blocked"]["holder_exit_id"]
    assert by_event["vetoed"]["veto_reason"] == "no ETH today"
    assert by_event["unknown"]["error"] == "RequestTimeout"
    ex.nija_guard.close()


def test_file_mode_is_0600_even_for_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "exits.log"
    path.write_text("")
    path.chmod(0o644)
    audit = AuditLog(path)
    audit.write("test", None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    audit.close()


def test_append_only_across_instances_and_fsync_per_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "exits.log"
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    first = AuditLog(path)
    first.write("one", None)
    first.close()
    second = AuditLog(path)
    second.write("two", None)
    second.write("three", None)
    assert [e["event"] for e in entries(path)] == ["one", "two", "three"]
    assert len(synced) == 3
    second.close()


def test_size_rotation_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "exits.log"
    audit = AuditLog(path, max_bytes=1024, backups=2, fsync=False)
    for i in range(100):
        audit.write("tick", None, n=i, padding="x" * 40)
    audit.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["exits.log", "exits.log.1", "exits.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 1024
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    newest = entries(path)[-1]["n"]
    assert newest == 99
    numbers = [e["n"] for name in reversed(files) for e in entries(tmp_path / name)]
    assert numbers == sorted(numbers)  # nothing reordered, the oldest rotated away


def test_no_secrets_ever_reach_the_log(tmp_path: Path) -> None:
    path = tmp_path / "exits.log"
    paper = PaperExchange(
        {"apiKey": "KEY-SENTINEL", "secret": "SECRET-SENTINEL"}, balances={"BTC": 1}
    )
    ex = guard(paper, AuditLog(path))
    ex.create_market_sell_order(
        "BTC/USDT", 0.5, {"password": "PASSWORD-SENTINEL", "token": "TOKEN-SENTINEL"}
    )
    text = path.read_text()
    assert "SENTINEL" not in text  # neither the API key, the secret, nor any param
    assert entries(path)[0]["account"].startswith("paper:")  # a digest of the key names the account
    ex.nija_guard.close()


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "exits.log"
    audit = AuditLog(path, fsync=False)
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(200):
            audit.write("tick", None, writer=n, i=i, padding="y" * 100)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    lines = entries(path)  # every line parses
    assert len(lines) == 1600
    audit.close()


def test_inert_without_a_path_and_configured_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_PATH, raising=False)
    inert = AuditLog.from_env()
    inert.write("nothing", None)
    assert inert.path is None
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "env.log"))
    configured = AuditLog.from_env()
    configured.write("something", None)
    assert entries(tmp_path / "env.log")[0]["event"] == "something"
    configured.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        AuditLog("x", max_bytes=10)
    with pytest.raises(ValueError, match="backups"):
        AuditLog("x", backups=-1)


def test_a_failing_disk_never_breaks_the_exit(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a directory should be")
    paper = PaperExchange(balances={"BTC": 1})
    ex = guard(paper, AuditLog(blocked / "exits.log"))
    order = ex.create_market_sell_order("BTC/USDT", 0.5)
    assert order["status"] == "closed"
    assert ex.nija_guard.status()["hook_errors"] > 0
    ex.nija_guard.close()


def test_registered_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    assert "nija_guard_audit:plugin" in [ep.value for ep in entry_points(group="nija_guard")]
