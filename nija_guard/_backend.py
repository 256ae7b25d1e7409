"""The storage seam: leases (cross-process exclusion) and the exit journal.

The in-process close lock lives in the account's book; a backend adds
exclusion across processes (a lease with a TTL, renewal and a fencing token)
and a journal of exits in flight, recorded before anything is submitted, so a
restarted process, or any other, knows what may have been left on the exchange.

- ``memory`` (default): this process only; leases never expire.
- ``sqlite:////absolute/path``: one host, many processes (``_sqlite.py``).
- ``redis://host:port/db``: many hosts (``_redis.py``).

No lock makes an order exactly-once: the exchange cannot check a fencing token.
Leases give exclusion and liveness; correctness comes from the guard's client
order ids, the exchange state it checks before every submit, and the clamp to
real holdings. See docs/backends.md.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

__all__ = ["Backend", "JournalEntry", "Lease", "MemoryBackend", "open_backend"]


@dataclass(frozen=True)
class Lease:
    """Exclusive right to exit one key, until released or expired.

    ``token`` increases with every grant of the key (a fencing token);
    ``expires_at`` is wall-clock time (``None``: never).
    """

    key: str
    owner: str
    token: int
    expires_at: float | None


@dataclass(frozen=True)
class JournalEntry:
    """An exit's durable record. ``state``: intent, submitted, unknown, settled."""

    account: str
    symbol: str
    exit_id: str
    client_order_id: str | None
    state: str
    side: str
    amount: str | None = None
    order_id: str | None = None
    updated_at: float = 0.0
    token: int | None = None  # the lease token it was written under
    key: str | None = None  # the lease key it was written under

    def with_state(self, state: str) -> JournalEntry:
        return replace(self, state=state, updated_at=time.time())


class Backend(Protocol):
    url: str
    durable: bool  # leases outlive the process (they expire instead)

    def acquire(self, key: str, owner: str, ttl: float | None) -> Lease | None: ...
    def renew(self, lease: Lease, ttl: float | None) -> Lease | None: ...
    def release(self, lease: Lease) -> bool: ...
    def holder(self, key: str) -> Lease | None: ...
    def leases(self, prefix: str = "") -> list[Lease]: ...
    def record(self, entry: JournalEntry) -> None: ...
    def in_flight(self, account: str, symbol: str | None = None) -> list[JournalEntry]: ...
    def close(self) -> None: ...


class MemoryBackend:
    """Leases and journal in this process's memory. Never blocks, never fails."""

    url = "memory"
    durable = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._mutex = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._journal: dict[str, JournalEntry] = {}
        self._tokens = itertools.count(1)
        self._clock = clock

    def acquire(self, key: str, owner: str, ttl: float | None) -> Lease | None:
        now = self._clock()
        with self._mutex:
            current = self._leases.get(key)
            held = current is not None and current.owner != owner
            if held and (current.expires_at is None or current.expires_at > now):  # type: ignore[union-attr]
                return None
            lease = Lease(key, owner, next(self._tokens), None if ttl is None else now + ttl)
            self._leases[key] = lease
            return lease

    def renew(self, lease: Lease, ttl: float | None) -> Lease | None:
        now = self._clock()
        with self._mutex:
            current = self._leases.get(lease.key)
            if current is None or current.owner != lease.owner or current.token != lease.token:
                return None
            renewed = Lease(lease.key, lease.owner, lease.token, None if ttl is None else now + ttl)
            self._leases[lease.key] = renewed
            return renewed

    def release(self, lease: Lease) -> bool:
        with self._mutex:
            current = self._leases.get(lease.key)
            if current is None or current.owner != lease.owner or current.token != lease.token:
                return False
            del self._leases[lease.key]
            return True

    def holder(self, key: str) -> Lease | None:
        with self._mutex:
            return self._leases.get(key)

    def leases(self, prefix: str = "") -> list[Lease]:
        """Leases held now whose key starts with ``prefix`` (an account id and '/')."""
        with self._mutex:
            return [lease for key, lease in self._leases.items() if key.startswith(prefix)]

    def record(self, entry: JournalEntry) -> None:
        with self._mutex:
            if entry.state == "settled":
                self._journal.pop(entry.exit_id, None)
            else:
                self._journal[entry.exit_id] = entry

    def in_flight(self, account: str, symbol: str | None = None) -> list[JournalEntry]:
        with self._mutex:
            return [
                e
                for e in self._journal.values()
                if e.account == account and symbol in (None, e.symbol)
            ]

    def close(self) -> None:
        return None


def open_backend(url: str, *, timeout: float = 2.0) -> Backend:
    """The backend a ``backend=`` option names. ``timeout``: slower means unavailable."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"backend must be a URL string such as 'memory', got {url!r}")
    if url == "memory":
        return MemoryBackend()
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from ._sqlite import SqliteBackend

        return SqliteBackend(_sqlite_path(url), timeout=timeout)
    if scheme in ("redis", "rediss", "unix"):
        from ._redis import RedisBackend

        return RedisBackend(url, timeout=timeout)
    raise ValueError(
        f"unknown backend {_safe(url)!r}: use 'memory', 'sqlite:////absolute/path' "
        "or 'redis://host:port/db'"
    )


def _sqlite_path(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError("a SQLite backend URL is sqlite:////absolute/path/to/file.db")
    path = url[len(prefix) :].split("?", 1)[0]
    if not path.startswith("/"):
        # A relative path means another database in another working directory:
        # two processes would not exclude each other.
        raise ValueError(
            f"the SQLite backend needs an absolute path (sqlite:////abs/path), got {path!r}"
        )
    return path


def _safe(url: str) -> str:
    """A URL without its credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def url_options(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
