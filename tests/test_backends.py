"""Durable backends (SQLite, Redis) in one process: leases, journal, lease loss, recovery, CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest
from conftest import FAST, Recorder, wait_until

import nija_guard
from nija_guard._backend import JournalEntry, open_backend
from nija_guard._sqlite import SqliteBackend
from nija_guard.testing import PaperExchange

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def require_redis() -> None:
    if redis_available():
        return
    if os.environ.get("NIJA_GUARD_REQUIRE_REDIS") == "1":
        pytest.fail(
            "Redis at 127.0.0.1:6379 is required (NIJA_GUARD_REQUIRE_REDIS=1) and unreachable"
        )
    pytest.skip("no Redis at 127.0.0.1:6379 (CI makes these tests mandatory)")


@pytest.fixture(params=["sqlite", "redis"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/guard.db"
    else:
        require_redis()
        prefix = f"test-{uuid.uuid4().hex[:12]}:"
        yield f"{REDIS_URL}?prefix={prefix}"
        backend = open_backend(f"{REDIS_URL}?prefix={prefix}")
        client = backend.raw()  # type: ignore[attr-defined]
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        backend.close()


def make(paper: PaperExchange, url: str, recorder: Recorder | None = None, **options: Any) -> Any:
    plugins = [recorder] if recorder is not None else []
    return nija_guard.guard(paper, backend=url, **{**FAST, "plugins": plugins, **options})


# -- the lease protocol -----------------------------------------------------------------
def test_lease_protocol(backend_url: str) -> None:
    backend = open_backend(backend_url)
    assert backend.durable
    first = backend.acquire("acct/BTC/USDT", "exit-a", 30)
    assert first is not None
    assert backend.acquire("acct/BTC/USDT", "exit-b", 30) is None  # held
    assert backend.holder("acct/BTC/USDT").owner == "exit-a"  # type: ignore[union-attr]
    renewed = backend.renew(first, 30)
    assert renewed is not None and renewed.token == first.token
    assert (
        backend.renew(type(first)(first.key, "exit-b", first.token, None), 30) is None
    )  # not the owner
    assert backend.release(first)
    assert not backend.release(first)  # released once
    second = backend.acquire("acct/BTC/USDT", "exit-b", 30)
    assert second is not None and second.token > first.token  # fencing tokens only go up
    assert [lease.owner for lease in backend.leases("acct/")] == ["exit-b"]
    backend.release(second)
    backend.close()


def test_expired_leases_can_be_taken(backend_url: str) -> None:
    backend = open_backend(backend_url)
    stale = backend.acquire("acct/ETH/USDT", "paused-process", 0.05)
    assert stale is not None
    wait_until(lambda: backend.acquire("acct/ETH/USDT", "next-process", 30) is not None)
    assert backend.renew(stale, 30) is None  # the paused one learns it lost it
    backend.close()


def test_journal(backend_url: str) -> None:
    backend = open_backend(backend_url)
    entry = JournalEntry("acct", "BTC/USDT", "e1", "njg1", "intent", "sell", "0.5", updated_at=1.0)
    backend.record(entry)
    backend.record(JournalEntry("acct", "ETH/USDT", "e2", "njg2", "unknown", "sell", "1"))
    backend.record(JournalEntry("other", "BTC/USDT", "e3", "njg3", "intent", "sell", "1"))
    assert [e.exit_id for e in backend.in_flight("acct", "BTC/USDT")] == ["e1"]
    assert sorted(e.exit_id for e in backend.in_flight("acct")) == ["e1", "e2"]
    backend.record(entry.with_state("submitted"))
    assert backend.in_flight("acct", "BTC/USDT")[0].state == "submitted"
    backend.record(entry.with_state("settled"))
    assert [e.exit_id for e in backend.in_flight("acct")] == ["e2"]
    backend.close()


# -- the guard on a durable backend ------------------------------------------------------
def test_exits_hold_and_release_leases_and_journal(backend_url: str, recorder: Recorder) -> None:
    paper = PaperExchange({"apiKey": f"k-{uuid.uuid4().hex}"}, balances={"BTC": 1, "USDT": 0})
    ex = make(paper, backend_url, recorder)
    prefix = ex.nija_guard.account + "/"
    resting = ex.create_limit_sell_order("BTC/USDT", 0.5, 60_000)
    backend = ex.nija_guard.backend
    assert [lease.key for lease in backend.leases(prefix)] == [prefix + "BTC/USDT"]
    [row] = backend.in_flight(ex.nija_guard.account)
    assert (row.state, row.order_id, row.client_order_id) == (
        "submitted",
        resting["id"],
        resting["clientOrderId"],
    )
    paper.set_price("BTC/USDT", 61_000)
    wait_until(lambda: ex.nija_guard.locked_symbols() == [])
    assert backend.leases(prefix) == []
    assert backend.in_flight(ex.nija_guard.account) == []
    ex.create_market_sell_order("BTC/USDT", 0.5)
    assert backend.leases(prefix) == [] and backend.in_flight(ex.nija_guard.account) == []
    ex.nija_guard.close()


def test_another_process_holding_the_lease_refuses_or_waits(backend_url: str) -> None:
    paper = PaperExchange({"apiKey": f"k-{uuid.uuid4().hex}"}, balances={"BTC": 1, "USDT": 0})
    ex = make(paper, backend_url)
    other = open_backend(backend_url)  # what another process sees
    key = ex.nija_guard.account + "/BTC/USDT"
    held = other.acquire(key, "exit-of-another-process", 0.3)
    assert held is not None
    with pytest.raises(nija_guard.ExitInProgress, match="another process"):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    # With on_conflict="wait" it waits for that lease (here: until it expires).
    order = ex.create_market_sell_order(
        "BTC/USDT", 0.5, {"nija_guard": {"on_conflict": "wait", "wait_timeout": 10}}
    )
    assert order["filled"] == pytest.approx(0.5)
    assert "create_order" in paper.calls
    other.close()
    ex.nija_guard.close()


def test_lease_lost_before_submit_sends_nothing(backend_url: str, recorder: Recorder) -> None:
    paper = PaperExchange({"apiKey": f"k-{uuid.uuid4().hex}"}, balances={"BTC": 1, "USDT": 0})
    other = open_backend(backend_url)

    class StealAfterRefresh:
        """Another process takes the lease while this one is between refresh and submit."""

        @nija_guard.hookimpl
        def nija_guard_balance_refreshed(self, exit: Any) -> None:
            key = f"{exit.account}/{exit.symbol}"
            lease = other.holder(key)
            assert lease is not None
            other.release(lease)
            assert other.acquire(key, "thief", 30) is not None

    ex = nija_guard.guard(
        paper, backend=backend_url, **{**FAST, "plugins": [recorder, StealAfterRefresh()]}
    )
    with pytest.raises(nija_guard.ExitInProgress, match="lease"):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert "create_order" not in paper.calls
    assert recorder.named("lease_lost")[0]["key"].endswith("/BTC/USDT")
    assert ex.nija_guard.locked_symbols() == []
    other.close()
    ex.nija_guard.close()


def test_the_keeper_renews_a_resting_exits_lease(backend_url: str) -> None:
    paper = PaperExchange({"apiKey": f"k-{uuid.uuid4().hex}"}, balances={"BTC": 1, "USDT": 0})
    ex = make(paper, backend_url, lease_ttl=0.6)
    ex.create_limit_sell_order("BTC/USDT", 0.5, 90_000)
    key = ex.nija_guard.account + "/BTC/USDT"
    first = ex.nija_guard.backend.holder(key)
    assert first is not None and first.expires_at is not None
    wait_until(
        lambda: (
            (h := ex.nija_guard.backend.holder(key)) is not None
            and h.expires_at > first.expires_at + 0.1
        )
    )
    assert ex.nija_guard.backend.holder(key).token == first.token  # type: ignore[union-attr]
    ex.nija_guard.close()


def test_recovery_of_an_exit_a_dead_process_left(backend_url: str, recorder: Recorder) -> None:
    """A process died between submit and reply: its journal row and expired lease remain."""
    api_key = f"k-{uuid.uuid4().hex}"
    paper = PaperExchange({"apiKey": api_key}, balances={"BTC": 1, "USDT": 0})
    ex = make(paper, backend_url, recorder)
    account = ex.nija_guard.account
    dead = open_backend(backend_url)
    key = f"{account}/BTC/USDT"
    assert dead.acquire(key, "dead-exit", 0.05) is not None
    placed = paper.venue.place(
        "BTC/USDT", "sell", "market", "0.4", client_order_id="njg" + "d" * 24
    )
    dead.record(
        JournalEntry(
            account,
            "BTC/USDT",
            "dead-exit",
            placed.client_order_id,
            "intent",
            "sell",
            "0.4",
            updated_at=paper.venue.now_ms() / 1000,
            key=key,
        )
    )
    wait_until(lambda: dead.holder(key) is None)  # its lease expired
    order = ex.create_market_sell_order("BTC/USDT", 1)  # the next exit recovers it first
    assert order["amount"] == pytest.approx(0.6)  # the 0.4 the dead process sold is accounted for
    assert dead.in_flight(account) == []
    assert any(s["exit"].exit_id == "dead-exit" for s in recorder.named("order_settled"))
    dead.close()
    ex.nija_guard.close()


def test_recovery_of_a_resting_exit_holds_the_lock(backend_url: str) -> None:
    paper = PaperExchange({"apiKey": f"k-{uuid.uuid4().hex}"}, balances={"BTC": 1, "USDT": 0})
    ex = make(paper, backend_url)
    account = ex.nija_guard.account
    key = f"{account}/BTC/USDT"
    dead = open_backend(backend_url)
    assert dead.acquire(key, "dead-exit", 0.05) is not None
    placed = paper.venue.place(
        "BTC/USDT", "sell", "limit", "0.5", "90000", client_order_id="njg" + "e" * 24
    )
    dead.record(
        JournalEntry(
            account,
            "BTC/USDT",
            "dead-exit",
            placed.client_order_id,
            "unknown",
            "sell",
            "0.5",
            updated_at=1.0,
            key=key,
        )
    )
    wait_until(lambda: dead.holder(key) is None)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    [row] = dead.in_flight(account)
    assert row.state == "submitted" and row.order_id == placed.id
    report = ex.nija_guard.recover()  # nothing to redo: it is tracked
    assert report == [] or all("busy" in r["result"] for r in report)
    dead.close()
    ex.nija_guard.close()


def test_a_journaled_exit_that_never_reached_the_exchange_is_closed(backend_url: str) -> None:
    paper = PaperExchange({"apiKey": f"k-{uuid.uuid4().hex}"}, balances={"BTC": 1, "USDT": 0})
    ex = make(paper, backend_url)
    account = ex.nija_guard.account
    dead = open_backend(backend_url)
    dead.record(
        JournalEntry(
            account, "BTC/USDT", "ghost", "njg" + "f" * 24, "intent", "sell", "1", updated_at=1.0
        )
    )
    report = ex.nija_guard.recover("BTC/USDT")
    assert report == [
        {
            "exit_id": "ghost",
            "symbol": "BTC/USDT",
            "client_order_id": "njg" + "f" * 24,
            "result": "settled",
        }
    ]
    assert dead.in_flight(account) == []
    assert ex.create_market_sell_order("BTC/USDT", 1)["filled"] == pytest.approx(1)
    dead.close()
    ex.nija_guard.close()


# -- failing closed, or degrading loudly -----------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_redis_fails_closed() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    paper = PaperExchange({"apiKey": "k-down"}, balances={"BTC": 1})
    ex = nija_guard.guard(paper, backend=url, backend_timeout=0.2, **FAST)
    with pytest.raises(nija_guard.BackendUnavailable):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert "create_order" not in paper.calls
    assert ex.nija_guard.locked_symbols() == []
    ex.nija_guard.close()


def test_degraded_mode_is_opt_in_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    paper = PaperExchange({"apiKey": "k-degraded"}, balances={"BTC": 1})
    ex = nija_guard.guard(
        paper, backend=url, backend_timeout=0.2, on_backend_failure="local", **FAST
    )
    order = ex.create_market_sell_order("BTC/USDT", 0.5)
    assert order["filled"] == pytest.approx(0.5)
    assert any("DEGRADED" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert ex.nija_guard.status()["counters"]["degraded"] > 0
    ex.nija_guard.close()


def test_an_unusable_sqlite_path_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(nija_guard.BackendUnavailable):
        nija_guard.guard(
            PaperExchange(), backend=f"sqlite:///{tmp_path}/not-a-dir/guard.db", **FAST
        )
    with pytest.raises(ValueError, match="absolute"):
        nija_guard.guard(PaperExchange(), backend="sqlite:///relative.db", **FAST)
    with pytest.raises(ValueError, match="on_backend_failure"):
        nija_guard.guard(PaperExchange(), on_backend_failure="ignore", **FAST)


def test_sqlite_connections_are_not_carried_across_fork(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "fork.db"))
    backend.acquire("acct/X", "parent", 30)
    parent_db = backend._connection()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child_db = backend._connection()
            ok = child_db is not parent_db and backend.acquire("acct/Y", "child", 30) is not None
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert backend.holder("acct/Y") is not None
    backend.close()


# -- the CLI ------------------------------------------------------------------------------
def test_cli_status_and_reconcile(tmp_path: Path) -> None:
    from fakes.binance_spot import FakeBinance

    url = f"sqlite:///{tmp_path}/cli.db"
    with FakeBinance(api_key=f"cli-{uuid.uuid4().hex}", balances={"BTC": 1, "USDT": 0}) as fake:
        client = fake.client()
        ex = nija_guard.guard(client, backend=url, **FAST)
        account = ex.nija_guard.account
        placed = fake.venue.place(
            "BTC/USDT", "sell", "market", "0.3", client_order_id="njg" + "a" * 24
        )
        dead = open_backend(url)
        dead.record(
            JournalEntry(
                account,
                "BTC/USDT",
                "crashed",
                placed.client_order_id,
                "unknown",
                "sell",
                "0.3",
                updated_at=1.0,
            )
        )
        status = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "nija_guard._cli", "status", "--backend", url, "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        shown = json.loads(status.stdout)
        assert [e["exit_id"] for e in shown["exits_in_flight"]] == ["crashed"]
        assert [e["exit_id"] for e in shown["unknown"]] == ["crashed"]
        config = tmp_path / "ccxt.json"
        config.write_text(json.dumps({**fake.client_config(), "urls": client.urls}))
        done = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "nija_guard._cli",
                "reconcile",
                "--backend",
                url,
                "--exchange",
                "binance",
                "--config",
                str(config),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD": "1"},
        )
        assert json.loads(done.stdout)[0]["result"] == "settled"
        assert dead.in_flight(account) == []
        assert "secret" not in done.stdout and fake.secret not in done.stdout
        dead.close()
        ex.nija_guard.close()


def test_cli_refuses_the_memory_backend() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nija_guard._cli", "status", "--backend", "memory"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "memory" in done.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_ambiguous_acquire_is_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    require_redis()
    prefix = f"amb-{uuid.uuid4().hex[:8]}:"
    backend = open_backend(f"{REDIS_URL}?prefix={prefix}")
    script = backend._acquire  # type: ignore[attr-defined]

    def reply_lost(*args: Any, **kwargs: Any) -> Any:
        script(*args, **kwargs)  # the script ran...
        import redis

        raise redis.ConnectionError("...but its reply was lost")

    monkeypatch.setattr(backend, "_acquire", reply_lost)
    lease = backend.acquire("acct/BTC/USDT", "me", 30)
    assert lease is not None and lease.owner == "me"  # resolved by reading the key back
    monkeypatch.undo()
    assert backend.acquire("acct/BTC/USDT", "someone-else", 30) is None
    backend.release(lease)
    backend.close()


def test_redis_errors_become_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    require_redis()
    backend = open_backend(f"{REDIS_URL}?prefix=err-{uuid.uuid4().hex[:8]}:")
    import redis

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise redis.TimeoutError("slow")

    monkeypatch.setattr(backend._redis, "get", broken)  # type: ignore[attr-defined]
    monkeypatch.setattr(backend, "_acquire", broken)
    with pytest.raises(nija_guard.BackendUnavailable):
        backend.acquire("acct/BTC/USDT", "me", 30)
    backend.close()
    assert isinstance(nija_guard.BackendUnavailable("x"), ccxt.ExchangeNotAvailable)


def test_redis_forgets_a_lease_an_unanswered_acquire_took_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis stalls: the acquire and its read-back time out, the script runs afterwards."""
    require_redis()
    import redis

    backend = open_backend(f"{REDIS_URL}?prefix=late-{uuid.uuid4().hex[:8]}:")
    script = backend._acquire  # type: ignore[attr-defined]
    late: list[Callable[[], Any]] = []

    def stalled(*args: Any, **kwargs: Any) -> Any:
        late.append(lambda: script(*args, **kwargs))  # runs when Redis resumes
        raise redis.TimeoutError("stalled")

    def no_answer(*args: Any, **kwargs: Any) -> Any:
        raise redis.TimeoutError("stalled")

    monkeypatch.setattr(backend, "_acquire", stalled)
    monkeypatch.setattr(backend._redis, "get", no_answer)  # type: ignore[attr-defined]
    with pytest.raises(nija_guard.BackendUnavailable):
        backend.acquire("acct/BTC/USDT", "gave-up", 30)
    monkeypatch.undo()
    late[0]()  # Redis resumes and runs the stalled script: a lease nobody will use
    assert backend.holder("acct/BTC/USDT").owner == "gave-up"  # type: ignore[union-attr]

    lease = backend.acquire("acct/BTC/USDT", "next-exit", 30)
    assert lease is not None and lease.owner == "next-exit"
    # Once the orphan is gone the doubt is dropped: nothing else of "gave-up" is touched.
    assert backend._doubtful == {}  # type: ignore[attr-defined]
    assert backend.release(lease)
    backend.close()


