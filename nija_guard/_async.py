"""The async driver: performs the engine's effects with ``await``.

Same engine, same book as the sync driver. Nothing here holds a threading lock
across an await: the book's mutex guards only short critical sections, and
every wait (a lock release, a shared balance fetch) is a future woken with
``call_soon_threadsafe``, so tasks of one loop and threads running their own
loops exclude each other through the same book.

The tracker is a task on the client's loop, alive only while orders of this
guard await a final status. On a ccxt.pro client it also runs ``watch_orders``
and feeds what the stream says to the engine; polling stays on as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ._backend import Backend, Lease
from ._book import BalanceFlight, Book, ExitRecord
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
from ._hooks import Hooks
from ._sync import _inside, backend_effect

__all__ = ["AsyncDriver"]

log = logging.getLogger("nija_guard")


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def _being_cancelled() -> bool:
    """Whether the current task is being cancelled (not a CancelledError some code raised).

    Python 3.10 cannot tell: it counts as a real cancellation there.
    """
    task = asyncio.current_task()
    if task is None:
        return True
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _waker(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> Callable[[], None]:
    """A callback any thread may call to wake ``future`` on its own loop."""

    def wake() -> None:
        # The loop may close between the check and the call: a waiter of a closed loop
        # is gone anyway, and the other waiters must still be woken.
        with contextlib.suppress(RuntimeError):
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    return wake


class AsyncDriver:
    def __init__(
        self, engine: Engine, client: Any, backend: Backend, hooks: Hooks, book: Book
    ) -> None:
        self.engine = engine
        self.client = client
        self.backend = backend
        self.hooks = hooks
        self.book = book
        self.calls: dict[str, int] = {}
        self.tracker = AsyncTracker(self)
        self.keeper = AsyncLeaseKeeper(self)

    async def run(self, flow: Flow[Any]) -> Any:
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
                    # Cancelled: the engine may have left an UNKNOWN record to reconcile.
                    self.tracker.wake()
                raise
            send, error = None, None
            try:
                send = await self._perform(effect)
            except BaseException as exc:  # thrown back into the flow, which decides
                error = exc

    async def _perform(self, effect: Any) -> Any:
        kind = type(effect)
        if kind is Call:
            self.calls[effect.purpose] = self.calls.get(effect.purpose, 0) + 1
            method = self.engine.adapter.operation(self.client, effect.method)
            if effect.span is not None and effect.span.is_recording():
                with _inside(effect.span):  # the task's own context: safe across the await
                    result = method(*effect.args, **effect.kwargs)
                    return (await result) if inspect.isawaitable(result) else result
            result = method(*effect.args, **effect.kwargs)
            return (await result) if inspect.isawaitable(result) else result
        if kind is FetchBalance:
            return await self._fetch_balance(effect)
        if kind is WaitRelease:
            return await self._wait_release(effect)
        if kind is Sleep:
            await asyncio.sleep(effect.seconds)
            return None
        if kind is Notify:
            return await self._notify(effect)
        if kind is Ask:
            return await self._ask(effect)
        if kind is Collect:
            return await self.hooks.collect_async(effect.hook, dict(effect.kwargs))
        if kind in (Acquire, Release, Renew, Scan, Journal, Leases, Holder):
            if kind is Acquire and self.backend.durable:
                result = await self._acquire(effect)
            elif self.backend.durable:
                # SQLite and Redis clients block: keep the loop free.
                result = await asyncio.to_thread(backend_effect, self, effect)
            else:
                result = backend_effect(self, effect)
            if kind is Acquire and result is not None and self.backend.durable:
                self.keeper.wake()
            return result
        if kind is Track:
            self.tracker.wake()
            return None
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover

    # -- effects ------------------------------------------------------------------------
    async def _acquire(self, effect: Acquire) -> Any:
        """Take a lease in a thread. Cancelled meanwhile, the thread still runs: a lease
        it takes belongs to no exit, and would keep the key from everyone until it
        expires. Whichever side comes second (the thread, or the cancellation) gives
        it back, whether or not the loop is still running."""
        lock = threading.Lock()
        state: dict[str, Any] = {"abandoned": False, "lease": None}

        def take() -> Any:
            lease = backend_effect(self, effect)
            with lock:
                state["lease"] = lease
                abandoned = state["abandoned"]
            if abandoned and lease is not None:
                self._release_quietly(lease)
            return lease

        try:
            return await asyncio.to_thread(take)
        except asyncio.CancelledError:
            with lock:
                state["abandoned"] = True
                lease = state["lease"]
            if lease is not None:  # taken, but the flow never saw it: not the loop's job
                threading.Thread(target=self._release_quietly, args=(lease,)).start()
            raise

    def _release_quietly(self, lease: Lease) -> None:
        try:
            backend_effect(self, Release(lease))
        except Exception:
            log.warning("could not give back the lease %s of a cancelled exit", lease.key)

    async def _wait_flight(self, flight: BalanceFlight) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self.book.balance_subscribe(flight, _waker(loop, future)):
            await future

    async def _fetch_balance(self, effect: FetchBalance) -> tuple[Any, int, int]:
        """Single flight, shared with every task and thread of the account."""
        while True:
            kind, flight = self.book.balance_plan(effect.ticket, effect.what)
            if kind == "lead":
                try:
                    if flight.after is not None:
                        await self._wait_flight(flight.after)
                        self.book.balance_start(flight, int(time.time() * 1000))
                    self.calls[effect.what] = self.calls.get(effect.what, 0) + 1
                    flight.result = await self.engine.adapter.operation(
                        self.client,
                        FETCHES[effect.what],
                    )()
                except BaseException as exc:
                    flight.error = exc
                    raise
                finally:
                    self.book.balance_done(flight)
            elif kind == "join":
                await self._wait_flight(flight)
                if flight.abandoned:
                    continue  # its leader was cancelled: plan again
            if flight.error is not None:
                raise flight.error
            return flight.result, flight.started_ms, flight.ticket

    async def _wait_release(self, effect: WaitRelease) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        wake = _waker(loop, future)
        if not self.book.add_waiter(effect.key, effect.generation, wake):
            return True  # released already: try again at once
        try:
            await asyncio.wait_for(future, effect.timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self.book.remove_waiter(effect.key, wake)

    async def _notify(self, effect: Notify) -> None:
        if effect.span is not None:
            with _inside(effect.span):
                pending = self.hooks.notify(effect.hook, dict(effect.kwargs))
        else:
            pending = self.hooks.notify(effect.hook, dict(effect.kwargs))
        for index, (hook, plugin, awaitable) in enumerate(pending):
            # Awaited one by one, each isolated like a sync hookimpl.
            try:
                await awaitable
            except Exception as exc:
                self.hooks._failed(hook, plugin, exc)
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    for _, _, rest in pending[index + 1 :]:  # never awaited: closed, quietly
                        close = getattr(rest, "close", None)
                        if close is not None:
                            close()
                    raise
                self.hooks._failed(hook, plugin, exc)  # a hook's own CancelledError

    async def _ask(self, effect: Ask) -> Any:
        try:
            return await self.hooks.ask_async(effect.hook, dict(effect.kwargs))
        except Exception as exc:
            log.error("policy hook %s raised; the exit is vetoed", effect.hook, exc_info=exc)
            return f"policy hook {effect.hook} raised {type(exc).__name__}"


def _detached(coro: Any, name: str) -> asyncio.Task[None]:
    """A task in an empty context: it must not run inside the span of whichever
    exit happened to start it (its spans link to their exits instead)."""
    loop = asyncio.get_running_loop()
    task: asyncio.Task[None] = contextvars.Context().run(loop.create_task, coro, name=name)
    return task


class AsyncTracker:
    """The guard's background task(s) on the client's loop."""

    def __init__(self, driver: AsyncDriver) -> None:
        self.driver = driver
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._woken: asyncio.Event | None = None
        self._woken_loop: asyncio.AbstractEventLoop | None = None
        self.orphaned: Callable[[], None] | None = None  # set by the guard when it closes
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        if self._closed:
            if self.orphaned is not None:
                self.orphaned()  # tracked after its guard closed: another guard's to follow
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self.loop is None or self.loop.is_closed():
            if loop is None:
                return  # not on a loop: the next call on one starts tracking
            self.loop = loop  # the first loop, or a new one after it closed
        if loop is self.loop:
            self._start()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._closed:
            return
        if self._woken is None or self._woken_loop is not self.loop:
            # An asyncio.Event belongs to the loop that first waits on it: a new loop
            # (the first closed) needs its own, or the new tracker task dies at once.
            self._woken, self._woken_loop = asyncio.Event(), self.loop
        self._woken.set()
        if self._task is None or self._task.done():
            self._task = _detached(self._run(), "nija-guard-tracker")
        has = getattr(self.driver.client, "has", None)
        if (
            isinstance(has, dict)
            and has.get("watchOrders")
            and (self._watch is None or self._watch.done())
        ):
            self._watch = _detached(self._stream(), "nija-guard-watch-orders")

    async def _run(self) -> None:
        engine = self.driver.engine
        spacing = 1.0 / engine.options.max_polls_per_second
        assert self._woken is not None  # noqa: S101 - set by _start before the task exists
        try:
            while not self._closed:
                self._woken.clear()
                due, soonest = engine.due(engine.clock())
                for rec in due:
                    await self._poll(rec)
                    await asyncio.sleep(spacing)  # the rate bound
                if due:
                    continue
                if soonest is None:
                    return  # nothing left to track: the task ends
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), max(0.0, soonest - engine.clock()))
        finally:
            if self._watch is not None and not self._watch.done() and not self._closed:
                self._watch.cancel()

    async def _poll(self, rec: ExitRecord) -> None:
        try:
            await self.driver.run(self.driver.engine.poll(rec))
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and (self._closed or _being_cancelled()):
                raise  # the tracker itself is being cancelled
            log.exception(
                "tracker poll failed",
                extra={"nija_guard": {"event": "poll_failed", "exit_id": rec.exit.exit_id}},
            )
            self.driver.engine._schedule(rec, progressed=False)

    async def _stream(self) -> None:
        """ccxt.pro: order updates pushed by the exchange settle records at once."""
        client, engine = self.driver.client, self.driver.engine
        failures = 0
        while not self._closed:
            try:
                orders = await client.watch_orders()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = min(failures + 1, 16)  # the backoff tops out at 30 s anyway
                log.warning("watch_orders failed (%s); polling continues", type(exc).__name__)
                engine.stream_lost()
                self.wake()  # what the stream reported is due for a poll now
                await asyncio.sleep(min(30.0, engine.options.poll_interval * 2**failures))
                continue
            try:
                await self.driver.run(engine.observe("watch_orders", (), list(orders or [])))
            except Exception:
                log.exception("could not learn from watch_orders")

    def poll_once(self) -> int:
        raise RuntimeError("use 'await exchange.nija_guard.apoll()' on an async guard")

    async def apoll_once(self) -> int:
        engine = self.driver.engine
        due, _ = engine.due(engine.clock())
        for rec in due:
            await self._poll(rec)
        return len(due)

    async def aclose(self) -> None:
        """Cancel the tracker and stream tasks and wait for them to end."""
        self._closed = True
        self.driver.engine.stream_lost()  # other guards' orders it reported: theirs to poll
        tasks = [t for t in (self._task, self._watch) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("tracker task failed while closing")

    def close(self, timeout: float = 5.0) -> None:
        """Sync close: stop tracking; tasks are cancelled on their loop."""
        self._closed = True
        self.driver.engine.stream_lost()  # other guards' orders it reported: theirs to poll
        for task in (self._task, self._watch):
            if (
                task is not None
                and not task.done()
                and self.loop is not None
                and not self.loop.is_closed()
            ):
                self.loop.call_soon_threadsafe(task.cancel)


class AsyncLeaseKeeper:
    """The async guard's lease renewal task (durable backends)."""

    def __init__(self, driver: AsyncDriver) -> None:
        self.driver = driver
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def wake(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = _detached(self._run(), "nija-guard-leases")

    async def _run(self) -> None:
        engine = self.driver.engine
        while not self._closed:
            await asyncio.sleep(engine.options.lease_ttl / 3)
            if not self.driver.book.lease_holders(engine):
                return
            try:
                await self.driver.run(engine.renew_leases())
            except Exception:
                log.exception("lease renewal failed")

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            loop = self._task.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._task.cancel)
