"""Real OS processes sharing one account through a durable backend (SQLite, Redis).

The test process hosts the exchange: a FakeBinance (loopback HTTP, a thread)
whose venue holds the account. Every bot is a separate Python process
(tests/workers/bot.py) with a real ccxt.binance pointed at the fake, the same
API key and secret (so the same account, so the same lease keys), wrapped by
nija_guard.guard(backend=URL). Bots report JSON lines on stdout and take
commands on stdin; a bot can pause inside a hook (it prints PAUSED and blocks
on stdin) so races are lined up, never slept on. Every wait is bounded: a
stuck process fails its test, and every process is killed at teardown.

Redis tests use the shared server at 127.0.0.1:6379 (a unique key prefix per
test) or, for fault injection, their own redis-server on a free port. Without
redis-server or a reachable Redis they skip, unless NIJA_GUARD_REQUIRE_REDIS=1
(CI), which turns every such skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes.binance_spot import FakeBinance

import nija_guard
from nija_guard._backend import Backend, open_backend

ROOT = Path(__file__).resolve().parent.parent
BOT = Path("tests") / "workers" / "bot.py"
LOCKER = Path("tests") / "workers" / "sqlite_locker.py"
ORDER = "/api/v3/order"
WAIT = 15.0  # the bound on any one condition; a healthy run needs a fraction of it
REQUIRE_REDIS = os.environ.get("NIJA_GUARD_REQUIRE_REDIS") == "1"
SHARED_REDIS = ("127.0.0.1", 6379)
SYMBOLS = (
    "BTC/USDT",
    "ETH/USDT",
    "SOL/USDT",
    "ADA/USDT",
    "XRP/USDT",
    "DOT/USDT",
    "LTC/USDT",
    "LINK/USDT",
)
LINED_UP = ("AVAX/USDT", "ATOM/USDT")  # sold by every bot at once, each paused after its refresh


# -- Redis availability: skip, or fail when CI requires Redis ---------------------------
def redis_unavailable(reason: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(f"{reason}; NIJA_GUARD_REQUIRE_REDIS=1, so Redis tests may not skip")
    pytest.skip(f"{reason} (set NIJA_GUARD_REQUIRE_REDIS=1 to make this a failure)")


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        redis_unavailable("redis-server is not installed (not on PATH)")
    try:
        import redis  # noqa: F401
    except ImportError:
        redis_unavailable("redis-py is not installed (pip install 'nija-guard[redis]')")


def require_shared_redis() -> None:
    require_redis_server()
    import redis

    client = redis.Redis(*SHARED_REDIS, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        redis_unavailable(
            f"no Redis at {SHARED_REDIS[0]}:{SHARED_REDIS[1]} ({type(exc).__name__}: {exc})"
        )
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy; fail after ``timeout`` (a bound, not an ordering)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# -- worker processes --------------------------------------------------------------------
class Worker:
    """One bot process: JSON commands in, JSON events out, stderr kept."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        env = {**os.environ, "NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(  # noqa: S603 (the test's own argv)
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._taken: set[int] = set()
        self._cond = threading.Condition()
        self._eof = False
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip("\n")}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.stderr.append(line.rstrip("\n"))

    def send(self, **command: Any) -> None:
        self.line(json.dumps(command))

    def line(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def expect(
        self, event: str | tuple[str, ...], timeout: float = WAIT, **match: Any
    ) -> dict[str, Any]:
        """The next not yet consumed event named ``event`` whose fields match ``match``."""
        names = (event,) if isinstance(event, str) else event
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, seen in enumerate(self.events):
                    if (
                        index not in self._taken
                        and seen.get("event") in names
                        and all(seen.get(k) == v for k, v in match.items())
                    ):
                        self._taken.add(index)
                        return seen
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "exited" if self._eof else f"sent nothing matching in {timeout}s"
                    raise AssertionError(
                        f"worker {self.name} {why}, waiting for {names} {match}\n"
                        f"events: {self.events[-10:]}\nstderr:\n" + "\n".join(self.stderr[-30:])
                    )
                self._cond.wait(min(left, 0.5))

    def seen(self, event: str, **match: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
            ]

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self.stderr)

    def quit(self, timeout: float = WAIT) -> int:
        """Ask the bot to close its guard and exit; its exit code."""
        self.send(op="quit")
        self.expect("bye", timeout=timeout)
        return self.wait(timeout)

    def wait(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


class RedisServer:
    """A redis-server of this test's own, on a free port, that the test may kill."""

    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        self.port = free_port()
        self.dir = directory
        self.appendonly = appendonly
        self.started_once = False
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start (or restart: same port, same directory) and wait until it answers."""
        for _attempt in range(3):
            if self._start():
                return self
            if self.started_once:
                break
            self.port = free_port()  # the free port was taken meanwhile: another one
        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"redis-server on port {self.port} did not start:\n{log}")

    def _start(self) -> bool:
        import redis

        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(  # noqa: S603 (the test's own argv)
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis("127.0.0.1", self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + WAIT
        try:
            while True:
                try:
                    if client.ping():
                        self.started_once = True
                        return True
                except (redis.RedisError, OSError):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    return False
                time.sleep(0.02)
        finally:
            client.close()

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped server dies too
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Everything a test started; killed (SIGKILL, by pid) whatever happened."""
    started: list[Any] = []
    yield started
    for proc in reversed(started):
        proc.kill()


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeBinance]]:
    fakes: list[FakeBinance] = []

    def make(balances: dict[str, object], symbols: tuple[str, ...]) -> FakeBinance:
        fake = FakeBinance(
            api_key=f"key-{uuid.uuid4().hex}",
            secret=f"secret-{uuid.uuid4().hex}",
            balances=balances,
            symbols=symbols,
        ).start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        fake.stop()
        assert fake.server_errors == []
        assert fake.unknown == []