def test_redis_release_whose_reply_was_lost_is_made_sure_of(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_redis()
    import redis

    backend = open_backend(f"{REDIS_URL}?prefix=rel-{uuid.uuid4().hex[:8]}:")
    first = backend.acquire("acct/BTC/USDT", "exit-1", 30)
    assert first is not None

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("reset")

    monkeypatch.setattr(backend, "_release", lost)
    with pytest.raises(nija_guard.BackendUnavailable):
        backend.release(first)
    monkeypatch.undo()
    assert backend.holder("acct/BTC/USDT") is not None  # the release never ran
    other = backend.acquire("acct/ETH/USDT", "exit-2", 30)  # any later lease call...
    assert backend.holder("acct/BTC/USDT") is None  # ...releases it
    assert other is not None and backend.release(other)

    # The owner takes the key again after a lost release: its new lease survives
    # every later lease call (the doubt was about the old token only).
    again = backend.acquire("acct/BTC/USDT", "exit-1", 30)
    assert again is not None
    monkeypatch.setattr(backend, "_release", lost)
    with pytest.raises(nija_guard.BackendUnavailable):
        backend.release(again)
    monkeypatch.undo()
    newer = backend.acquire("acct/BTC/USDT", "exit-1", 30)
    assert newer is not None and newer.token > again.token
    probe = backend.acquire("acct/ETH/USDT", "exit-3", 30)
    assert probe is not None and backend.release(probe)
    holder = backend.holder("acct/BTC/USDT")
    assert holder is not None and (holder.owner, holder.token) == ("exit-1", newer.token)
    assert backend.release(newer)
    backend.close()
