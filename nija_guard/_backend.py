"""The storage seam: leases (cross-process exclusion) and the exit journal.

The in-process close lock lives in the account's book; a backend adds
exclusion across processes (a lease with a fencing token, a TTL and renewal)
and a journal of exits in flight, recorded before anything is submitted, so a
restarted process knows what it may have left on the exchange.

``memory`` is the default: leases and journal live in this process, which is
all a single bot process needs. Durable backends (``sqlite:///``, ``redis://``)
implement the same protocol.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._errors import BackendUnavailable

__all__ = ["Backend", "JournalEntry", "Lease", "MemoryBackend", "open_backend"]


@dataclass(frozen=True)
class Lease:
    """Exclusive right to exit one key, until released or expired.

    ``token`` increases with every grant of the key (a fencing token).
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


class Backend(Protocol):
    url: str

    def acquire(self, key: str, owner: str, ttl: float | None) -> Lease | None: ...
    def renew(self, lease: Lease, ttl: float | None) -> Lease | None: ...
    def release(self, lease: Lease) -> bool: ...
    def holder(self, key: str) -> Lease | None: ...
    def record(self, entry: JournalEntry) -> None: ...
    def in_flight(self, account: str) -> list[JournalEntry]: ...
    def close(self) -> None: ...


class MemoryBackend:
    """Leases and journal in this process's memory. Never blocks, never fails."""

    url = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
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

    def record(self, entry: JournalEntry) -> None:
        with self._mutex:
            if entry.state == "settled":
                self._journal.pop(entry.exit_id, None)
            else:
                self._journal[entry.exit_id] = entry

    def in_flight(self, account: str) -> list[JournalEntry]:
        with self._mutex:
            return [e for e in self._journal.values() if e.account == account]

    def leases(self, prefix: str = "") -> list[Lease]:
        """Leases held now whose key starts with ``prefix`` (an account id and '/')."""
        with self._mutex:
            return [lease for key, lease in self._leases.items() if key.startswith(prefix)]

    def close(self) -> None:
        return None


def open_backend(url: str) -> Backend:
    """The backend a ``backend=`` option names."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"backend must be a URL string such as 'memory', got {url!r}")
    if url == "memory":
        return MemoryBackend()
    if url.startswith("sqlite:") or url.startswith(("redis://", "rediss://", "unix://")):
        # Durable backends are issue #6; refuse loudly rather than run unprotected.
        raise BackendUnavailable(
            f"backend {url.split('://')[0]!r} is not available in this version of nija-guard; "
            "use backend='memory'"
        )
    raise ValueError(
        f"unknown backend {url!r}: use 'memory', 'sqlite:////absolute/path' or 'redis://host:port/db'"
    )
