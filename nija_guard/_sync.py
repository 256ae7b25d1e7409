"""The sync driver: performs the engine's effects on the calling thread.

Also the tracker: one daemon thread per guard, alive only while orders of
that guard await a final status, polling them at a bounded rate with backoff.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from ._backend import Backend, Lease
from ._book import Book
from ._engine import (
    FETCHES,
    Acquire,
    Ask,
    Call,
    Collect,
    Engine,
    FetchBalance,
    Flow,
    Holder,
    Journal,
    Leases,
    Notify,
    Release,
    Renew,
    Scan,
    Sleep,
    Track,
    WaitRelease,
)
from ._errors import BackendUnavailable
from ._hooks import Hooks

__all__ = ["SyncDriver"]

log = logging.getLogger("nija_guard")


def _inside(span: Any) -> Any:
    """Make ``span`` current; errors are the engine's to record, once, on the exit span."""
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


class SyncDriver:
    def __init__(
        self, engine: Engine, client: Any, backend: Backend, hooks: Hooks, book: Book
    ) -> None:
        self.engine = engine
        self.client = client
        self.backend = backend
        self.hooks = hooks
        self.book = book
        self.calls: dict[str, int] = {}
        self.tracker = Tracker(self)
        self.keeper = LeaseKeeper(self)
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Call: self._call,
            FetchBalance: self._fetch_balance,
            WaitRelease: self._wait_release,
            Sleep: lambda e: time.sleep(e.seconds),
            Notify: self._notify,
            Ask: self._ask,
            Collect: lambda e: self.hooks.collect(e.hook, dict(e.kwargs)),
            Acquire: self._backend_effect,
            Release: self._backend_effect,
            Renew: self._backend_effect,
            Scan: self._backend_effect,
            Leases: self._backend_effect,
            Holder: self._backend_effect,
            Journal: self._backend_effect,
            Track: lambda e: self.tracker.wake(),
        }

    def run(self, flow: Flow[Any]) -> Any:
        """Drive a flow to its end; its return value or exception is ours."""
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.send(send) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value
            except BaseException as exc:
                if not isinstance(exc, Exception) or self.book.tracked:
                    # Interrupted: the engine may have left an UNKNOWN record for the tracker.
                    self.tracker.wake()
                raise
            send, error = None, None
            try:
                send = self._handlers[type(effect)](effect)
            except BaseException as exc:  # thrown back into the flow, which decides
                error = exc

    # -- effects ------------------------------------------------------------------------
    def _call(self, effect: Call) -> Any:
        self.calls[effect.purpose] = self.calls.get(effect.purpose, 0) + 1
        method = self.engine.adapter.operation(self.client, effect.method)
        if effect.span is not None and effect.span.is_recording():
            # An HTTP client instrumentation nests under our stage span.
            with _inside(effect.span):
                return method(*effect.args, **effect.kwargs)
        return method(*effect.args, **effect.kwargs)

    def _fetch_balance(self, effect: FetchBalance) -> tuple[Any, int, int]:
        """Single flight: one fetch_balance serves every exit admitted before it started."""
        while True:
            kind, flight = self.book.balance_plan(effect.ticket, effect.what)
            if kind == "lead":
                try:
                    if flight.after is not None:
                        self.book.event_of(flight.after).wait()
                        self.book.balance_start(flight, int(time.time() * 1000))
                    self.calls[effect.what] = self.calls.get(effect.what, 0) + 1
                    flight.result = self.engine.adapter.operation(
                        self.client,
                        FETCHES[effect.what],
                    )()
                except BaseException as exc:
                    flight.error = exc
                    raise
                finally:
                    self.book.balance_done(flight)
            elif kind == "join":
                self.book.event_of(flight).wait()
                if flight.abandoned:
                    continue  # its leader was interrupted: plan again
            if flight.error is not None:
                raise flight.error
            return flight.result, flight.started_ms, flight.ticket

    def _wait_release(self, effect: WaitRelease) -> bool:
        woken = threading.Event()
        if not self.book.add_waiter(effect.key, effect.generation, woken.set):
            return True  # released already: try again at once
        try:
            return woken.wait(effect.timeout)
        finally:
            self.book.remove_waiter(effect.key, woken.set)

    def _notify(self, effect: Notify) -> None:
        if effect.span is not None:
            with _inside(effect.span):
                pending = self.hooks.notify(effect.hook, dict(effect.kwargs))
        else:
            pending = self.hooks.notify(effect.hook, dict(effect.kwargs))
        for hook, plugin, awaitable in pending:
            log.warning("async hook %s of %s ignored: this guard wraps a sync client", hook, plugin)
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()

    def _ask(self, effect: Ask) -> Any:
        try:
            if effect.span is not None:
                with _inside(effect.span):
                    answer = self.hooks.ask(effect.hook, dict(effect.kwargs))
            else:
                answer = self.hooks.ask(effect.hook, dict(effect.kwargs))
        except Exception as exc:
            # A broken policy must not let exits through: fail closed.
            log.error("policy hook %s raised; the exit is vetoed", effect.hook, exc_info=exc)
            return f"policy hook {effect.hook} raised {type(exc).__name__}"
        if inspect.isawaitable(answer):
            # An async policy on a sync guard: its answer cannot be had. Fail closed, say why.
            close = getattr(answer, "close", None)
            if close is not None:
                close()
            log.error("policy hook %s is async; a sync guard cannot await it", effect.hook)
            return f"policy hook {effect.hook} is async; a sync guard cannot await it"
        return answer

    def _backend_effect(self, effect: Any) -> Any:
        result = backend_effect(self, effect)
        if isinstance(effect, Acquire) and result is not None and self.backend.durable:
            self.keeper.wake()
        return result


