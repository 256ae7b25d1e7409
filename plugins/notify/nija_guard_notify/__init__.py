"""nija-guard plugin: alerts to a Slack, Discord or Telegram webhook.

The guard's hooks only format a short message and hand it to a bounded queue;
a daemon thread posts it (stdlib ``urllib``), with retries, backoff and
per-(event, account, symbol) coalescing. An alert never blocks, slows or breaks
an exit: when the queue is full it is dropped and counted.

Installed, the package registers :data:`plugin` in the ``nija_guard``
entry-point group; it is configured from the environment
(``NIJA_GUARD_NOTIFY_URL``, ``NIJA_GUARD_NOTIFY_STYLE``,
``NIJA_GUARD_NOTIFY_CHAT_ID``) and inert without a URL. Or plug one in yourself::

    from nija_guard_notify import Notifier

    notifier = Notifier("https://hooks.slack.com/services/T000/B000/XXXX")
    exchange = nija_guard.guard(client, plugins=[notifier])
    ...
    notifier.close()

Messages never contain the webhook URL, a token, or the exit's params; logs
(logger ``nija_guard.notify``) name the webhook by scheme and host only.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import logging
import math
import os
import queue
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from nija_guard import Exit, hookimpl

__all__ = ["ENV_CHAT_ID", "ENV_STYLE", "ENV_URL", "STYLES", "Notifier", "Opener", "plugin"]

log = logging.getLogger("nija_guard.notify")

ENV_URL = "NIJA_GUARD_NOTIFY_URL"
ENV_STYLE = "NIJA_GUARD_NOTIFY_STYLE"
ENV_CHAT_ID = "NIJA_GUARD_NOTIFY_CHAT_ID"

STYLES = ("auto", "slack", "discord", "telegram")

# Message length limits: Discord refuses content over 2000 characters, Telegram
# text over 4096; Slack takes more, but an alert has no business being longer.
_LIMITS = {"slack": 3000, "discord": 2000, "telegram": 4096}
_REASON_LIMIT = 200  # a plugin's veto reason, as quoted in an alert
_MAX_KEYS = 4096  # coalescing entries kept before expired ones are pruned
_AT_EXIT_TIMEOUT = 2.0  # how long queued alerts get at interpreter exit
_TELEGRAM_PATH = re.compile(r"^/bot[^/]+/?(sendMessage)?$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{16,}$")
_PLAIN_SEGMENTS = frozenset({"api", "services", "webhooks", "sendMessage"})

_Alert = tuple[str, str]  # (event, message)


class Opener(Protocol):
    """What posts a request: ``urllib.request.OpenerDirector`` or a test double."""

    def open(
        self, fullurl: urllib.request.Request, data: bytes | None = ..., timeout: float | None = ...
    ) -> Any: ...


def _positive(name: str, value: float, *, integer: bool = False, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an int" if integer else "a number"
        raise TypeError(f"Notifier: {name} must be {kind}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"Notifier: {name} must be {bound}, got {value!r}")


def _auto_style(host: str) -> str:
    def on(domain: str) -> bool:
        return host == domain or host.endswith("." + domain)

    if on("hooks.slack.com"):
        return "slack"
    if on("discord.com") or on("discordapp.com"):
        return "discord"
    if host == "api.telegram.org":
        return "telegram"
    return "slack"  # the {"text": ...} shape most chat webhooks accept


def _num(value: float | None) -> str:
    if value is None:
        return "all"
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _account(account: str) -> str:
    """``binance:3f2a9c1b5d7e8f01`` -> ``binance:3f2a9c1b…``: enough to tell accounts apart."""
    venue, sep, rest = account.partition(":")
    if sep and _HEX_DIGEST.match(rest):
        return f"{venue}:{rest[:8]}…"
    return account if len(account) <= 40 else account[:39] + "…"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_name(error: BaseException) -> str:
    """The error's type (and its cause's): never its message, which may hold a URL."""
    name = type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and type(cause) is not type(error):
        name += f" ({type(cause).__name__})"
    return name


def _describe(error: BaseException) -> str:
    """A network error, for a log line: type and OS reason, never a URL."""
    reason: object = error
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        reason = error.reason
    name = type(reason).__name__
    strerror = getattr(reason, "strerror", None)
    return f"{name}: {strerror}" if isinstance(strerror, str) and strerror else name


def _retry_after(headers: Any) -> float | None:
    """A numeric ``Retry-After`` (seconds); an HTTP date or garbage is ignored."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class Notifier:
    """Posts nija-guard alerts to a webhook, off the exit's critical path.

    :param url: the webhook URL (http or https); None makes the notifier inert.
    :param style: ``"slack"`` (``{"text"}``), ``"discord"`` (``{"content"}``,
        2000 characters at most), ``"telegram"`` (``{"chat_id", "text"}`` to
        ``https://api.telegram.org/bot<token>/sendMessage``) or ``"auto"``
        (from the URL's host; any other host gets the Slack shape).
    :param chat_id: the Telegram chat; required for the telegram style.
    :param queue_size: alerts waiting to be sent at most; more are dropped.
    :param max_attempts: tries per alert on network errors, 5xx and 429.
    :param backoff: the first retry's delay in seconds, doubled per try
        (with jitter), at most ``max_backoff``; a numeric ``Retry-After`` of a
        429 or 5xx is used instead (also capped at ``max_backoff``).
    :param min_interval: at most one alert per (event, account, symbol) this
        often, in seconds; 0 sends every alert.
    :param timeout: the HTTP timeout of one attempt, in seconds.
    :param opener: what posts the request (``urllib.request.build_opener()``
        by default, which honours the ``*_proxy`` environment variables).
    :param clock: monotonic seconds, for coalescing (tests may pass a fake).

    Counters: :attr:`sent`, :attr:`failed` (given up after retries, or refused
    with a 4xx), :attr:`dropped` (queue full, or after :meth:`close`),
    :attr:`suppressed` (coalesced into a later alert).
    """

    def __init__(
        self,
        url: str | None,
        *,
        style: str = "auto",
        chat_id: str | int | None = None,
        queue_size: int = 1000,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        min_interval: float = 60.0,
        timeout: float = 5.0,
        opener: Opener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(style, str) or style.lower() not in STYLES:
            raise ValueError(f"Notifier: style must be one of {', '.join(STYLES)}; got {style!r}")
        _positive("queue_size", queue_size, integer=True)
        _positive("max_attempts", max_attempts, integer=True)
        _positive("backoff", backoff, zero=True)
        _positive("max_backoff", max_backoff, zero=True)
        _positive("min_interval", min_interval, zero=True)
        _positive("timeout", timeout)
        if chat_id is not None and (not isinstance(chat_id, (str, int)) or not str(chat_id)):
            raise ValueError("Notifier: chat_id must be a non-empty string")

        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.min_interval = float(min_interval)
        self.timeout = float(timeout)
        self.chat_id = None if chat_id is None else str(chat_id)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.suppressed = 0

        self._url: str | None = None
        self._target = "-"  # scheme://host[:port], all a log line may say of the URL
        self._secrets: tuple[str, ...] = ()
        self.style = style.lower()
        if url is not None:
            self._url, self._target, self._secrets, self.style = self._parse(url, self.style)
            if self.style == "telegram" and self.chat_id is None:
                raise ValueError(
                    "Notifier: the telegram style needs chat_id "
                    f"(or {ENV_CHAT_ID} for the entry-point plugin)"
                )

        self._opener: Opener = opener if opener is not None else urllib.request.build_opener()
        self._clock = clock
        self._queue: queue.Queue[_Alert | None] = queue.Queue(queue_size)
        self._cond = threading.Condition()  # guards everything below and the counters
        self._recent: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._pending = 0  # queued or being sent
        self._overflowing = False
        self._closed = False
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @staticmethod
    def _parse(url: str, style: str) -> tuple[str, str, tuple[str, ...], str]:
        if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 for c in url):
            raise ValueError("Notifier: the webhook URL must be a string without whitespace")
        try:
            parts = urllib.parse.urlsplit(url)
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            raise ValueError("Notifier: the webhook URL could not be parsed") from None
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise ValueError(
                "Notifier: the webhook URL must be an http:// or https:// URL with a host "
                f"(got scheme {parts.scheme.lower()!r})"
            )
        shown_host = f"[{host}]" if ":" in host else host
        target = f"{parts.scheme.lower()}://{shown_host}" + (f":{port}" if port else "")
        if style == "auto":
            style = _auto_style(host)
        if style == "telegram":
            if not _TELEGRAM_PATH.match(parts.path):
                raise ValueError(
                    "Notifier: a telegram URL looks like "
                    "https://api.telegram.org/bot<token>/sendMessage"
                )
            if not parts.path.endswith("/sendMessage"):
                path = parts.path.rstrip("/") + "/sendMessage"
                url = urllib.parse.urlunsplit(parts._replace(path=path))
        secrets = {url, parts.path, parts.query, parts.password or ""}
        segments = [seg for seg in parts.path.split("/") if seg not in _PLAIN_SEGMENTS]
        secrets.update(segments)
        secrets.update(seg.removeprefix("bot") for seg in segments)  # a telegram token
        kept = sorted((s for s in secrets if len(s) >= 8), key=len, reverse=True)
        return url, target, tuple(kept), style

    # -- configuration from the environment -----------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier configured by ``NIJA_GUARD_NOTIFY_URL``/``_STYLE``/``_CHAT_ID``.

        Without a URL it is inert. A bad configuration is logged (without the
        URL) and also gives an inert notifier: it must not break the loading of
        the guard's other plugins.
        """
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL, "").strip() or None
        style = env.get(ENV_STYLE, "").strip().lower() or "auto"
        chat_id = env.get(ENV_CHAT_ID, "").strip() or None
        if url is None:
            return cls(None)
        try:
            return cls(url, style=style, chat_id=chat_id)
        except ValueError as exc:
            log.error(
                "%s is set but the notifier cannot use it: %s; alerts are off",
                ENV_URL,
                exc,
                extra={"nija_guard": {"event": "notify_config_error"}},
            )
            return cls(None)

    @property
    def enabled(self) -> bool:
        """Whether alerts go anywhere (a URL was given)."""
        return self._url is not None

    def __repr__(self) -> str:
        if not self.enabled:
            return "<Notifier inert>"
        return (
            f"<Notifier {self.style} {self._target} sent={self.sent} failed={self.failed} "
            f"dropped={self.dropped} suppressed={self.suppressed}>"
        )

    # -- hooks: format, enqueue, return ---------------------------------------------------
    @hookimpl
    def nija_guard_exit_blocked(self, exit: Exit, holder: Exit | None, reason: str) -> None:
        if self._url is None:
            return
        text = f"duplicate exit of {exit.symbol} blocked ({reason}) on {_account(exit.account)}"
        if holder is not None:
            state = holder.outcome.value if holder.outcome is not None else "in flight"
            text += (
                f"; the lock is held by exit {holder.exit_id} "
                f"({holder.type} sell of {_num(holder.amount or holder.requested_amount)}, {state})"
            )
        elif reason == "in_progress":
            text += "; the lock is held by another process"
        self._alert("exit_blocked", exit, text)

    @hookimpl
    def nija_guard_dust_detected(self, exit: Exit, amount: float, reason: str) -> None:
        if self._url is None:
            return
        self._alert(
            "dust_detected",
            exit,
            f"dust position on {exit.symbol} ({_num(amount)} left: "
            f"{_one_line(reason, _REASON_LIMIT)}) on {_account(exit.account)}; no order sent",
        )

    @hookimpl
    def nija_guard_outcome_unknown(self, exit: Exit, error: BaseException) -> None:
        if self._url is None:
            return
        self._alert(
            "outcome_unknown",
            exit,
            f"outcome UNKNOWN of exit {exit.exit_id} ({exit.type} sell of "
            f"{_num(exit.amount or exit.requested_amount)} {exit.symbol}) on "
            f"{_account(exit.account)} after {_error_name(error)}; {exit.symbol} stays locked "
            "until the guard reconciles it",
        )

    @hookimpl
    def nija_guard_exit_vetoed(self, exit: Exit, reason: str) -> None:
        if self._url is None:
            return
        self._alert(
            "exit_vetoed",
            exit,
            f"exit of {exit.symbol} vetoed ({_one_line(reason, _REASON_LIMIT)}) on "
            f"{_account(exit.account)}; nothing sent",
        )

    @hookimpl
    def nija_guard_backend_failed(self, exit: Exit, error: BaseException) -> None:
        if self._url is None:
            return
        self._alert(
            "backend_failed",
            exit,
            f"lock backend failed ({_error_name(error)}): exit of {exit.symbol} on "
            f"{_account(exit.account)} refused (fails closed), nothing sent",
        )

    @hookimpl
    def nija_guard_guard_closed(self) -> None:
        """A guard closed: send what is queued (briefly; never for long)."""
        if self._url is not None:
            self.flush(timeout=2.0)

    def _alert(self, event: str, exit: Exit, text: str) -> None:
        """Coalesce, then enqueue without waiting: this runs on the exit's thread."""
        key = (event, exit.account, exit.symbol)
        overflow = False
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            now = self._clock()
            last = self._recent.get(key)
            if last is not None and now - last[0] < self.min_interval:
                self._recent[key] = (last[0], last[1] + 1)
                self.suppressed += 1
                return
            similar = last[1] if last is not None else 0
            message = f"nija-guard: {text}" + (f" (+{similar} similar)" if similar else "")
            try:
                self._queue.put_nowait((event, self._scrub(message)))
            except queue.Full:
                self.dropped += 1
                overflow, self._overflowing = not self._overflowing, True
            else:
                if len(self._recent) >= _MAX_KEYS:
                    self._prune(now)
                self._recent[key] = (now, 0)
                self._pending += 1
                if self._worker is None:
                    self._start()
        if overflow:  # once per overflow, not per dropped alert
            log.warning(
                "notify queue full (%d): alerts are being dropped",
                self.queue_size,
                extra=self._extra("notify_dropped", alert=event, dropped=self.dropped),
            )

    def _prune(self, now: float) -> None:
        for key, (at, _) in list(self._recent.items()):
            if now - at >= self.min_interval:
                del self._recent[key]

    def _start(self) -> None:
        self._worker = threading.Thread(target=self._run, name="nija-guard-notify", daemon=True)
        self._worker.start()
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if self._stop.is_set():
                self._discard()
                return
            item = self._queue.get()
            if item is None:  # close() waking us up
                continue
            event, text = item
            try:
                ok = self._deliver(event, text)
            except Exception as exc:  # a bug here must not kill the worker
                ok = False
                log.error(
                    "notify: sending a %s alert failed unexpectedly: %s",
                    event,
                    type(exc).__name__,
                    extra=self._extra("notify_error", alert=event),
                )
            with self._cond:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
                self._pending -= 1
                if self._queue.empty():
                    self._overflowing = False
                self._cond.notify_all()

    def _discard(self) -> None:
        """After close() gave up draining: what is left is dropped (and counted)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                with self._cond:
                    self.dropped += 1
                    self._pending -= 1
                    self._cond.notify_all()

    def _payload(self, text: str) -> dict[str, Any]:
        text = text[: _LIMITS[self.style] - 1] + "…" if len(text) > _LIMITS[self.style] else text
        if self.style == "discord":
            return {"content": text, "allowed_mentions": {"parse": []}}
        if self.style == "telegram":
            return {"chat_id": self.chat_id, "text": text, "disable_web_page_preview": True}
        # Slack reads <...> as links and mentions; & < > must be escaped.
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": escaped}

    def _deliver(self, event: str, text: str) -> bool:
        """Post one alert, retrying what may succeed later. True when it was accepted."""
        if self._url is None:  # the worker only runs with a URL
            return False
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked: http(s) only
            self._url,
            data=json.dumps(self._payload(text)).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "nija-guard-notify/0.1"},
        )
        problem, attempt = "", 0
        for attempt in range(1, self.max_attempts + 1):
            status: int | None = None
            wait: float | None = None
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    status = int(getattr(response, "status", None) or response.getcode())
                    response.read(65536)
            except urllib.error.HTTPError as exc:
                status = exc.code
                wait = _retry_after(exc.headers)
                exc.close()
                problem = f"HTTP {status}"
                if status != 429 and status < 500:
                    log.error(
                        "notify: %s refused the %s alert with %s; not retried",
                        self._target,
                        event,
                        problem,
                        extra=self._extra("notify_failed", alert=event, status=status),
                    )
                    return False
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
                problem = _describe(exc)
            else:
                log.debug(
                    "notify: %s alert sent to %s (HTTP %s)",
                    event,
                    self._target,
                    status,
                    extra=self._extra("notify_sent", alert=event, status=status, attempt=attempt),
                )
                return True
            if attempt == self.max_attempts:
                break
            delay = self._delay(attempt, wait)
            log.warning(
                "notify: %s from %s for the %s alert; retry %d/%d in %.2fs",
                problem,
                self._target,
                event,
                attempt + 1,
                self.max_attempts,
                delay,
                extra=self._extra(
                    "notify_retry",
                    alert=event,
                    status=status,
                    attempt=attempt,
                    delay=delay,
                    error=problem,
                ),
            )
            if self._stop.wait(delay):  # close() gave up waiting: so do we
                break
        log.error(
            "notify: giving up on the %s alert to %s after %d attempt(s): %s",
            event,
            self._target,
            attempt,
            problem,
            extra=self._extra(
                "notify_failed", alert=event, status=status, attempt=attempt, error=problem
            ),
        )
        return False

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        base = min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 60))
        return base / 2 + random.uniform(0, base / 2)  # noqa: S311 - jitter, not cryptography

    def _extra(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"nija_guard": {"event": event, "target": self._target, **fields}}

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- lifecycle --------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert was sent (or given up); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is queued (for up to ``timeout`` seconds), then stop the worker.

        Idempotent. Alerts that come later are dropped (and counted). Returns
        whether everything queued went out (or was given up on) in time.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            worker = self._worker
        if worker is None:
            return True
        drained = self.flush(max(0.0, deadline - time.monotonic()))
        self._stop.set()  # cuts retry waits short; leftovers are dropped
        # A full queue means a busy worker: it sees the stop flag after its current alert.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        worker.join(max(0.0, deadline - time.monotonic()))
        return drained


def _close_at_exit(ref: weakref.ref[Notifier]) -> None:
    notifier = ref()
    if notifier is not None:
        notifier.close(_AT_EXIT_TIMEOUT)


#: The entry-point plugin, configured from the environment (inert without a URL).
plugin = Notifier.from_env()
