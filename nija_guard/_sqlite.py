"""SQLite backend: leases and journal for many processes on one host.

- WAL mode, ``synchronous=FULL``: a journal row is on disk before the order is sent.
- Every write is one ``BEGIN IMMEDIATE`` transaction: writers queue on SQLite's
  own file lock, which the OS releases if a holder dies (kill -9 included).
- ``busy_timeout``: waiting longer than ``timeout`` for that lock is
  "unavailable", and the guard fails closed.
- Lease rows carry an expiry (wall clock: every process on the host shares it)
  and a token from a per-key counter that only goes up, even across releases.
- Connections are per thread and per process: one opened before a fork is
  never used after it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ._backend import JournalEntry, Lease
from ._errors import BackendUnavailable

__all__ = ["SqliteBackend"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (key TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    exit_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    symbol TEXT NOT NULL,
    client_order_id TEXT,
    state TEXT NOT NULL,
    side TEXT NOT NULL,
    amount TEXT,
    order_id TEXT,
    updated_at REAL NOT NULL,
    token INTEGER,
    lease_key TEXT
);
CREATE INDEX IF NOT EXISTS journal_by_symbol ON journal (account, symbol);
"""


class SqliteBackend:
    durable = True

    def __init__(
        self, path: str, *, timeout: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.timeout = timeout
        self._clock = clock
        self._local = threading.local()
        # Create the schema now: an unusable file fails here, not at the first exit.
        self._read(lambda db: db.executescript(SCHEMA))

    # -- connections -----------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != pid:
            # New thread, or a forked child: never reuse the parent's connection.
            try:
                db = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=True
                )
                db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                self._use_wal(db)
                db.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise BackendUnavailable(
                    f"cannot open the SQLite backend: {type(exc).__name__}"
                ) from exc
            self._local.db, self._local.pid = db, pid
        return db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        # WAL is a property of the file: once set, later opens only read it. Switching
        # a new file takes a lock that SQLite does not busy-wait for, so processes of
        # a fleet started together retry it here, up to the same timeout.
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # busy past the timeout, disk I/O, locked...
            raise BackendUnavailable(f"SQLite backend busy or failing: {exc}") from exc
        try:
            yield db
        except BaseException:
            self._roll_back(db)
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                # Never leave this thread's connection inside a transaction (holding
                # the write lock, failing every later BEGIN).
                self._roll_back(db)
                raise BackendUnavailable(f"SQLite backend commit failed: {exc}") from exc

    @staticmethod
    def _roll_back(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error that got us here matters more
                db.execute("ROLLBACK")

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._write() as db:
                return action(db)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"SQLite backend failed: {exc}") from exc

    def _read(self, action: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return action(self._connection())
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"SQLite backend failed: {exc}") from exc

    # -- leases --------------------------------------------------------------------------
    def acquire(self, key: str, owner: str, ttl: float | None) -> Lease | None:
        def action(db: sqlite3.Connection) -> Lease | None:
            now = self._clock()
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return None
            db.execute(
                "INSERT INTO tokens (key, token) VALUES (?, 1) "
                "ON CONFLICT (key) DO UPDATE SET token = token + 1",
                (key,),
            )
            token = db.execute("SELECT token FROM tokens WHERE key = ?", (key,)).fetchone()[0]
            expires = now + (ttl if ttl is not None else 10 * 365 * 86400.0)
            db.execute(
                "INSERT OR REPLACE INTO leases (key, owner, token, expires_at) VALUES (?, ?, ?, ?)",
                (key, owner, token, expires),
            )
            return Lease(key, owner, int(token), expires)

        return self._run(action)

    def renew(self, lease: Lease, ttl: float | None) -> Lease | None:
        def action(db: sqlite3.Connection) -> Lease | None:
            expires = self._clock() + (ttl if ttl is not None else 10 * 365 * 86400.0)
            # Sets the expiry (never adds to it), and only for this owner and token.
            changed = db.execute(
                "UPDATE leases SET expires_at = ? WHERE key = ? AND owner = ? AND token = ?",
                (expires, lease.key, lease.owner, lease.token),
            ).rowcount
            return Lease(lease.key, lease.owner, lease.token, expires) if changed == 1 else None

        return self._run(action)

    def release(self, lease: Lease) -> bool:
        def action(db: sqlite3.Connection) -> bool:
            return bool(
                db.execute(
                    "DELETE FROM leases WHERE key = ? AND owner = ? AND token = ?",
                    (lease.key, lease.owner, lease.token),
                ).rowcount
            )

        return self._run(action)

    def holder(self, key: str) -> Lease | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT key, owner, token, expires_at FROM leases WHERE key = ? AND expires_at > ?",
                (key, self._clock()),
            ).fetchone()
        )
        return Lease(row[0], row[1], int(row[2]), row[3]) if row else None

    def leases(self, prefix: str = "") -> list[Lease]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT key, owner, token, expires_at FROM leases "
                "WHERE expires_at > ? ORDER BY key",
                (self._clock(),),
            ).fetchall()
        )
        return [Lease(r[0], r[1], int(r[2]), r[3]) for r in rows if r[0].startswith(prefix)]

    # -- journal ---------------------------------------------------------------------------
    def record(self, entry: JournalEntry) -> None:
        def action(db: sqlite3.Connection) -> None:
            if entry.state == "settled":
                db.execute("DELETE FROM journal WHERE exit_id = ?", (entry.exit_id,))
                return
            db.execute(
                "INSERT OR REPLACE INTO journal (exit_id, account, symbol, client_order_id, state, "
                "side, amount, order_id, updated_at, token, lease_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.exit_id,
                    entry.account,
                    entry.symbol,
                    entry.client_order_id,
                    entry.state,
                    entry.side,
                    entry.amount,
                    entry.order_id,
                    entry.updated_at,
                    entry.token,
                    entry.key,
                ),
            )

        self._run(action)

    def in_flight(self, account: str, symbol: str | None = None) -> list[JournalEntry]:
        def action(db: sqlite3.Connection) -> list[Any]:
            if symbol is None:
                return db.execute("SELECT * FROM journal WHERE account = ?", (account,)).fetchall()
            return db.execute(
                "SELECT * FROM journal WHERE account = ? AND symbol = ?", (account, symbol)
            ).fetchall()

        return [_entry(row) for row in self._read(action)]

    def accounts(self) -> list[str]:
        rows = self._read(lambda db: db.execute("SELECT DISTINCT account FROM journal").fetchall())
        return [r[0] for r in rows]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local = threading.local()


def _entry(row: Any) -> JournalEntry:
    exit_id, account, symbol, cid, state, side, amount, order_id, updated, token, key = row
    return JournalEntry(
        account=account,
        symbol=symbol,
        exit_id=exit_id,
        client_order_id=cid,
        state=state,
        side=side,
        amount=amount,
        order_id=order_id,
        updated_at=updated,
        token=token,
        key=key,
    )