@pytest.fixture
def spawn(processes: list[Any]) -> Callable[..., Worker]:
    def start(fake: FakeBinance, backend: str, name: str, **options: Any) -> Worker:
        argv = [
            sys.executable,
            str(BOT),
            "--exchange-url",
            fake.url,
            "--client-config",
            json.dumps(fake.client_config()),
            "--backend",
            backend,
            "--name",
            name,
        ]
        for option, value in options.items():
            argv += ["--" + option.replace("_", "-"), str(value)]
        worker = Worker(name, argv)
        processes.append(worker)
        return worker

    return start


def shared_redis_url() -> Iterator[str]:
    require_shared_redis()
    import redis

    prefix = f"njg-test-{uuid.uuid4().hex[:12]}:"
    yield f"redis://{SHARED_REDIS[0]}:{SHARED_REDIS[1]}/0?prefix={prefix}"
    client = redis.Redis(*SHARED_REDIS, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A durable backend URL: ``sqlite`` (a file of this test) or ``redis`` (shared server)."""
    kind = request.param
    if kind == "memory":
        yield "memory"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'guard.db'}"
        # Create the database (WAL) before the bots start: bots opening a new database at
        # the same instant can fail (see test_bots_starting_together_can_open_a_new_sqlite_db).
        open_backend(url).close()
        yield url
    else:
        yield from shared_redis_url()


@pytest.fixture
def redis_server(tmp_path: Path, processes: list[Any]) -> Callable[..., RedisServer]:
    require_redis_server()

    def start(*, appendonly: bool) -> RedisServer:
        directory = tmp_path / f"redis-{len(processes)}"
        directory.mkdir()
        server = RedisServer(directory, appendonly=appendonly).start()
        processes.append(server)
        return server

    return start


DURABLE = [pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis")]


# -- looking at what happened --------------------------------------------------------
def posts(fake: FakeBinance, symbol: str | None = None) -> list[Any]:
    """POST /api/v3/order requests that reached the exchange (for ``symbol``)."""
    market_id = symbol.replace("/", "") if symbol else None
    return [
        r for r in fake.requests_to("POST", ORDER) if market_id in (None, r.params.get("symbol"))
    ]


def open_inspector(url: str) -> Backend:
    return open_backend(url, timeout=2.0)


def raw_lease_count(backend: Backend) -> int:
    """Lease records physically present, expired ones included."""
    raw = getattr(backend, "raw", None)
    if raw is not None:
        return len(list(raw().scan_iter(match=backend.prefix + "lease:*")))  # type: ignore[attr-defined]
    if backend.url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(backend.path)) as db:  # type: ignore[attr-defined]
            return int(db.execute("SELECT COUNT(*) FROM leases").fetchone()[0])
    return len(backend.leases())


def assert_backend_clean(url: str, account: str) -> None:
    backend = open_inspector(url)
    try:
        assert backend.leases(account + "/") == []
        assert raw_lease_count(backend) == 0
        assert backend.in_flight(account) == []
    finally:
        backend.close()


def start_all(workers: list[Worker]) -> str:
    """Wait until every worker is ready; the account they share."""
    accounts = {w.expect("ready")["account"] for w in workers}
    assert len(accounts) == 1, accounts
    return accounts.pop()


# =========================================================================================
# 1. The hammer: many processes, every symbol, random orders, one sell each
# =========================================================================================
def line_up(bots: list[Worker], fake: FakeBinance) -> list[tuple[int, Counter[str]]]:
    """Each LINED_UP symbol: every bot sells it at once and pauses after its balance refresh.

    The test waits until every bot has either paused there (it holds the lock,
    and its refresh saw the whole position) or been refused, then releases the
    paused ones. Per symbol: how many paused, and the outcomes.
    """
    for bot in bots:
        for symbol in LINED_UP:
            bot.send(op="pause", hook="balance_refreshed", symbol=symbol, times=1)
            bot.expect("armed")
    rounds = []
    for symbol in LINED_UP:
        for bot in bots:
            bot.send(op="sell", symbol=symbol, amount=1)
        first = [bot.expect(("PAUSED", "result"), symbol=symbol) for bot in bots]
        paused = [bot for bot, event in zip(bots, first, strict=True) if event["event"] == "PAUSED"]
        for bot in paused:
            bot.line("go")
        outcomes = Counter(
            bot.expect("result", symbol=symbol)["outcome"] if bot in paused else event["outcome"]
            for bot, event in zip(bots, first, strict=True)
        )
        rounds.append((len(paused), outcomes))
    return rounds


@pytest.mark.parametrize("backend_url", DURABLE, indirect=True)
def test_hammer_one_sell_per_symbol_across_processes(
    backend_url: str, make_fake: Callable[..., FakeBinance], spawn: Callable[..., Worker]
) -> None:
    """Four bot processes, one account: each symbol is sold once, by one of them.

    First the race lined up (as the memory test below does it), then every bot
    sells every symbol in its own random order, all at once.
    """
    symbols = SYMBOLS + LINED_UP
    fake = make_fake({s.split("/")[0]: 1 for s in symbols} | {"USDT": 0}, symbols)
    bots = [spawn(fake, backend_url, f"bot{i}", lease_ttl=5) for i in range(4)]
    account = start_all(bots)

    for paused, outcomes in line_up(bots, fake):
        # Only the lease holder got past admission; the others were refused before any
        # broker call, and only its sell reached the exchange.
        assert paused == 1
        assert outcomes == Counter({"sold": 1, "ExitInProgress": 3})
    for symbol in LINED_UP:
        assert len(posts(fake, symbol)) == 1
        assert fake.venue.sold(symbol) == Decimal(1)

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for bot in bots:  # the "go" line: every bot starts its own random order now
        bot.send(op="hammer", symbols=rng.sample(SYMBOLS, len(SYMBOLS)))
    for bot in bots:
        bot.expect("done", timeout=30)
    assert [bot.quit() for bot in bots] == [0, 0, 0, 0]
    assert not [bot.name for bot in bots if "Traceback" in bot.stderr_text()]

    results = [r for bot in bots for r in bot.seen("result") if r["symbol"] in SYMBOLS]
    assert len(results) == 4 * len(SYMBOLS)
    sold = Counter(r["symbol"] for r in results if r["outcome"] == "sold")
    others = Counter(r["outcome"] for r in results if r["outcome"] != "sold")
    assert set(others) <= {"NothingToSell", "ExitInProgress"}, (seed, others, results)
    for symbol in SYMBOLS:
        # Zero double-sells: no second attempt ever reached the exchange.
        assert len(posts(fake, symbol)) == 1, (seed, symbol, posts(fake, symbol))
        assert sold[symbol] == 1, (seed, symbol)
        # Zero oversell: exactly the position was sold, nothing is left.
        assert fake.venue.sold(symbol) == Decimal(1)
        assert fake.venue.holdings(symbol.split("/")[0]) == 0
    assert_backend_clean(backend_url, account)


@pytest.mark.parametrize("backend_url", [pytest.param("memory", id="memory")], indirect=True)
def test_without_a_shared_backend_the_lined_up_race_double_sells(
    backend_url: str, make_fake: Callable[..., FakeBinance], spawn: Callable[..., Worker]
) -> None:
    """The same lined-up race with ``backend="memory"``: no exclusion across processes.

    Every bot refreshes, sees 1.0 and pauses; released, all four POST. The
    exchange refuses three (it holds the funds), but three second sells reached
    it: the counts the hammer asserts would catch a backend that does not exclude.
    """
    fake = make_fake({s.split("/")[0]: 1 for s in LINED_UP} | {"USDT": 0}, LINED_UP)
    bots = [spawn(fake, backend_url, f"bot{i}") for i in range(4)]
    start_all(bots)
    for paused, outcomes in line_up(bots, fake):
        assert paused == 4
        assert outcomes == Counter({"sold": 1, "InsufficientFunds": 3})
    for symbol in LINED_UP:
        assert len(posts(fake, symbol)) == 4  # a quadruple sell attempt on the wire
        assert fake.venue.sold(symbol) == Decimal(1)  # only the exchange stopped it
    assert [bot.quit() for bot in bots] == [0, 0, 0, 0]


# =========================================================================================
# 2. kill -9 of the lease holder mid-exit: the order executed, its reply never came
# =========================================================================================
@pytest.mark.parametrize(
    ("backend_url", "sold_by_a", "b_outcome"),
    [
        pytest.param("sqlite", 1.0, "NothingToSell", id="sqlite-all"),
        pytest.param("redis", 1.0, "NothingToSell", id="redis-all"),
        pytest.param("sqlite", 0.6, "sold", id="sqlite-part"),
    ],
    indirect=["backend_url"],
)
def test_kill9_of_the_holder_mid_exit_is_recovered_from_the_journal(
    backend_url: str,
    make_fake: Callable[..., FakeBinance],
    spawn: Callable[..., Worker],
    sold_by_a: float,
    b_outcome: str,
) -> None:
    symbol = "BTC/USDT"
    fake = make_fake({"BTC": 1, "USDT": 0}, (symbol,))
    a = spawn(fake, backend_url, "A", lease_ttl=1.0)
    b = spawn(fake, backend_url, "B", lease_ttl=1.0)
    account = start_all([a, b])
    key = f"{account}/{symbol}"
    inspector = open_inspector(backend_url)
    try:
        fake.inject("POST", ORDER, "hang_after")  # the venue executes; A never hears back
        a.send(op="sell", symbol=symbol, amount=sold_by_a)
        assert fake.wait_hung(1, timeout=WAIT)
        [post] = posts(fake)
        cid = post.params["newClientOrderId"]
        assert fake.venue.get(client_order_id=cid).filled == Decimal(str(sold_by_a))
        # A is stuck mid-exit: its lease held (renewed), its exit journaled with the client id.
        [row] = inspector.in_flight(account, symbol)
        assert (row.client_order_id, row.state) == (cid, "intent")
        lease = inspector.holder(key)
        assert lease is not None and lease.owner == row.exit_id

        a.signal(signal.SIGKILL)
        a.wait()
        lease = inspector.holder(key)
        assert lease is not None and lease.expires_at is not None  # not expired yet
        expires_at = lease.expires_at
        assert time.time() < expires_at  # B asks while A's lease still holds
        b.send(op="sell", symbol=symbol, amount=1, on_conflict="wait", wait_timeout=10)
        result = b.expect("result")
        assert result["outcome"] == b_outcome, result
        # B waited for A's lease to expire (the holder never released it).
        assert result["t"] >= expires_at - 0.05
        # ... then found A's journaled exit on the exchange by its client id, settled it ...
        assert f"recovered exit {row.exit_id} of a stopped process" in b.stderr_text()
        # ... and sold only what was left: exactly the position, over both processes.
        assert fake.venue.sold(symbol) == Decimal(1)
        assert fake.venue.holdings("BTC") == 0
        assert len(posts(fake)) == (2 if b_outcome == "sold" else 1)
        if b_outcome == "sold":
            assert result["filled"] == pytest.approx(1 - sold_by_a)
        assert b.quit() == 0
        assert_backend_clean(backend_url, account)
    finally:
        inspector.close()


# =========================================================================================
# 3. SIGSTOP of the holder past its lease: on SIGCONT it must send nothing
# =========================================================================================
def stop_outside_a_write(worker: Worker, backend_url: str) -> None:
    """SIGSTOP ``worker``, never inside one of its SQLite write transactions.

    Its lease keeper renews every ``lease_ttl / 3``; stopped inside that renewal's
    transaction it would keep SQLite's write lock, and every other process would get
    "database is locked" (a stopped process holding a file lock is a different test).
    The test takes the write lock itself first, so the worker cannot be in a write,
    and gives it back once the worker is stopped. Redis: no lock to mind.
    """
    if not backend_url.startswith("sqlite:///"):
        worker.signal(signal.SIGSTOP)
        return
    db = sqlite3.connect(backend_url.removeprefix("sqlite:///"), timeout=WAIT)
    db.isolation_level = None
    try:
        db.execute("BEGIN IMMEDIATE")  # waits for a write of the worker to end
        worker.signal(signal.SIGSTOP)
        wait_for(lambda: _all_threads_stopped(worker.pid), what="the worker to stop")
        db.execute("ROLLBACK")
    finally:
        db.close()


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (state T in /proc), the keeper's too."""
    states = [
        stat.read_text().rsplit(") ", 1)[1][0] for stat in Path(f"/proc/{pid}/task").glob("*/stat")
    ]
    return bool(states) and all(state == "T" for state in states)


@pytest.mark.parametrize("backend_url", DURABLE, indirect=True)
@pytest.mark.parametrize("b_state", ["b-holds-the-lease", "b-sold-and-released"])
def test_sigstop_of_the_holder_past_its_lease_sends_nothing_after_sigcont(
    backend_url: str,
    make_fake: Callable[..., FakeBinance],
    spawn: Callable[..., Worker],
    b_state: str,
) -> None:
    symbol = "BTC/USDT"
    fake = make_fake({"BTC": 1, "USDT": 0}, (symbol,))
    a = spawn(fake, backend_url, "A", lease_ttl=1.0)
    b = spawn(fake, backend_url, "B", lease_ttl=1.0)
    account = start_all([a, b])
    key = f"{account}/{symbol}"
    inspector = open_inspector(backend_url)
    try:
        for bot in (a, b):
            bot.send(op="pause", hook="balance_refreshed", symbol=symbol)
            bot.expect("armed")
        a.send(op="sell", symbol=symbol, amount=1)
        paused = a.expect("PAUSED")  # A holds the lease and saw 1.0 to sell
        assert paused["sellable"] == 1.0
        lease = inspector.holder(key)
        assert lease is not None and lease.owner == paused["exit_id"]

        stop_outside_a_write(a, backend_url)  # the whole process: its lease keeper too
        try:
            wait_for(lambda: inspector.holder(key) is None, what="A's lease to expire")
            b.send(op="sell", symbol=symbol, amount=1)
            b_paused = b.expect("PAUSED")  # B took the lease A lost
            holder = inspector.holder(key)
            assert holder is not None and holder.owner == b_paused["exit_id"]
            if b_state == "b-sold-and-released":
                b.line("go")
                assert b.expect("result")["outcome"] == "sold"
                assert inspector.holder(key) is None
        finally:
            a.signal(signal.SIGCONT)
        sent = len(posts(fake))  # B's sell, if it went on
        # A's lease keeper wakes first (its timed wait is long overdue): give it that
        # chance, bounded, so the outcome below cannot depend on which thread ran first.
        with contextlib.suppress(AssertionError):
            a.expect("hook", hook="lease_lost", timeout=2.0)
        a.line("go")  # A goes on from its balance refresh, to its pre-submit lease check
        result = a.expect("result")
        assert a.seen("hook", hook="lease_lost")
        assert result["outcome"] == "ExitInProgress", (result, a.stderr_text())
        assert len(posts(fake)) == sent  # nothing sent by A
        if b_state == "b-holds-the-lease":
            b.line("go")
            assert b.expect("result")["outcome"] == "sold"
        assert len(posts(fake)) == 1
        assert fake.venue.sold(symbol) == Decimal(1)
        # A's refused exit settled its journal row; nothing is left to sell.
        b.send(op="sell", symbol=symbol, amount=1)
        assert b.expect("result")["outcome"] == "NothingToSell"
        assert a.quit() == 0 and b.quit() == 0
        assert_backend_clean(backend_url, account)
    finally:
        inspector.close()


@pytest.mark.parametrize("backend_url", DURABLE, indirect=True)
def test_an_exit_refused_at_its_lease_check_leaves_no_journal_row(
    backend_url: str, make_fake: Callable[..., FakeBinance], spawn: Callable[..., Worker]
) -> None:
    symbol = "BTC/USDT"
    fake = make_fake({"BTC": 1, "USDT": 0}, (symbol,))
    a = spawn(fake, backend_url, "A", lease_ttl=1.0)
    account = start_all([a])
    key = f"{account}/{symbol}"
    inspector = open_inspector(backend_url)
    try:
        a.send(op="pause", hook="balance_refreshed", symbol=symbol)
        a.expect("armed")
        a.send(op="sell", symbol=symbol, amount=1)
        a.expect("PAUSED")
        # The backend loses A's lease (as a Redis restart without AOF would) and
        # another process takes the symbol before A goes on.
        lease = inspector.holder(key)
        assert lease is not None and inspector.release(lease)
        assert inspector.acquire(key, "another-process", 30.0) is not None
        a.line("go")
        assert a.expect("result")["outcome"] == "ExitInProgress"
        assert posts(fake) == []
        assert a.quit() == 0
        assert inspector.in_flight(account) == []  # A settled its "intent" row
    finally:
        inspector.close()


# =========================================================================================
# 4. Redis killed (kill -9) and restarted, with and without AOF: its own redis-server
# =========================================================================================
@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-aof"])
def test_redis_killed_and_restarted(
    appendonly: bool,
    redis_server: Callable[..., RedisServer],
    make_fake: Callable[..., FakeBinance],
    spawn: Callable[..., Worker],
) -> None:
    server = redis_server(appendonly=appendonly)
    url = server.url(f"njg-{uuid.uuid4().hex[:8]}:")
    fake = make_fake({"BTC": 1, "ETH": 10, "USDT": 0}, ("BTC/USDT", "ETH/USDT"))
    a = spawn(fake, url, "A", lease_ttl=4.0, backend_timeout=0.5)
    b = spawn(fake, url, "B", lease_ttl=4.0, backend_timeout=0.5)
    account = start_all([a, b])
    key = f"{account}/BTC/USDT"
    # A holds a resting take-profit: its lease (renewed by its keeper) and its journal row.
    a.send(op="sell", symbol="BTC/USDT", amount=1, type="limit", price=60_000)
    placed = a.expect("result")
    assert (placed["outcome"], placed["status"]) == ("sold", "open")
    inspector = open_inspector(url)
    lease = inspector.holder(key)
    [row] = inspector.in_flight(account, "BTC/USDT")
    inspector.close()
    assert lease is not None and lease.owner == row.exit_id
    assert row.client_order_id == placed["client_order_id"]

    server.kill()  # kill -9
    b.send(op="sell", symbol="ETH/USDT", amount=1)
    failed = b.expect("result")
    assert failed["outcome"] == "BackendUnavailable", failed
    assert b.seen("hook", hook="backend_failed", symbol="ETH/USDT")
    assert posts(fake, "ETH/USDT") == []  # failed closed: nothing sent

    server.start()  # same port, same directory
    inspector = open_inspector(url)
    try:
        if appendonly:
            # The lease and the journal row survived, and A keeps renewing the same lease.
            survived = inspector.holder(key)
            assert survived is not None
            assert (survived.owner, survived.token) == (lease.owner, lease.token)
            assert [e.exit_id for e in inspector.in_flight(account)] == [row.exit_id]
            assert survived.expires_at is not None
            first_expiry = survived.expires_at
            wait_for(
                lambda: (inspector.holder(key) or survived).expires_at > first_expiry + 0.5,
                what="A's keeper renewing its lease on the restarted Redis",
            )
            assert a.seen("hook", hook="lease_lost") == []
        else:
            # Everything is gone: A's keeper finds its lease lost, says so and takes it again.
            assert inspector.in_flight(account) == []  # the journal row is lost for good
            lost = a.expect("hook", hook="lease_lost")
            assert (lost["exit_id"], lost["key"]) == (row.exit_id, key)
            assert lost["thread"].startswith("nija-guard-leases")
            retaken = wait_for(lambda: inspector.holder(key), what="A to take its lease again")
            assert retaken.owner == lease.owner
            assert retaken.token > lease.token  # fencing tokens keep increasing
        # Either way another process of the account cannot take the symbol ...
        b.send(op="sell", symbol="BTC/USDT", amount=1)
        assert b.expect("result")["outcome"] == "ExitInProgress"
        assert len(posts(fake, "BTC/USDT")) == 1
        # ... and exits work again.
        b.send(op="sell", symbol="ETH/USDT", amount=1)
        assert b.expect("result")["outcome"] == "sold"
        # The take-profit fills: A settles it, releases the lease, clears the journal.
        fake.venue.set_price("BTC/USDT", 61_000)
        wait_for(
            lambda: inspector.holder(key) is None and inspector.in_flight(account) == [],
            what="A to settle its filled order",
        )
        assert fake.venue.sold("BTC/USDT") == Decimal(1)
        assert a.quit() == 0 and b.quit() == 0
        assert_backend_clean(url, account)
    finally:
        inspector.close()


# =========================================================================================
# 5. Redis paused (SIGSTOP): fail fast, send nothing; after SIGCONT exits work
# =========================================================================================
def test_redis_paused_fails_fast_and_sends_nothing(
    redis_server: Callable[..., RedisServer],
    make_fake: Callable[..., FakeBinance],
    spawn: Callable[..., Worker],
) -> None:
    timeout, lease_ttl = 0.5, 1.0
    server = redis_server(appendonly=False)
    url = server.url(f"njg-{uuid.uuid4().hex[:8]}:")
    fake = make_fake({"BTC": 1, "ETH": 10, "USDT": 0}, ("BTC/USDT", "ETH/USDT"))
    a = spawn(fake, url, "A", lease_ttl=lease_ttl, backend_timeout=timeout)
    account = start_all([a])
    a.send(op="sell", symbol="ETH/USDT", amount=1)  # connections open, scripts loaded
    assert a.expect("result")["outcome"] == "sold"

    server.signal(signal.SIGSTOP)
    try:
        a.send(op="sell", symbol="BTC/USDT", amount=1)
        failed = a.expect("result")
    finally:
        server.signal(signal.SIGCONT)
    assert failed["outcome"] == "BackendUnavailable", failed
    # About backend_timeout: the acquire times out, then so does its read-back (2x).
    assert timeout * 0.9 <= failed["elapsed"] <= 2 * timeout + 1.0
    assert a.seen("hook", hook="backend_failed", symbol="BTC/USDT")
    assert posts(fake, "BTC/USDT") == []

    a.send(op="sell", symbol="ETH/USDT", amount=1)  # Redis is back: exits work at once
    assert a.expect("result")["outcome"] == "sold"
    # BTC/USDT too; it may wait out the lease its timed-out acquire left behind (see
    # test_an_acquire_that_timed_out_leaves_no_lease_behind), never longer than lease_ttl.
    a.send(op="sell", symbol="BTC/USDT", amount=1, on_conflict="wait", wait_timeout=10)
    sold = a.expect("result")
    assert sold["outcome"] == "sold"
    assert sold["elapsed"] <= lease_ttl + 1.0
    assert len(posts(fake)) == 3
    assert fake.venue.sold("BTC/USDT") == Decimal(1)
    assert a.quit() == 0
    assert_backend_clean(url, account)


# =========================================================================================
# 6. SQLite busy: another process holds BEGIN IMMEDIATE; then it is killed inside it
# =========================================================================================
def test_sqlite_busy_fails_closed_and_a_killed_lock_holder_frees_it(
    tmp_path: Path,
    make_fake: Callable[..., FakeBinance],
    spawn: Callable[..., Worker],
    processes: list[Any],
) -> None:
    timeout = 0.5
    path = tmp_path / "guard.db"
    url = f"sqlite:///{path}"
    fake = make_fake({"BTC": 1, "USDT": 0}, ("BTC/USDT",))
    a = spawn(fake, url, "A", lease_ttl=5.0, backend_timeout=timeout)
    account = start_all([a])
    key = f"{account}/BTC/USDT"
    # Inside its (never committed) transaction the locker also writes a lease of the symbol.
    locker = Worker("locker", [sys.executable, str(LOCKER), str(path), key])
    processes.append(locker)
    locker.expect("raw", line="LOCKED")

    a.send(op="sell", symbol="BTC/USDT", amount=1)
    failed = a.expect("result")
    assert failed["outcome"] == "BackendUnavailable", failed
    assert timeout * 0.9 <= failed["elapsed"] <= timeout + 2.0  # busy for backend_timeout
    assert a.seen("hook", hook="backend_failed", symbol="BTC/USDT")
    assert posts(fake) == []

    locker.signal(signal.SIGKILL)  # kill -9 inside BEGIN IMMEDIATE: the OS drops its lock
    locker.wait()
    a.send(op="sell", symbol="BTC/USDT", amount=1)
    sold = a.expect("result")
    assert sold["outcome"] == "sold", sold  # the locker's uncommitted lease row is gone too
    assert len(posts(fake)) == 1
    assert fake.venue.sold("BTC/USDT") == Decimal(1)
    assert a.quit() == 0
    assert_backend_clean(url, account)


# =========================================================================================
# 7. Degraded mode: opted into, an unreachable backend means local locks, said loudly
# =========================================================================================
def test_degraded_mode_exits_with_local_locks_and_logs_an_error(
    make_fake: Callable[..., FakeBinance], spawn: Callable[..., Worker]
) -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        redis_unavailable("redis-py is not installed (pip install 'nija-guard[redis]')")
    url = f"redis://127.0.0.1:{free_port()}/0?prefix=njg-degraded:"  # nothing listens there
    fake = make_fake({"BTC": 1, "ETH": 1, "USDT": 0}, ("BTC/USDT", "ETH/USDT"))
    local = spawn(fake, url, "local", on_backend_failure="local", backend_timeout=0.5)
    strict = spawn(fake, url, "strict", backend_timeout=0.5)
    start_all([local, strict])

    strict.send(op="sell", symbol="ETH/USDT", amount=1)
    assert strict.expect("result")["outcome"] == "BackendUnavailable"
    assert posts(fake, "ETH/USDT") == []  # the default fails closed

    local.send(op="sell", symbol="BTC/USDT", amount=1)
    assert local.expect("result")["outcome"] == "sold"
    assert len(posts(fake, "BTC/USDT")) == 1
    assert fake.venue.sold("BTC/USDT") == Decimal(1)
    assert local.quit() == 0 and strict.quit() == 0
    degraded = [line for line in local.stderr if "DEGRADED" in line]
    assert degraded and all(line.startswith("ERROR ") for line in degraded), local.stderr
    assert "other processes are NOT excluded" in degraded[0]
    assert not any("DEGRADED" in line for line in strict.stderr)


# =========================================================================================
# Bugs these tests found (fixed; kept as regression tests)
# =========================================================================================
def test_bots_starting_together_can_open_a_new_sqlite_db(tmp_path: Path) -> None:
    """Bots of a fleet started together on a new host: every guard must open the database.

    Seen as a bot crashing at startup in the two-process tests above (before they
    created the database first). Threads reproduce it faster than processes: SQLite
    locks connections of one process against each other the same way.
    """
    from nija_guard._sqlite import SqliteBackend

    for attempt in range(200):
        path = tmp_path / f"fleet-{attempt}.db"
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def open_it(
            path: Path = path,
            start: threading.Barrier = start,
            errors: list[BaseException] = errors,
        ) -> None:
            start.wait(WAIT)
            try:
                SqliteBackend(str(path), timeout=2.0).close()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert errors == [], f"attempt {attempt}: {errors[0]!r} caused by {errors[0].__cause__!r}"


def test_an_acquire_that_timed_out_leaves_no_lease_behind(
    redis_server: Callable[..., RedisServer], make_fake: Callable[..., FakeBinance]
) -> None:
    server = redis_server(appendonly=False)
    fake = make_fake({"BTC": 1, "ETH": 10, "USDT": 0}, ("BTC/USDT", "ETH/USDT"))
    exchange = nija_guard.guard(
        fake.client(),
        backend=server.url(f"njg-{uuid.uuid4().hex[:8]}:"),
        backend_timeout=0.3,
        lease_ttl=30.0,
        load_entrypoints=False,
        poll_interval=0.05,
        absent_after=0.2,
    )
    try:
        exchange.create_market_sell_order("ETH/USDT", 1)  # connection open, scripts loaded
        server.signal(signal.SIGSTOP)
        try:
            with pytest.raises(nija_guard.BackendUnavailable):
                exchange.create_market_sell_order("BTC/USDT", 1)
        finally:
            server.signal(signal.SIGCONT)
        assert len(posts(fake, "BTC/USDT")) == 0
        # Redis is back; nobody is exiting BTC/USDT: this exit must not be refused.
        order = exchange.create_market_sell_order("BTC/USDT", 1)  # raises ExitInProgress
        assert order["filled"] == pytest.approx(1)
    finally:
        exchange.nija_guard.close()
