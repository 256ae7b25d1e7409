"""Redis backend: leases and journal for processes on many hosts (redis-py).

- One Lua script acquires a lease and issues its fencing token atomically; the
  token is ``max(counter + 1, server time in µs)``, so it keeps increasing even
  after Redis lost its data (a restart without AOF).
- Renew *sets* the TTL (``PEXPIRE``), never adds to it, and only for the owner
  and token that hold the key; release deletes only what it owns.
- No Redlock: one Redis (or a primary with replicas) is the lock service. A
  failover can lose a lease; the guard reports it and the exchange-side checks
  (client order ids, holdings, the clamp) keep a second exit from overselling.
- An ambiguous acquire (the reply was lost) is resolved by reading the key back.
- Every command has a socket timeout: slower than ``timeout`` is unavailable,
  and the guard fails closed.

Keys: ``{prefix}lease:{key}``, ``{prefix}token:{key}``, ``{prefix}exit:{exit_id}``
(a hash) and ``{prefix}open:{account}`` (a set of exit ids in flight).
``prefix`` defaults to ``nija_guard:``; set it with ``?prefix=`` in the URL.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from ._backend import JournalEntry, Lease, _safe, url_options
from ._errors import BackendUnavailable

__all__ = ["RedisBackend"]

T = TypeVar("T")

ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local owner = string.match(current, '^(.*)|[0-9]+$')
  if owner ~= ARGV[1] then return {0, current} end
end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local token = redis.call('INCR', KEYS[2])
if token < floor then
  token = floor
  redis.call('SET', KEYS[2], string.format('%.0f', token))
end
local value = ARGV[1] .. '|' .. string.format('%.0f', token)
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
"""

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Deletes a lease this backend may have taken without knowing it, whatever its token.
FORGET = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^(.*)|[0-9]+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

FOREVER_MS = 10 * 365 * 86400 * 1000