def backend_effect(driver: Any, effect: Any) -> Any:
    """Perform a lease or journal effect; fail closed, or degrade loudly if asked to."""
    backend = driver.backend
    options = driver.engine.options
    ttl = options.lease_ttl if backend.durable else None
    try:
        if isinstance(effect, Acquire):
            return backend.acquire(effect.key, effect.owner, ttl)
        if isinstance(effect, Renew):
            return backend.renew(effect.lease, ttl)
        if isinstance(effect, Release):
            return backend.release(effect.lease)
        if isinstance(effect, Journal):
            return backend.record(effect.entry)
        if isinstance(effect, Scan):
            return backend.in_flight(effect.account, effect.symbol)
        if isinstance(effect, Leases):
            return backend.leases(effect.prefix)
        if isinstance(effect, Holder):
            return backend.holder(effect.key)
        raise TypeError(f"not a backend effect: {effect!r}")  # pragma: no cover
    except Exception as exc:
        error = (
            exc
            if isinstance(exc, BackendUnavailable)
            else BackendUnavailable(f"lock backend {backend.url} failed: {type(exc).__name__}")
        )
        if options.on_backend_failure != "local":
            raise error from exc
        # Degraded mode, opted into: exclusion in this process only. Said loudly, every time.
        driver.book.count("degraded")
        log.error(
            "DEGRADED: lock backend %s failed (%s); exits of %s use in-process locks only "
            "and other processes are NOT excluded",
            backend.url,
            type(exc).__name__,
            driver.book.account,
            extra={"nija_guard": {"event": "degraded", "account": driver.book.account}},
        )
        if isinstance(effect, Acquire):
            return Lease(effect.key, effect.owner, 0, None)
        if isinstance(effect, Renew):
            return effect.lease
        if isinstance(effect, Release):
            return True
        if isinstance(effect, (Scan, Leases)):
            return []
        return None


class LeaseKeeper:
    """Renews this guard's leases (durable backends) every ``lease_ttl / 3`` while any is held."""

    def __init__(self, driver: SyncDriver) -> None:
        self.driver = driver
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def wake(self) -> None:
        with self._cond:
            if self._closed or self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._loop, name=f"nija-guard-leases-{self.driver.book.account}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _loop(self) -> None:
        engine = self.driver.engine
        interval = engine.options.lease_ttl / 3
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    self._cond.wait(interval)
                    if self._closed:
                        return
                if not self.driver.book.lease_holders(engine):
                    return  # nothing held: the thread ends; the next lease wakes a new one
                try:
                    self.driver.run(engine.renew_leases())
                except Exception:
                    log.exception("lease renewal failed")
        finally:
            with self._cond:
                self._thread = None


class Tracker:
    """Polls this guard's unsettled orders in a daemon thread that lives while there are any."""

    def __init__(self, driver: SyncDriver) -> None:
        self.driver = driver
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pending = False
        self._closed = False
        self.orphaned: Callable[[], None] | None = None  # set by the guard when it closes

    def wake(self) -> None:
        with self._cond:
            closed = self._closed
        if closed:
            if self.orphaned is not None:
                self.orphaned()  # tracked after its guard closed: another guard's to follow
            return
        with self._cond:
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop,
                    name=f"nija-guard-tracker-{self.driver.book.account}",
                    daemon=True,
                )
                self._thread.start()
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None

    def poll_once(self) -> int:
        """Run every due poll now, on this thread. Returns how many ran."""
        engine = self.driver.engine
        due, _ = engine.due(engine.clock())
        for rec in due:
            self._poll(rec)
        return len(due)

    def _poll(self, rec: Any) -> None:
        try:
            self.driver.run(self.driver.engine.poll(rec))
        except BaseException:  # even a hook's SystemExit must not end tracking
            log.exception(
                "tracker poll failed",
                extra={"nija_guard": {"event": "poll_failed", "exit_id": rec.exit.exit_id}},
            )
            self.driver.engine._schedule(rec, progressed=False)

    def _loop(self) -> None:
        try:
            self._track()
        finally:
            # However the loop ended (even by SystemExit from a hook), the next
            # wake() must be able to start a new one.
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _track(self) -> None:
        engine = self.driver.engine
        spacing = 1.0 / engine.options.max_polls_per_second
        while True:
            with self._cond:
                self._pending = False
                if self._closed:
                    self._thread = None
                    return
            due, soonest = engine.due(engine.clock())
            for rec in due:
                self._poll(rec)
                with self._cond:
                    if self._closed:
                        break
                    self._cond.wait(spacing)  # the rate bound
            with self._cond:
                if self._closed:
                    self._thread = None
                    return
                if not due and soonest is None and not self._pending:
                    self._thread = None  # nothing to track: the thread ends
                    return
                if not due and not self._pending and soonest is not None:
                    self._cond.wait(max(0.0, soonest - engine.clock()))