class RedisBackend:
    durable = True

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:  # pragma: no cover - an install problem
            raise BackendUnavailable(
                "the redis backend needs redis-py: pip install 'nija-guard[redis]'"
            ) from exc
        options = url_options(url)
        self.prefix = options.pop("prefix", "nija_guard:")
        parts = urlsplit(url)
        clean = urlunsplit(parts._replace(query=urlencode(options)))
        self.url = _safe(url)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # No retries inside redis-py: a repeated acquire could report failure
        # while the first had set the key. Ambiguity is resolved by reading back.
        self._redis = redis.Redis.from_url(
            clean,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            health_check_interval=0,
        )
        self._acquire = self._redis.register_script(ACQUIRE)
        self._renew = self._redis.register_script(RENEW)
        self._release = self._redis.register_script(RELEASE)
        self._forget = self._redis.register_script(FORGET)
        # Leases an acquire may have taken (or a release may have left) while Redis
        # did not answer: lease key -> (owner, exact value if known, latest expiry).
        self._doubtful: dict[str, tuple[str, str | None, float]] = {}
        self._doubt_lock = threading.Lock()

    def _call(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except self._errors as exc:
            raise BackendUnavailable(f"redis backend {self.url}: {type(exc).__name__}") from exc

    def _lease_key(self, key: str) -> str:
        return f"{self.prefix}lease:{key}"

    @staticmethod
    def _value(lease: Lease) -> str:
        return f"{lease.owner}|{lease.token}"

    # -- leases ----------------------------------------------------------------------
    def acquire(self, key: str, owner: str, ttl: float | None) -> Lease | None:
        self._forget_doubtful()
        ttl_ms = int((ttl if ttl is not None else FOREVER_MS / 1000) * 1000)
        lease_key = self._lease_key(key)
        try:
            granted, value = self._acquire(
                keys=[lease_key, f"{self.prefix}token:{key}"], args=[owner, ttl_ms]
            )
        except self._errors as first:
            # The script may have run and only its reply been lost: read the key back.
            try:
                current = self._redis.get(lease_key)
            except self._errors:
                # Redis stalled: the script may still run when it resumes, and take a
                # lease nobody will use. Forget it at the next lease call.
                self._doubt(lease_key, owner, None, ttl_ms)
                raise BackendUnavailable(
                    f"redis backend {self.url}: {type(first).__name__}"
                ) from first
            if isinstance(current, str) and current.rsplit("|", 1)[0] == owner:
                self._undoubt(lease_key, owner)
                return self._from_value(key, current, ttl)
            if current is None:
                self._doubt(lease_key, owner, None, ttl_ms)
                raise BackendUnavailable(
                    f"redis backend {self.url}: {type(first).__name__}"
                ) from first
            return None
        if int(granted) != 1:
            return None
        self._undoubt(lease_key, owner)  # the owner took it again: it is in use now
        return self._from_value(key, value, ttl)

    def _doubt(self, lease_key: str, owner: str, value: str | None, ttl_ms: int) -> None:
        with self._doubt_lock:
            self._doubtful[lease_key] = (owner, value, time.monotonic() + ttl_ms / 1000)

    def _undoubt(self, lease_key: str, owner: str) -> None:
        with self._doubt_lock:
            if self._doubtful.get(lease_key, ("",))[0] == owner:
                del self._doubtful[lease_key]

    def _forget_doubtful(self) -> None:
        """Delete the leases a stalled call may have taken for an owner that gave up.

        An entry stays until its lease is gone or could no longer exist (its TTL has
        passed): a script stuck in a dead connection's buffer can still run late.
        Errors leave the entries for the next call, which then fails on its own.
        """
        if not self._doubtful:
            return
        with self._doubt_lock:
            doubtful = list(self._doubtful.items())
        now = time.monotonic()
        for lease_key, (owner, value, until) in doubtful:
            if now < until:
                try:
                    if value is None:  # an acquire's: any token of that owner
                        gone = self._forget(keys=[lease_key], args=[owner])
                    else:  # a release's: exactly that lease, never a newer one
                        gone = self._release(keys=[lease_key], args=[value])
                except self._errors:
                    return
                if not int(gone) and value is None:
                    continue  # not (yet) there: the script may still run late
            with self._doubt_lock:
                if self._doubtful.get(lease_key) == (owner, value, until):
                    del self._doubtful[lease_key]

    def _from_value(self, key: str, value: str, ttl: float | None) -> Lease:
        owner, token = value.rsplit("|", 1)
        return Lease(key, owner, int(token), None if ttl is None else time.time() + ttl)

    def renew(self, lease: Lease, ttl: float | None) -> Lease | None:
        ttl_ms = int((ttl if ttl is not None else FOREVER_MS / 1000) * 1000)
        done = self._call(
            lambda: self._renew(
                keys=[self._lease_key(lease.key)], args=[self._value(lease), ttl_ms]
            )
        )
        if not int(done):
            return None
        return Lease(
            lease.key, lease.owner, lease.token, None if ttl is None else time.time() + ttl
        )

    def release(self, lease: Lease) -> bool:
        self._forget_doubtful()
        lease_key = self._lease_key(lease.key)
        try:
            done = self._release(keys=[lease_key], args=[self._value(lease)])
        except self._errors as exc:
            # Whether or not it ran, the owner is done with the lease: make sure of it
            # at the next lease call rather than blocking the symbol for the TTL.
            if lease.expires_at is None:
                self._doubt(lease_key, lease.owner, self._value(lease), FOREVER_MS)
            elif lease.expires_at > time.time():
                remaining_ms = int((lease.expires_at - time.time()) * 1000) + 1
                self._doubt(lease_key, lease.owner, self._value(lease), remaining_ms)
            raise BackendUnavailable(f"redis backend {self.url}: {type(exc).__name__}") from exc
        return bool(int(done))

    def holder(self, key: str) -> Lease | None:
        lease_key = self._lease_key(key)

        def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)  # one round trip
            pipe.get(lease_key)
            pipe.pttl(lease_key)
            return list(pipe.execute())

        value, ttl_ms = self._call(read)
        if not isinstance(value, str):
            return None
        return self._from_value(key, value, ttl_ms / 1000 if ttl_ms and ttl_ms > 0 else None)

    def leases(self, prefix: str = "") -> list[Lease]:
        pattern = self._lease_key(prefix) + "*"
        keys = self._call(lambda: list(self._redis.scan_iter(match=pattern, count=500)))
        found = []
        for lease_key in keys:
            lease = self.holder(lease_key[len(self._lease_key("")) :])
            if lease is not None:
                found.append(lease)
        return sorted(found, key=lambda lease: lease.key)

    # -- journal --------------------------------------------------------------------------
    def record(self, entry: JournalEntry) -> None:
        exit_key = f"{self.prefix}exit:{entry.exit_id}"
        open_key = f"{self.prefix}open:{entry.account}"

        def action() -> None:
            pipe = self._redis.pipeline(transaction=True)
            if entry.state == "settled":
                pipe.delete(exit_key)
                pipe.srem(open_key, entry.exit_id)
            else:
                pipe.set(exit_key, json.dumps(entry.__dict__))
                pipe.sadd(open_key, entry.exit_id)
            pipe.execute()

        self._call(action)

    def in_flight(self, account: str, symbol: str | None = None) -> list[JournalEntry]:
        open_key = f"{self.prefix}open:{account}"
        ids: list[str] = self._call(lambda: sorted(str(i) for i in self._redis.smembers(open_key)))
        if not ids:
            return []
        values = self._call(lambda: self._redis.mget([f"{self.prefix}exit:{i}" for i in ids]))
        entries = []
        for exit_id, value in zip(ids, values, strict=True):
            if value is None:
                self._call(partial(self._redis.srem, open_key, exit_id))
                continue
            entry = JournalEntry(**json.loads(value))
            if symbol in (None, entry.symbol):
                entries.append(entry)
        return entries

    def accounts(self) -> list[str]:
        keys = self._call(
            lambda: list(self._redis.scan_iter(match=f"{self.prefix}open:*", count=500))
        )
        return sorted(k[len(f"{self.prefix}open:") :] for k in keys)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection is not an error
            self._redis.close()

    def raw(self) -> Any:
        """The redis-py client (tests, operators)."""
        return self._redis
