"""The exit engine: one state machine for every exit, sans I/O.

Every procedure here is a generator. It *yields* what it needs done (a
broker call, a balance from the account's single flight, a wait for a lock,
a hook call, a sleep) and receives the result, or the exception, back. The
sync driver (``_sync.py``) performs effects on the calling thread; an async
driver performs them with ``await``. The engine itself has no threads, no
awaits and no sockets, so tests can drive it step by step.

:meth:`Engine.exit` reads top to bottom as the guarantees:

1. close lock: at most one exit per (account, symbol);
2. exit lock until the order is final on the exchange;
3. immediate flush of the symbol's state on a full close;
4. balance refresh before every submit;
5. clamp to actual holdings, rounded down, dust refused;
6. a guard-made client order id; an unknown outcome locks until reconciled;
7. in ledger mode, never sell more than the bot owns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import ccxt
from opentelemetry.trace import INVALID_SPAN

from ._adapter import Adapter, EntryPoint, OrderCall
from ._backend import JournalEntry, Lease
from ._book import ACCOUNT_WIDE, Book, ExitRecord
from ._errors import (
    BackendUnavailable,
    DustPosition,
    ExitInProgress,
    ExitVetoed,
    GuardError,
    NothingToSell,
    OutcomeUnknown,
)
from ._hooks import Hooks
from ._model import (
    NO_PARAMS,
    ZERO,
    Exit,
    MarketInfo,
    OrderView,
    Outcome,
    Phase,
    divide_down,
    make_exit,
    outcome_of,
    redact,
    to_decimal,
    to_float,
    unique_id,
)
from ._options import ON_CONFLICT, Options
from ._telemetry import Telemetry

__all__ = ["Engine", "Flow"]

log = logging.getLogger("nija_guard")

# The lease an exit holds when the backend is this process's memory: the book's
# close lock already excludes every other exit, so no backend call is made.
LOCAL_LEASE = Lease("", "local", 0, None)
T = TypeVar("T")


# -- effects: what the engine asks its driver to do -------------------------------------
# Not frozen: a frozen dataclass's __init__ pays a setattr call per field, and a few
# effects are made for every exit. Nobody changes an effect once it is yielded.
@dataclass(slots=True)
class Call:
    """Call ``method`` on the raw client; the reply (or its exception) comes back."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    purpose: str = "call"
    span: Any = None  # the stage span a client instrumentation should nest under


@dataclass(slots=True)
class FetchBalance:
    """Holdings from a fetch_balance that started after ``ticket`` (shared by a single flight).

    Returns ``(balance, started_ms, ticket)``: the ccxt balance, the local wall clock
    (ms) when its request started. ``what`` may also be "positions" (derivatives)
    or "tickers" (every price in one call): the same flight serves those.
    """

    ticket: int
    what: str = "balance"


# What each kind of shared fetch calls.
FETCHES = {
    "balance": "fetch_balance",
    "positions": "fetch_positions",
    "tickers": "fetch_tickers",
    "open_orders": "fetch_open_orders",
}

# An account-wide open-orders listing this long may be one page of more (okx
# pages at 100): the exit then asks for its own symbol's open orders instead.
LISTING_MAY_BE_A_PAGE = 50


@dataclass(slots=True)
class WaitRelease:
    """Block until the lock of ``key`` is released after ``generation``, or ``timeout`` passes."""

    key: str
    generation: int
    timeout: float


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class Notify:
    """Call an observer hook (isolated: its errors are logged, never raised)."""

    hook: str
    kwargs: Mapping[str, Any]
    span: Any = None


@dataclass(slots=True)
class Ask:
    """Call a firstresult policy hook; the result comes back."""

    hook: str
    kwargs: Mapping[str, Any]
    span: Any = None


@dataclass(slots=True)
class Collect:
    """Call every implementation of a policy hook; returns ``[(plugin, result or exception)]``."""

    hook: str
    kwargs: Mapping[str, Any]
    span: Any = None


@dataclass(slots=True)
class Acquire:
    """Take the backend lease of ``key``; returns a Lease, or None if another process holds it."""

    key: str
    owner: str


@dataclass(slots=True)
class Leases:
    """The live backend leases whose keys start with ``prefix`` (a scan: rare use only)."""

    prefix: str


@dataclass(slots=True)
class Holder:
    """The live backend lease of ``key``, or None (one lookup)."""

    key: str


@dataclass(slots=True)
class Release:
    lease: Lease


@dataclass(slots=True)
class Renew:
    """Extend a lease; returns the renewed Lease, or None if it is no longer ours."""

    lease: Lease


@dataclass(slots=True)
class Scan:
    """The journal's exits in flight for (account, symbol), or every symbol (None)."""

    account: str
    symbol: str | None


@dataclass(slots=True)
class Journal:
    entry: JournalEntry


@dataclass(slots=True)
class Track:
    """Hand a record whose order is not final to the background tracker."""

    record: ExitRecord


Effect = (
    Call
    | FetchBalance
    | WaitRelease
    | Sleep
    | Notify
    | Ask
    | Collect
    | Acquire
    | Release
    | Renew
    | Scan
    | Leases
    | Holder
    | Journal
    | Track
)
Flow = Generator[Effect, Any, T]

_REFUSED = "_refused"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ticker_price(ticker: Any) -> Decimal | None:
    """The last (else bid, else close) price of a ccxt ticker, if it has one."""
    for key in ("last", "bid", "close"):
        value = ticker.get(key) if isinstance(ticker, Mapping) else None
        price = to_decimal(value) if value else None
        if price is not None and price > 0:
            return price
    return None


def _add_note(error: BaseException, note: str) -> None:
    """``BaseException.add_note`` on Python 3.11+, the same attribute before."""
    notes = getattr(error, "__notes__", None)
    if notes is None:
        notes = []
        error.__notes__ = notes  # type: ignore[attr-defined]
    notes.append(note)


# A bot's own client id keys: part of an intent on their own (bot_client_order_id).
_CLIENT_ID_PARAMS = frozenset(
    {"clientOrderId", "newClientOrderId", "clOrdId", "orderLinkId", "cl_ord_id", "text"}
)


def _params_key(params: Mapping[str, Any]) -> str:
    """The order's params as part of its identity (values by repr: any type will do)."""
    return repr(sorted((str(k), repr(v)) for k, v in params.items() if k not in _CLIENT_ID_PARAMS))


def _unanswered(error: BaseException) -> bool:
    """A lookup that failed without saying whether the order exists (a timeout, a 5xx, a
    rate limit, a reply we cannot read); "not found" and "not supported" are answers."""
    return (
        isinstance(error, (ccxt.NetworkError, ccxt.BadResponse))
        or type(error) is ccxt.ExchangeError
        or not isinstance(error, ccxt.BaseError)
    )


def _is_cancellation(error: BaseException) -> bool:
    # CancelledError, KeyboardInterrupt, GeneratorExit: no further I/O may be done.
    return not isinstance(error, Exception)


class Engine:
    """The exit logic of one guard (one client) over its account's shared book."""

    def __init__(
        self,
        *,
        client: Any,
        adapter: Adapter,
        book: Book,
        options: Options,
        hooks: Hooks,
        telemetry: Telemetry,
        account: str,
        durable: bool = False,
    ) -> None:
        self.client = client
        self.adapter = adapter
        self.book = book
        self.options = options
        self.hooks = hooks
        self.telemetry = telemetry
        self.account = account
        self.durable = durable  # leases outlive this process: expiry, renewal, recovery
        self.clock = time.monotonic
        self.wake: Callable[[], None] = lambda: None  # the driver's tracker, set by the guard

    # =====================================================================================
    # Entry: a bot called an order-entry method
    # =====================================================================================
    def call(self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Flow[Any]:
        """A bot's call, answered the way its own broker client answers."""
        try:
            reply = yield from self._call(entry, args, kwargs)
        except ccxt.BaseError as error:
            native = self.adapter.native_error(error)
            if native is error:
                raise
            for note in getattr(error, "__notes__", ()):
                _add_note(native, note)  # what the guard learned ("safe to retry"...) stays
            raise native from None  # the broker's own error, as the bot expects it
        return self.adapter.native_reply(reply)

    def _call(self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Flow[Any]:
        if entry.kind == "close_all":
            return (yield from self._close_all(entry, args, kwargs))
        if entry.kind in ("unsupported", "convert"):
            raise GuardError(
                f"{entry.name}() can sell but nija_guard cannot read it; call it on the raw "
                "client (nija_guard.unguarded(exchange)) if you accept the risk"
            )
        try:
            # Bad input is refused before any broker call, markets included.
            calls = self.adapter.parse_call(entry, args, kwargs)
        except ccxt.BaseError as error:
            self._refused(entry, args, kwargs, error)
            raise
        if not self.adapter.markets_loaded(self.client):
            yield Call("load_markets", purpose="markets")
        try:
            if len(calls) == 1:
                markets = [self.adapter.market_info(self.client, calls[0].symbol)]
            else:
                markets = [self.adapter.market_info(self.client, c.symbol) for c in calls]
        except ccxt.BaseError as error:
            self._refused(entry, args, kwargs, error)
            raise
        if entry.kind == "batch":
            return (yield from self._batch(entry, args, kwargs, calls, markets))
        call, market = calls[0], markets[0]
        if market.contract:
            if call.amount is None and call.cost is not None:
                refusal = ccxt.InvalidOrder(
                    f"{entry.name}(): a {market.symbol} order sized in quote currency (cost) "
                    "is not supported on derivatives; give the amount in contracts"
                )
                self._refused(entry, args, kwargs, refusal)
                raise refusal
            return (yield from self._contract_call(entry, args, kwargs, call, market))
        if not self.adapter.is_exit(call, market):
            return (yield from self._passthrough(entry, args, kwargs, call, market))
        return (yield from self.exit(call, market))

    def _contract_call(
        self,
        entry: EntryPoint,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        call: OrderCall,
        market: MarketInfo,
    ) -> Flow[Any]:
        """Derivatives: an exit closes a position: reduceOnly, close_position, or the opposite side.

        Which one an order is takes the open position, so every derivatives order
        costs one positions fetch (shared by concurrent orders of the account).
        """
        side, _, _ = yield from self._position(call.symbol, self.book.next_ticket())
        closing = {"long": "sell", "short": "buy"}.get(side or "")
        reduce_only = bool(call.params.get("reduceOnly") or call.params.get("reduce_only"))
        if call.entry.kind != "close_position" and not reduce_only and call.side != closing:
            return (yield from self._passthrough(entry, args, kwargs, call, market))
        call.contract_exit = call.entry.kind != "close_position"
        if closing is not None and call.entry.kind == "close_position":
            call.side = closing
        return (yield from self.exit(call, market, position_side=side))

    def _position(self, symbol: str, ticket: int) -> Flow[tuple[str | None, Decimal, int | None]]:
        positions, _, _ = yield FetchBalance(ticket, what="positions")
        return self.adapter.position(positions, symbol)

    # =====================================================================================
    # The exit, top to bottom
    # =====================================================================================
    def exit(
        self, call: OrderCall, market: MarketInfo, position_side: str | None = None
    ) -> Flow[Any]:
        rec = self._new_record(call, market)
        rec.position_side = position_side
        error: BaseException | None = None
        try:
            retried = yield from self._prepare(rec, call)
            if retried is not None:
                return retried.raw
            method, kwargs = self.adapter.submission(
                call, rec.amount, rec.client_order_id or "", self.client
            )
            order = yield from self._submit(rec, method, kwargs)
            rec.caller_informed = True
            return order.raw
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call_ended(rec, error)
            self._finish_call(rec, error)

    def _prepare(self, rec: ExitRecord, call: OrderCall) -> Flow[OrderView | None]:
        """Everything before the submit. Returns an order when this is a retry of one."""
        yield from self._notify(rec, "nija_guard_exit_requested", exit=rec.exit)

        try:
            # 1. Close lock: at most one exit per (account, symbol) is admitted.
            retried = yield from self._admit(rec, call)
            if retried is not None:
                return retried
            veto = self.hooks.wants("nija_guard_exit_veto") and (
                yield from self._ask(rec, "nija_guard_exit_veto", exit=rec.exit)
            )
            if veto:
                yield from self._vetoed(rec, str(veto))

            # 4. Balance refresh: holdings fetched after this exit was admitted.
            sellable = yield from self._refresh_holdings(rec)

            # 5 and 7. Clamp to holdings (and to the ledger), rounded down; dust refused.
            amount = yield from self._clamp(rec, call, sellable)
            if self.hooks.wants("nija_guard_exit_amount"):
                amount = yield from self._policy_amount(rec, amount)
            self._check_whole_close(rec, call, amount)

            # 6. A client order id of the guard's, journaled before anything is sent.
            cid = (
                rec.bot_cid
                or self._reused_client_order_id(rec)
                or self.adapter.new_client_order_id(self.client)
            )
            rec.amount = amount
            rec.cid_sent = self.adapter.sends_client_order_id(call, self.client)
            rec.exit = rec.exit.evolve(client_order_id=cid, amount=to_float(amount))
            self._reserve(rec)
            yield from self._journal(rec, "intent")
            if self.durable:
                yield from self._confirm_lease(rec)
            return None
        except BackendUnavailable as error:
            yield from self._abandon(rec)
            yield from self._notify(rec, "nija_guard_backend_failed", exit=rec.exit, error=error)
            raise
        except BaseException:
            yield from self._abandon(rec)
            raise

    def _submit(self, rec: ExitRecord, method: str, kwargs: Mapping[str, Any]) -> Flow[OrderView]:
        rec.phase = Phase.SUBMITTING
        rec.caller_waiting = True
        rec.submitted_ms, rec.submitted_mono = _now_ms(), self.clock()
        span = self._stage(rec, "nija_guard.submit")
        try:
            reply = yield Call(method, (), kwargs, purpose="submit", span=self._span_of(rec))
        except BaseException as error:
            self._end_stage(rec, span)
            return (yield from self._submit_failed(rec, error))
        self._end_stage(rec, span)
        return (yield from self._submitted(rec, reply))

    def _submitted(self, rec: ExitRecord, reply: Any) -> Flow[OrderView]:
        """The exchange acknowledged the order. 2. It keeps the lock until final."""
        try:
            view = self.adapter.order_view(reply)
        except Exception as error:
            # A reply we cannot read: the order may well exist.
            return (yield from self._submit_failed(rec, error))
        if view.id is None and view.status is None:
            # No id, no status: okx's close_position answers so, and binance's
            # cut-off body parses so. Our client id finds the order, if there is one.
            try:
                found = yield from self._lookup(rec, "confirm")
            except Exception:
                found = None
            if found is None:
                return (
                    yield from self._submit_failed(
                        rec,
                        ccxt.BadResponse(
                            f"{rec.exit.method}() returned an order without id or status"
                        ),
                    )
                )
            view = found
        previous = rec.replaced
        if previous is not None and view.id is not None and view.id == previous.order_id:
            self._retire_amended(previous, rec)
        if not self.durable:
            self._acknowledged(rec, view)  # and tracked: no journal to write first
        else:
            self._acknowledged(rec, view, track=False)
            # Journaled before it is tracked: the tracker may settle it the moment it is,
            # and a slow "submitted" write landing after "settled" would bring the row back.
            try:
                yield from self._journal(rec, "submitted")
            finally:
                self.book.track(rec)  # whatever the journal did, the order exists: follow it
        if self.hooks.wants("nija_guard_order_submitted"):  # a copy of the order for it
            yield from self._notify(
                rec, "nija_guard_order_submitted", exit=rec.exit, order=dict(view.raw)
            )
        if view.status is None or view.filled is None:
            # Some venues (kraken) answer without status or fill: ask once.
            view = yield from self._confirm(rec, view)
        yield from self._apply(rec, view)
        return view

    def _submit_failed(self, rec: ExitRecord, error: BaseException) -> Flow[OrderView]:
        """6. Unknown outcome is not failure: reconcile before anything else happens."""
        if not self.adapter.outcome_is_unknown(error):
            # A definite refusal: nothing exists on the exchange.
            if isinstance(error, ccxt.InvalidOrder):
                # Maybe below a minimum at a price the guard kept: the next exit asks anew.
                self.book.prices.pop(rec.exit.symbol)
            if self.book.claim_settlement(rec):
                yield from self._settle(rec, None, Outcome.REJECTED)
            raise error
        cancelled = _is_cancellation(error)
        with self.book.mutex:
            rec.phase = Phase.UNKNOWN
            rec.error = error
            # Reconciled right here, unless cancelled: then by the tracker.
            rec.reconciler = None if cancelled else rec
        self.book.track(rec)
        self.telemetry.count("unknown")
        self.telemetry.event(
            self._span_of(rec), "nija_guard.outcome_unknown", {"error.type": type(error).__name__}
        )
        # Should this call end without an answer, the tracker takes over.
        self._schedule(rec, progressed=True)
        if cancelled:
            raise error  # no more I/O on a cancelled call: the tracker reconciles and notifies
        try:
            rec.unknown_notified = True
            rec.exit = rec.exit.evolve(outcome=Outcome.UNKNOWN)
            log.warning(
                "exit outcome unknown; %s stays locked until reconciled",
                rec.key,
                extra=self._log_fields(rec, "outcome_unknown", error=type(error).__name__),
            )
            yield from self._journal(rec, "unknown")
            yield from self._notify(rec, "nija_guard_outcome_unknown", exit=rec.exit, error=error)
            state, view = yield from self._reconcile(
                rec, self.clock() + self.options.reconcile_timeout
            )
        finally:
            with self.book.mutex:
                rec.reconciler = None
        if state == "found" and view is not None:
            return view
        if state == "absent":
            _add_note(
                error,
                f"nija_guard: the exchange has no order {rec.client_order_id}; it is safe to retry",
            )
            raise error
        self._schedule(rec, progressed=False)
        yield Track(rec)
        raise OutcomeUnknown(
            f"the outcome of exit {rec.exit.exit_id} ({rec.key}) is unknown; "
            "the symbol stays locked until the guard reconciles it with the exchange",
            exit=rec.exit,
        ) from error

    # =====================================================================================
    # 1. The close lock
    # =====================================================================================
    def _admit(self, rec: ExitRecord, call: OrderCall) -> Flow[OrderView | None]:
        policy = call.guard_options.get("on_conflict", self.options.on_conflict)
        if policy not in ON_CONFLICT:
            raise ccxt.BadRequest(
                f"params['nija_guard']['on_conflict'] must be one of {ON_CONFLICT}"
            )
        timeout = call.guard_options.get("wait_timeout", self.options.wait_timeout)
        waiting_since = self.clock()
        deadline = waiting_since + float(timeout)
        span = self._stage(rec, "nija_guard.lock_wait")
        try:
            while True:
                retried = self._retry_of(rec)
                if retried is not None:
                    return retried
                admission = self.book.admit(rec)
                if admission.verdict == "admitted":
                    rec.replaced = admission.handed_over
                    if rec.replaced is not None:
                        # An edit continues the exit it amends, lease included.
                        lease, rec.replaced.lease = rec.replaced.lease, None
                    elif self.durable:
                        lease = yield from self._take_lease(
                            self._lease_key(rec), rec, deadline if policy == "wait" else None
                        )
                    else:
                        lease = LOCAL_LEASE  # one process: the close lock is the only lock
                    if lease is None:
                        # Another process holds the lease of this symbol.
                        for wake in self.book.release(rec):
                            wake()
                        remaining = deadline - self.clock()
                        if policy == "reject" or remaining <= 0:
                            yield from self._blocked(rec, None, "in_progress")
                            raise ExitInProgress(
                                f"another process is exiting {rec.key}", exit=rec.exit
                            )
                        yield Sleep(min(self.options.poll_interval, remaining))
                        continue
                    rec.lease = lease
                    # A process that died mid-exit left it in the journal: settle that first.
                    holder = (yield from self._recover(rec)) if self.durable else None
                    if holder is None and rec.exit.symbol not in self.book.adopted:
                        holder = yield from self._adopt(rec)
                    if holder is None:
                        return None
                    continue  # a resting exit from before a crash or restart holds it now
                holder = admission.holder
                if holder is None:
                    continue  # released meanwhile: try again
                if admission.verdict == "reconcile":
                    yield from self._reconcile_prior(holder, rec)
                    continue
                if holder.phase == Phase.UNKNOWN and policy != "wait":
                    yield from self._blocked(rec, holder, "unknown_outcome")
                    raise OutcomeUnknown(
                        f"{rec.key} is locked: the outcome of exit "
                        f"{holder.exit.exit_id} is unknown",
                        exit=rec.exit,
                    )
                if policy == "reject":
                    yield from self._blocked(rec, holder, "in_progress")
                    raise ExitInProgress(
                        f"an exit of {rec.key} is in progress (exit {holder.exit.exit_id}, "
                        f"{holder.phase.value})",
                        exit=rec.exit,
                    )
                if policy == "replace" and holder.phase == Phase.ACTIVE and holder.key == rec.key:
                    took = yield from self._replace(holder, rec)
                    if took:
                        if rec.lease is None:
                            yield from self._blocked(rec, None, "in_progress")
                            raise ExitInProgress(
                                f"another process is exiting {rec.key}", exit=rec.exit
                            )
                        return None
                    # Someone else is replacing it, or it just settled: wait for the lock.
                remaining = deadline - self.clock()
                if remaining <= 0:
                    yield from self._blocked(rec, holder, "wait_timeout")
                    raise ExitInProgress(
                        f"timed out waiting for the exit of {rec.key} in progress", exit=rec.exit
                    )
                if holder.owner is not None:
                    # Its tracker may be idle (its loop or thread gone): it must poll.
                    holder.owner.wake()
                yield WaitRelease(holder.key, admission.generation, remaining)
        finally:
            self._end_stage(rec, span)
            if rec.metered:
                self.telemetry.record("lock_wait", self.clock() - waiting_since)

    def _retry_of(self, rec: ExitRecord) -> OrderView | None:
        """A repeat of an exit whose outcome was unknown and turned out executed."""
        if not self.book.resolved:
            return None
        prior = self.book.resolved.get(
            self._intent(rec), self.clock(), ttl=self.options.retry_window
        )
        if prior is None or prior.last_order is None:
            return None
        self.book.resolved.pop(rec.intent)
        rec.exit = rec.exit.evolve(
            outcome=prior.exit.outcome or Outcome.RESTING,
            order_id=prior.order_id,
            client_order_id=prior.client_order_id,
            amount=prior.exit.amount,
            reason="retry of an exit that was executed",
        )
        log.info(
            "retry of exit %s answered with its order",
            prior.exit.exit_id,
            extra=self._log_fields(rec, "retry_answered"),
        )
        return prior.last_order

    def _replace(self, holder: ExitRecord, rec: ExitRecord) -> Flow[bool]:
        """on_conflict="replace": cancel the active exit, confirm, take its lock over."""
        with self.book.mutex:
            if holder.replacer is not None or holder.settled:
                return False
            holder.replacer = rec
        span = self._stage(rec, "nija_guard.replace")
        try:
            try:
                reply = yield Call(
                    "cancel_order",
                    (holder.order_id, holder.exit.symbol),
                    purpose="cancel",
                    span=self._span_of(rec),
                )
                view = self._view_or_none(reply)
                if view is not None and view.is_final:
                    return (yield from self._settle_for(holder, view, successor=rec))
            except ccxt.OrderNotFound:
                pass  # already final: the fetch below says how it ended
            except ccxt.BaseError as error:
                if not self.adapter.outcome_is_unknown(error):
                    raise
            deadline = self.clock() + self.options.confirm_timeout
            delay = self.options.poll_interval / 5
            while True:
                try:
                    reply = yield Call(
                        "fetch_order",
                        (holder.order_id, holder.exit.symbol),
                        purpose="confirm_cancel",
                        span=self._span_of(rec),
                    )
                    view = self._view_or_none(reply)
                except ccxt.BaseError:
                    view = None
                if view is not None and view.is_final:
                    return (yield from self._settle_for(holder, view, successor=rec))
                if holder.settled:
                    return False
                if self.clock() >= deadline:
                    yield from self._blocked(rec, holder, "replace_timeout")
                    raise ExitInProgress(
                        f"could not confirm the cancel of order {holder.order_id} on {rec.key}",
                        exit=rec.exit,
                    )
                yield Sleep(delay)
                delay = min(delay * 2, self.options.poll_max_interval)
        finally:
            with self.book.mutex:
                if holder.replacer is rec:
                    holder.replacer = None
            self._end_stage(rec, span)

    def _adopt(self, rec: ExitRecord) -> Flow[ExitRecord | None]:
        """After a restart, our own resting exits found on the exchange hold the lock."""
        symbol = rec.exit.symbol
        if not self.options.adopt or rec.key == ACCOUNT_WIDE:
            return None
        with self.book.mutex:
            if symbol in self.book.adopted:
                return None
            self.book.adopted.add(symbol)
        try:
            replies = yield from self._open_orders_everywhere(rec)
            if replies is None:
                replies = yield Call(
                    "fetch_open_orders", (symbol,), purpose="adopt", span=self._span_of(rec)
                )
        except ccxt.NotSupported:
            return None
        except BaseException as error:
            with self.book.mutex:
                self.book.adopted.discard(symbol)  # look again at the next exit
            if not isinstance(error, Exception):
                raise
            log.warning(
                "could not look for resting exits of %s: %s",
                symbol,
                type(error).__name__,
                extra=self._log_fields(rec, "adopt_failed"),
            )
            return None
        holder: ExitRecord | None = None
        for reply in replies or ():
            view = self._view_or_none(reply)
            if (
                view is None
                or view.side != "sell"
                or view.is_final
                or not self.adapter.owns_client_order_id(view.client_order_id)
                or self.book.find(view.id, view.client_order_id) is not None
                or rec.replaces in (view.id, view.client_order_id)
            ):
                continue
            adopted = self._adopted_record(rec.market, view)
            self.book.track(adopted)
            self._schedule(adopted, progressed=True)
            log.info(
                "adopted resting exit %s on %s",
                view.id,
                symbol,
                extra=self._log_fields(adopted, "adopted"),
            )
            yield Track(adopted)
            # The first holds the close lock; any other is tracked to settlement.
            if holder is None and self.book.take_over(adopted, rec):
                rec.lease, adopted.lease = None, rec.lease
                holder = adopted
        return holder

    def _open_orders_everywhere(self, rec: ExitRecord) -> Flow[list[Any] | None]:
        """This symbol's open orders from one account-wide listing, or None: ask per symbol.

        The listing is a single flight started after this exit's admission, like
        the balance: the first exits of a burst on many symbols share one call.
        Only spot, and only where the adapter knows the listing holds every open
        order (see ``CcxtAdapter.lists_open_orders``); a venue that refuses to
        list without a symbol is asked per symbol from then on.
        """
        if (
            rec.market.contract
            or self.book.lists_open_orders is False
            or not self.adapter.lists_open_orders(self.client)
        ):
            return None
        try:
            listing, _, _ = yield FetchBalance(rec.ticket, what="open_orders")
        except ccxt.NetworkError:
            return None  # a passing fault: this exit asks for its symbol
        except ccxt.BaseError:
            self.book.lists_open_orders = False  # refused without a symbol: never again
            return None
        except Exception:
            return None  # an unreadable listing: this exit asks for its symbol
        if not isinstance(listing, list) or len(listing) >= LISTING_MAY_BE_A_PAGE:
            return None
        self.book.lists_open_orders = True
        symbol = rec.exit.symbol
        return [o for o in listing if isinstance(o, Mapping) and o.get("symbol") == symbol]

    # =====================================================================================
    # 4 and 5. Balance refresh and clamp
    # =====================================================================================
    def _refresh_holdings(self, rec: ExitRecord) -> Flow[Decimal]:
        if rec.market.contract:
            return (yield from self._refresh_position(rec))
        span = self._stage(rec, "nija_guard.balance_refresh")
        try:
            balance, started_ms, fetch_ticket = yield FetchBalance(rec.ticket)
        finally:
            self._end_stage(rec, span)
        free, total, stamp = self.adapter.holdings(balance, rec.market.base)
        freed = ledger_freed = ZERO
        if rec.replaced is not None:
            # An edit frees what the order it amends had locked.
            freed = max(rec.replaced.amount or ZERO, ZERO) - rec.replaced.filled
            if rec.replaced.ledger_reserved:
                # The amended order's reservation covers what it has not filled.
                ledger_freed = rec.replaced.ledger_reserved - rec.replaced.filled
        elif rec.replaces is not None:
            freed = yield from self._remaining_of(rec.replaces, rec.exit.symbol)
        # A snapshot older than our own latest sells still counts them as held; another
        # symbol's exit of this asset may be clamping right now: reserve as we read.
        rec.sellable = self.book.reserve_sellable(
            rec,
            free,
            stamp,
            started_ms,
            freed=freed,
            ledger=self.options.ownership == "ledger",
            ledger_freed=ledger_freed,
            reader=fetch_ticket,
        )
        rec.pre_total, rec.pre_free = total, free
        if not self.hooks.wants("nija_guard_balance_refreshed"):
            return rec.sellable
        yield from self._notify(
            rec,
            "nija_guard_balance_refreshed",
            exit=rec.exit,
            free=float(free),
            total=float(total),
            sellable=float(rec.sellable),
            balance_timestamp=stamp,
        )
        return rec.sellable

    def _refresh_position(self, rec: ExitRecord) -> Flow[Decimal]:
        """Derivatives: the open position, fetched after admission, is what an exit may close."""
        span = self._stage(rec, "nija_guard.balance_refresh")
        try:
            positions, started_ms, _ = yield FetchBalance(rec.ticket, what="positions")
        finally:
            self._end_stage(rec, span)
        side, contracts, stamp = self.adapter.position(positions, rec.exit.symbol)
        if rec.position_side is not None and side != rec.position_side:
            contracts = ZERO  # the position it meant to close is gone (or flipped)
        closing = {"long": "sell", "short": "buy"}.get(side or "")
        if closing is not None and rec.exit.side != closing:
            contracts = ZERO  # this order would add to the position, not close it
        rec.position_side = rec.position_side or side
        # Our own fills that a snapshot from before them still counts as open.
        sellable = contracts - self.book.unreflected_sells(
            rec.holding, stamp, started_ms, exclude=rec, positional=True
        )
        rec.pre_total = contracts
        rec.sellable = max(sellable, ZERO)
        yield from self._notify(
            rec,
            "nija_guard_balance_refreshed",
            exit=rec.exit,
            free=float(contracts),
            total=float(contracts),
            sellable=float(rec.sellable),
            balance_timestamp=stamp,
        )
        return rec.sellable

    def _clamp(self, rec: ExitRecord, call: OrderCall, sellable: Decimal) -> Flow[Decimal]:
        """``floor(min(requested, sellable) / step) * step``; dust and nothing refused."""
        market = rec.market
        if sellable <= 0:
            self.book.dust.pop(rec.key)
            rec.exit = rec.exit.evolve(outcome=Outcome.NOTHING_TO_SELL)
            raise NothingToSell(
                f"nothing to close: no open {rec.exit.symbol} position on that side"
                if market.contract
                else f"nothing to sell: {market.base} holdings are 0"
                + (" in the ledger" if self.options.ownership == "ledger" else ""),
                exit=rec.exit,
            )
        limit = sellable
        if market.sell_fee_rate_in_base:
            limit = divide_down(sellable, 1 + market.sell_fee_rate_in_base)
        price = call.price or self.book.prices.get(rec.exit.symbol, self.clock())
        requested = call.amount
        if requested is None and call.cost is not None:
            # Sized in quote currency: converted at a fresh price and sent as an
            # amount, so the venue can never sell more than the clamp allowed.
            price = yield from self._price(rec, fresh=True)
            if price is None or price <= 0:
                raise ccxt.InvalidOrder(
                    f"cannot size a sell of cost {call.cost}: no price for {rec.key}"
                )
            requested = call.cost / price
        target = limit if requested is None else min(requested, limit)
        amount = market.floor_amount(target)
        if market.min_cost is not None and price is None:
            price = yield from self._price(rec)
        why = market.below_minimum(amount, price)
        if why is not None and call.price is None and market.below_minimum(amount, None) is None:
            # Only the cost says dust, at a price that may be minutes old: never refuse
            # an exit on a stale price. Ask for a fresh one first.
            fresh = yield from self._price(rec, fresh=True)
            # No fresh price to be had: the exchange, not a stale price, decides.
            why = market.below_minimum(amount, fresh) if fresh is not None else None
        if why is not None:
            if requested is not None and requested < limit:
                # The request itself is too small: not dust, a bad order.
                raise ccxt.InvalidOrder(f"{rec.exit.method}(): {why} of {rec.key}")
            rec.exit = rec.exit.evolve(outcome=Outcome.DUST, reason=why)
            self.telemetry.count("dust")
            self.telemetry.event(self._span_of(rec), "nija_guard.dust", {"nija_guard.reason": why})
            if self.book.dust.get(rec.key, self.clock()) != sellable:
                self.book.dust.put(rec.key, sellable, self.clock())
                log.warning(
                    "dust position on %s: %s", rec.key, why, extra=self._log_fields(rec, "dust")
                )
                yield from self._notify(
                    rec,
                    "nija_guard_dust_detected",
                    exit=rec.exit,
                    amount=float(sellable),
                    reason=why,
                )
            raise DustPosition(f"dust position on {rec.key}: {why}; no order sent", exit=rec.exit)
        if self.book.dust:
            self.book.dust.pop(rec.key)
        if requested is not None and amount != requested:
            reason = "holdings" if limit < requested else "precision"
            self.telemetry.count("clamps", reason=reason)
            self.telemetry.event(
                self._span_of(rec),
                "nija_guard.clamped",
                {
                    "nija_guard.requested_amount": float(requested),
                    "nija_guard.amount": float(amount),
                    "nija_guard.reason": reason,
                },
            )
            if log.isEnabledFor(logging.INFO):  # its fields cost more than the call
                log.info(
                    "clamped sell of %s from %s to %s (%s)",
                    rec.key,
                    requested,
                    amount,
                    reason,
                    extra=self._log_fields(rec, "clamped"),
                )
            yield from self._notify(
                rec,
                "nija_guard_quantity_clamped",
                exit=rec.exit.evolve(amount=float(amount)),
                requested_amount=float(requested),
                amount=float(amount),
                sellable=float(sellable),
                reason=reason,
            )
        return amount

    def _policy_amount(self, rec: ExitRecord, amount: Decimal) -> Flow[Decimal]:
        """``nija_guard_exit_amount``: plugins may lower the amount, never raise it."""
        hook = "nija_guard_exit_amount"
        if not self.hooks.wants(hook):
            return amount
        proposed = rec.exit.evolve(amount=to_float(amount))
        results = yield Collect(
            hook, {"exit": proposed, "amount": float(amount)}, self._span_of(rec)
        )
        lowest, by = amount, None
        for plugin, result in results:
            if isinstance(result, BaseException):
                yield from self._vetoed(
                    rec, f"amount hook of {plugin} raised {type(result).__name__}"
                )
            if result is None:
                continue
            value = to_decimal(result)
            if value is None or value < 0:
                yield from self._vetoed(rec, f"amount hook of {plugin} returned {result!r}")
                continue
            if value > amount:
                log.warning(
                    "amount hook of %s asked to raise %s to %s; ignored",
                    plugin,
                    amount,
                    value,
                    extra=self._log_fields(rec, "amount_raise_ignored"),
                )
            elif value < lowest:
                lowest, by = value, plugin
        if by is None:
            return amount
        lowered = rec.market.floor_amount(lowest)
        price = to_decimal(rec.exit.price) or self.book.prices.get(rec.exit.symbol, self.clock())
        why = rec.market.below_minimum(lowered, price)
        if lowered <= 0 or why is not None:
            yield from self._vetoed(
                rec, f"amount hook of {by} lowered the sell to {lowest}: {why or 'zero'}"
            )
        self.telemetry.count("clamps", reason="policy")
        self.telemetry.event(
            self._span_of(rec),
            "nija_guard.clamped",
            {
                "nija_guard.requested_amount": float(amount),
                "nija_guard.amount": float(lowered),
                "nija_guard.reason": "policy",
            },
        )
        yield from self._notify(
            rec,
            "nija_guard_quantity_clamped",
            exit=rec.exit.evolve(amount=float(lowered)),
            requested_amount=float(amount),
            amount=float(lowered),
            sellable=float(rec.sellable if rec.sellable is not None else amount),
            reason="policy",
        )
        return lowered

    def _vetoed(self, rec: ExitRecord, reason: str) -> Flow[None]:
        """A policy said no: tell observers, then refuse. Nothing is sent."""
        rec.exit = rec.exit.evolve(outcome=Outcome.VETOED, reason=reason)
        log.info("exit of %s vetoed: %s", rec.key, reason, extra=self._log_fields(rec, "vetoed"))
        yield from self._notify(rec, "nija_guard_exit_vetoed", exit=rec.exit, reason=reason)
        raise ExitVetoed(f"exit vetoed: {reason}", exit=rec.exit)

    def _price(self, rec: ExitRecord, fresh: bool = False) -> Flow[Decimal | None]:
        """A price: for the minimum-cost check a recent one will do, else a ticker.

        Where the venue lists every ticker in one call, concurrent exits share one
        such call (a single flight, like the balance's) and every price it brings
        is kept: a burst of exits on many symbols costs one call, not one each.
        """
        symbol = rec.exit.symbol
        known = None if fresh else self.book.prices.get(symbol, self.clock())
        if known is not None:
            return known
        # Every ticker in one call pays off when several exits want prices at once; one
        # exit asks for its own (binance weighs the listing 40 times one ticker).
        if not fresh and len(self.book.symbols) > 1 and self.adapter.lists_prices(self.client):
            try:
                tickers, _, _ = yield FetchBalance(rec.ticket, what="tickers")
            except Exception:
                tickers = None  # a listing that fails, or that ccxt cannot parse: ask for ours
            if isinstance(tickers, Mapping):
                now = self.clock()
                if self.book.prices_from is not tickers:
                    self.book.prices_from = tickers
                    self.book.prices.put_many(
                        (
                            (str(name), price)
                            for name, ticker in tickers.items()
                            if (price := _ticker_price(ticker)) is not None
                        ),
                        now,
                    )
                known = self.book.prices.get(symbol, now)
                if known is None:  # more symbols than the cache holds: read it here
                    known = _ticker_price(tickers.get(symbol))
                if known is not None:
                    return known
        try:
            ticker = yield Call("fetch_ticker", (symbol,), purpose="price", span=self._span_of(rec))
        except ccxt.BaseError:
            return None
        price = _ticker_price(ticker)
        if price is not None:
            self.book.prices.put(symbol, price, self.clock())
        return price

    def _remaining_of(self, order_id: str, symbol: str) -> Flow[Decimal]:
        try:
            view = self._view_or_none(
                (yield Call("fetch_order", (order_id, symbol), purpose="edit"))
            )
        except ccxt.BaseError:
            return ZERO
        if view is None or view.is_final or view.side != "sell":
            return ZERO
        return view.remaining if view.remaining is not None else ZERO

    # =====================================================================================
    # 2 and 3. Tracking to settlement, flush on full close
    # =====================================================================================
    def _apply(self, rec: ExitRecord, view: OrderView) -> Flow[None]:
        """Account for an order report; settle when it is final. The one place state moves."""
        if rec.settled:
            return
        if self._lacks_fills(view):
            view = yield from self._confirm(rec, view)
        delta = self._account_fill(rec, view)
        if delta > 0 and self.hooks.wants("nija_guard_order_filled"):
            yield from self._notify(
                rec,
                "nija_guard_order_filled",
                exit=rec.exit,
                order=dict(view.raw),
                amount=float(delta),
            )
        if not view.is_final:
            if rec.phase == Phase.UNKNOWN:
                rec.phase = Phase.ACTIVE
            self._schedule(rec, progressed=delta > 0)
            yield Track(rec)
            return
        if self.book.claim_settlement(rec):
            yield from self._settle(rec, view, outcome_of(view))

    def _settle_for(self, holder: ExitRecord, view: OrderView, successor: ExitRecord) -> Flow[bool]:
        """Settle ``holder`` and hand its lock straight to ``successor`` (replace)."""
        if self._lacks_fills(view):
            view = yield from self._confirm(holder, view)
        delta = self._account_fill(holder, view)
        if delta > 0:
            yield from self._notify(
                holder,
                "nija_guard_order_filled",
                exit=holder.exit,
                order=dict(view.raw),
                amount=float(delta),
            )
        if not self.book.claim_settlement(holder):
            return False
        yield from self._settle(holder, view, outcome_of(view), successor=successor)
        return self.book.holds(successor)

    def _settle(
        self,
        rec: ExitRecord,
        view: OrderView | None,
        outcome: Outcome,
        successor: ExitRecord | None = None,
    ) -> Flow[None]:
        """Final: book the result, flush on a full close, fire hooks, then release the lock."""
        if view is not None:
            stamp = view.raw.get("lastUpdateTimestamp") or view.raw.get("lastTradeTimestamp")
            rec.final_ts = int(stamp) if isinstance(stamp, (int, float)) and stamp > 0 else None
        self.book.settle(rec)  # untracked; a sell is kept for snapshots that lag behind it
        if rec.kind == "buy":
            return
        span = self._stage(rec, "nija_guard.settlement")
        try:
            if self.options.ownership == "ledger" and rec.ledger_reserved:
                sold = rec.filled - rec.filled_before + rec.base_fee
                self.book.ledger_add(rec.market.base, rec.ledger_reserved - sold)
                rec.ledger_reserved = ZERO
            rec.exit = rec.exit.evolve(outcome=outcome, filled=float(rec.filled))
            if rec.metered and rec.submitted_mono is not None and view is not None:
                self.telemetry.record(
                    "settlement", self.clock() - rec.submitted_mono, outcome=outcome.value
                )
            if span is not INVALID_SPAN and span.is_recording():
                span.set_attributes(
                    {"nija_guard.outcome": outcome.value, "nija_guard.filled": float(rec.filled)}
                )
            flushed = self._fully_closed(rec, view)
            if flushed:
                self._flush(rec)
            yield from self._journal(rec, "settled")
            if log.isEnabledFor(logging.INFO):  # its fields cost more than the call
                log.info(
                    "exit %s settled: %s, filled %s",
                    rec.exit.exit_id,
                    outcome.value,
                    rec.filled,
                    extra=self._log_fields(rec, "settled"),
                )
            if self.hooks.wants("nija_guard_order_settled"):
                yield from self._notify(
                    rec,
                    "nija_guard_order_settled",
                    exit=rec.exit,
                    order=dict(view.raw) if view else None,
                )
            if flushed:
                yield from self._notify(
                    rec, "nija_guard_position_flushed", exit=rec.exit, symbol=rec.exit.symbol
                )
        finally:
            self._end_stage(rec, span)
            never_placed = outcome in (Outcome.REJECTED, Outcome.NOT_PLACED)
            yield from self._unlock(rec, successor=successor, hand_back=never_placed)

    def _unlock(
        self, rec: ExitRecord, *, successor: ExitRecord | None = None, hand_back: bool = False
    ) -> Iterable[Any]:
        """Give up ``rec``'s lease, then its close lock (``yield from`` it)."""
        lease = rec.lease
        if successor is None and rec.replaced is None and (lease is None or lease is LOCAL_LEASE):
            # The usual case: no backend lease, nothing to hand on: release it now.
            rec.lease = None
            for wake in self.book.release(rec):
                wake()
            return ()
        return self._unlock_and_hand_on(rec, successor=successor, hand_back=hand_back)

    def _unlock_and_hand_on(
        self, rec: ExitRecord, *, successor: ExitRecord | None = None, hand_back: bool = False
    ) -> Flow[None]:
        """Give up ``rec``'s lease, then its close lock.

        The lock goes back to the exit an edit amended when ``hand_back`` (the
        edit never reached the exchange, so the amended order still rests), or
        straight to ``successor`` (replace), or is released, waking waiters.
        The lease goes first, so whoever gets the lock can take it; the lock is
        released in a ``finally``: a failing or cancelled lease release can
        never leave it held.
        """
        lease, rec.lease = rec.lease, None
        previous = rec.replaced
        handed_back = bool(
            hand_back
            and previous is not None
            and not previous.settled
            and self.book.hand_back(previous, rec)
        )
        if handed_back and previous is not None:
            previous.lease, lease = lease, None
            previous.replacer = None
        took_over = False
        try:
            if lease is not None and lease is not LOCAL_LEASE:
                try:
                    yield Release(lease)
                except Exception:
                    log.exception(
                        "lease release failed",
                        extra=self._log_fields(rec, "lease_release_failed"),
                    )
        finally:
            if not handed_back:
                if successor is not None and self.book.take_over(successor, rec):
                    took_over = True
                else:
                    for wake in self.book.release(rec):
                        wake()
        if took_over and successor is not None:
            successor.lease = yield from self._take_lease(self._lease_key(successor), successor)

    def _fully_closed(self, rec: ExitRecord, view: OrderView | None) -> bool:
        """Whether this exit left less than the market lets anyone sell."""
        if rec.filled <= 0:
            return False
        if self.options.ownership == "ledger":
            # Other exits of the asset in flight may give their reservations back.
            left = self.book.ledger_owned(rec.market.base, exclude=rec)
        elif rec.sellable is not None:
            left = rec.sellable - rec.filled - rec.base_fee
        else:
            return False
        price = view.average if view is not None else None
        return rec.market.below_minimum(rec.market.floor_amount(left), price) is not None

    def _flush(self, rec: ExitRecord) -> None:
        """3. Delete the guard's cached state of the symbol at once."""
        self.book.forget_holdings()
        self.book.dust.pop(rec.key)
        if self.options.ownership == "ledger":
            left = self.book.ledger_available(rec.market.base)
            if left <= 0 or rec.market.below_minimum(rec.market.floor_amount(left), None):
                self.book.ledger_add(rec.market.base, -left)

    @staticmethod
    def _lacks_fills(view: OrderView) -> bool:
        """A final report that leaves out what filled (htx's cancel reply is the ack plus
        ``status: canceled``) is asked about once (``_confirm``): settling on the fills
        seen last would give back what sold since."""
        return view.is_final and view.filled is None and view.remaining is None and bool(view.id)

    def _account_fill(self, rec: ExitRecord, view: OrderView) -> Decimal:
        """Book new fills of ``rec``'s order; returns the newly filled amount."""
        with self.book.mutex:
            rec.last_order = view
            if rec.exit.order_id is None and view.id is not None:
                rec.exit = rec.exit.evolve(order_id=view.id)
                if not rec.settled:
                    self.book.by_order_id[view.id] = rec
            if rec.exchange_ts is None and view.timestamp is not None:
                rec.exchange_ts = view.timestamp
            filled = view.filled
            if filled is None:
                filled = (
                    view.amount
                    if view.status == "closed" and view.amount is not None
                    else rec.filled
                )
            delta = filled - rec.filled
            if delta <= 0:
                return ZERO
            rec.filled = filled
            rec.base_fee = view.base_fee
            stamp = view.raw.get("lastTradeTimestamp") or view.raw.get("lastUpdateTimestamp")
            if isinstance(stamp, (int, float)) and stamp > 0:
                rec.last_fill_ts = int(stamp)
        if view.average:
            self.book.prices.refresh(rec.exit.symbol, view.average, self.clock())
        if rec.kind == "buy":
            credit = filled - view.base_fee - rec.credited
            if credit > 0:
                rec.credited += credit
                self.book.ledger_add(rec.market.base, credit)
        return delta

    def _confirm(self, rec: ExitRecord, view: OrderView) -> Flow[OrderView]:
        try:
            if view.id is not None:
                reply = yield Call(
                    "fetch_order",
                    (view.id, rec.exit.symbol),
                    purpose="confirm",
                    span=self._span_of(rec),
                )
                confirmed = self._view_or_none(reply)
            else:
                confirmed = yield from self._lookup(rec, "confirm")
        except ccxt.BaseError:
            confirmed = None
        return confirmed if confirmed is not None and confirmed.status else view

    # =====================================================================================
    # 6. Reconciliation of unknown outcomes
    # =====================================================================================
    def _reconcile(self, rec: ExitRecord, deadline: float) -> Flow[tuple[str, OrderView | None]]:
        """Rounds of looking for the order until found, proven absent, or ``deadline``.

        Returns ``("found", order)``, ``("absent", None)`` (settled as not placed)
        or ``("unresolved", None)`` (still UNKNOWN and locked).
        """
        span = self._stage(rec, "nija_guard.reconcile")
        delay = self.options.poll_interval / 5
        try:
            while True:
                view = yield from self._find(rec)
                if view is not None:
                    yield from self._resolved(rec, view)
                    return "found", view
                if rec.unanswered == 0:
                    rec.polls += 1  # a failed lookup is no evidence of absence
                old_enough = (
                    rec.submitted_mono is None
                    or self.clock() - rec.submitted_mono >= self.options.absent_after
                )
                if old_enough and rec.polls >= 2:
                    dropped = yield from self._holdings_dropped(rec)
                    if not dropped and (rec.replaced is not None or rec.replaces):
                        dropped = yield from self._edit_took_effect(rec)
                    if not dropped:
                        if self.book.claim_settlement(rec):
                            self.book.not_placed.put(
                                self._intent(rec), rec.client_order_id, self.clock()
                            )
                            yield from self._notify(
                                rec,
                                "nija_guard_outcome_resolved",
                                exit=rec.exit.evolve(outcome=Outcome.NOT_PLACED),
                                order=None,
                            )
                            yield from self._settle(rec, None, Outcome.NOT_PLACED)
                        return "absent", None
                if self.clock() >= deadline:
                    return "unresolved", None
                yield Sleep(max(0.0, min(delay, deadline - self.clock())))
                delay = min(delay * 2, self.options.poll_max_interval)
        finally:
            self._end_stage(rec, span)

    def _lookup(self, rec: ExitRecord, purpose: str) -> Flow[OrderView | None]:
        """The order with ``rec``'s client id, the ways the venue can look it up."""
        cid = rec.client_order_id
        if not cid:
            return None
        for method, args in self.adapter.lookup_by_client_id(rec.exit.symbol, cid, self.client):
            try:
                reply = yield Call(method, args, purpose=purpose, span=self._span_of(rec))
            except ccxt.BaseError as error:
                if _unanswered(error):
                    rec.unanswered += 1
                continue  # not found, or not a lookup this venue supports: the next one
            for item in reply if isinstance(reply, list) else [reply]:
                view = self._view_or_none(item)
                if view is None or view.side not in (rec.exit.side, None):
                    continue
                # A venue that answers a lookup by client id may leave the id out.
                if view.client_order_id == cid or (
                    not isinstance(reply, list) and view.client_order_id is None
                ):
                    return view
        return None

    def _find(self, rec: ExitRecord) -> Flow[OrderView | None]:
        """Exchange evidence of ``rec``'s order: by client id, open orders, recent trades."""
        cid, symbol = rec.client_order_id, rec.exit.symbol
        rec.unanswered = 0
        if not rec.cid_sent and (rec.replaced is not None or rec.replaces):
            # An edit made in place carried no id of ours: it is the order it amends.
            order_id = rec.replaced.order_id if rec.replaced is not None else rec.replaces
            try:
                return self._view_or_none(
                    (
                        yield Call(
                            "fetch_order",
                            (order_id, symbol),
                            purpose="reconcile",
                            span=self._span_of(rec),
                        )
                    )
                )
            except ccxt.BaseError as error:
                if _unanswered(error):
                    rec.unanswered += 1
                return None
        if not cid:
            return None
        found = yield from self._lookup(rec, "reconcile")
        if found is not None:
            return found
        try:
            for reply in (
                yield Call(
                    "fetch_open_orders", (symbol,), purpose="reconcile", span=self._span_of(rec)
                )
            ) or ():
                view = self._view_or_none(reply)
                if view is not None and view.client_order_id == cid:
                    return view
        except ccxt.BaseError:
            pass  # extra evidence only: the lookup by client id is what must answer
        try:
            since = (rec.submitted_ms or _now_ms()) - 60_000
            trades = (
                yield Call(
                    "fetch_my_trades", (symbol, since), purpose="reconcile", span=self._span_of(rec)
                )
            ) or ()
        except ccxt.BaseError:
            return None
        candidates = []
        for trade in trades:
            oid = trade.get("order") if isinstance(trade, Mapping) else None
            if (
                oid
                and trade.get("side") == "sell"
                and oid not in candidates
                and self.book.find(str(oid), None) is None
            ):
                candidates.append(str(oid))
        for oid in candidates[-5:]:
            try:
                view = self._view_or_none(
                    (
                        yield Call(
                            "fetch_order",
                            (oid, symbol),
                            purpose="reconcile",
                            span=self._span_of(rec),
                        )
                    )
                )
            except ccxt.BaseError:
                continue
            if view is not None and view.client_order_id == cid:
                return view
        return None

    def _holdings_dropped(self, rec: ExitRecord) -> Flow[bool]:
        """Whether holdings moved since the submit more than known exits explain.

        A filled sell lowers the total; a resting one lowers only what is free
        (it locks its amount). Either, unexplained, is evidence that the order
        exists; only holdings that moved neither way let it be called absent.
        """
        if rec.pre_total is None:
            return False
        free: Decimal | None = None
        try:
            if rec.market.contract:
                positions, started_ms, _ = yield FetchBalance(
                    self.book.next_ticket(), what="positions"
                )
                side, total, stamp = self.adapter.position(positions, rec.exit.symbol)
                if side != rec.position_side:
                    total = ZERO
            else:
                balance, started_ms, _ = yield FetchBalance(self.book.next_ticket())
                free, total, stamp = self.adapter.holdings(balance, rec.market.base)
        except ccxt.BaseError:
            return True  # no evidence either way: stay unknown
        if stamp is not None and stamp < (rec.submitted_ms or 0):
            return True  # a lagging snapshot from before the submit proves nothing
        if (
            stamp is None
            and not rec.market.contract
            and started_ms < (rec.submitted_ms or 0) + self.options.absent_after * 1000
        ):
            # No exchange time on it: only a fetch begun absent_after past the submit
            # is taken to show what the submit did (the balance may trail execution).
            return True

        since = rec.submitted_ms or 0
        tolerance = (rec.market.amount_step or Decimal("1e-12")) / 2
        explained = self.book.sold_since(rec.holding, since, exclude=rec)
        if total + explained < rec.pre_total - tolerance:
            return True
        if free is not None and rec.pre_free is not None:
            locked = self.book.reserved_since(rec.holding, since, exclude=rec)
            return free + locked < rec.pre_free - tolerance
        return False

    def _edit_took_effect(self, rec: ExitRecord) -> Flow[bool]:
        """Whether an edit whose reply was lost may have happened, from the order it amends.

        Most venues edit by cancel-and-replace: the old order's locked amount moves
        to the new one, so holdings cannot show it. The amended order can: still
        open with its old amount and price, the edit did nothing. Gone, final,
        changed or unreadable: it may have, and the edit stays UNKNOWN.
        """
        previous = rec.replaced
        order_id = previous.order_id if previous is not None else rec.replaces
        if not order_id:
            return True  # nothing to look at
        try:
            view = self._view_or_none(
                (
                    yield Call(
                        "fetch_order",
                        (order_id, rec.exit.symbol),
                        purpose="reconcile",
                        span=self._span_of(rec),
                    )
                )
            )
        except ccxt.BaseError:
            return True
        if view is None or view.is_final or view.id != order_id:
            return True
        price = to_decimal(view.raw.get("price"))
        asked = rec.call.price if rec.call is not None else None
        # It rests as the edit asked: the edit may have happened (an in-place amend).
        if view.amount == rec.amount and (asked is None or price == asked):
            return True
        if previous is None:
            return False  # it rests, and not as the edit asked: the edit did nothing
        old_price = to_decimal(previous.exit.price)
        return view.amount != previous.amount or (
            old_price is not None and price is not None and price != old_price
        )

    def _resolved(self, rec: ExitRecord, view: OrderView) -> Flow[None]:
        """An unknown outcome turned out to be a real order: remember it for retries."""
        self._acknowledged(rec, view)
        rec.exit = rec.exit.evolve(outcome=Outcome.RESTING)
        self.telemetry.event(
            self._span_of(rec), "nija_guard.reconciled", {"nija_guard.order_status": view.status}
        )
        with self.book.mutex:
            in_the_dark = not rec.caller_waiting and not rec.caller_informed
        if in_the_dark:
            # Only a caller left without an answer retries; one retry gets this order back.
            self.book.resolved.put(self._intent(rec), rec, self.clock())
        log.info(
            "reconciled exit %s: order %s is %s",
            rec.exit.exit_id,
            view.id,
            view.status,
            extra=self._log_fields(rec, "reconciled"),
        )
        yield from self._journal(rec, "submitted")
        yield from self._notify(
            rec, "nija_guard_outcome_resolved", exit=rec.exit, order=dict(view.raw)
        )
        yield from self._apply(rec, view)

    def _reconcile_prior(self, prior: ExitRecord, rec: ExitRecord) -> Flow[None]:
        """A new exit found the symbol UNKNOWN: resolve that first, or refuse."""
        try:
            state, _ = yield from self._reconcile(
                prior, self.clock() + self.options.reconcile_timeout
            )
        finally:
            with self.book.mutex:
                prior.reconciler = None
        if state == "unresolved":
            self._schedule(prior, progressed=False)
            yield from self._blocked(rec, prior, "unknown_outcome")
            raise OutcomeUnknown(
                f"{rec.key} is locked: the outcome of exit {prior.exit.exit_id} is still unknown",
                exit=rec.exit,
            )

    # =====================================================================================
    # The background side: polls, and orders the bot fetched itself
    # =====================================================================================
    def poll(self, rec: ExitRecord) -> Flow[None]:
        """One tracker step for a record whose order is not final (or UNKNOWN)."""
        if rec.settled:
            return
        if rec.phase == Phase.UNKNOWN:
            with self.book.mutex:
                busy = rec.reconciler is not None
                if not busy:
                    rec.reconciler = rec
            if busy:
                # An exit is reconciling it right now: look again later.
                self._schedule(rec, progressed=False)
                return
            state = "unresolved"
            try:
                if not rec.unknown_notified:
                    rec.unknown_notified = True
                    yield from self._journal(rec, "unknown")
                    yield from self._notify(
                        rec, "nija_guard_outcome_unknown", exit=rec.exit, error=rec.error
                    )
                state, _ = yield from self._reconcile(rec, self.clock())
            finally:
                with self.book.mutex:
                    rec.reconciler = None
                if state == "unresolved":
                    self._schedule(rec, progressed=False)
            return
        try:
            if rec.order_id is not None:
                reply = yield Call(
                    "fetch_order",
                    (rec.order_id, rec.exit.symbol),
                    purpose="poll",
                    span=self._span_of(rec),
                )
                view = self.adapter.order_view(reply)
            else:
                found = yield from self._lookup(rec, "poll")
                if found is None:
                    raise ccxt.OrderNotFound(f"no order with client id {rec.client_order_id}")
                view = found
        except Exception as error:
            log.debug("poll of %s failed: %s", rec.order_id, type(error).__name__)
            self._schedule(rec, progressed=False)
            return
        yield from self._apply(rec, view)

    def observe(
        self, method: str, args: Sequence[Any], result: Any, kwargs: Mapping[str, Any] | None = None
    ) -> Flow[None]:
        """Orders the bot fetched through the proxy settle our records too."""
        replies = result if isinstance(result, list) else [result]
        seen: set[str] = set()
        for reply in replies:
            if not isinstance(reply, Mapping):
                continue
            rec = self.book.find(
                str(reply["id"]) if reply.get("id") else None, reply.get("clientOrderId")
            )
            if rec is None or rec.settled or rec.phase == Phase.UNKNOWN:
                continue
            if rec.exit.order_id:
                seen.add(rec.exit.order_id)
            if method == "watch_orders":
                rec.streamed_by = self  # its later updates come pushed: polling is a safety net
            view = self._view_or_none(reply)
            if view is not None and view.status:
                yield from self._apply(rec, view)
        if method == "cancel_order" and not seen and args:
            # The cancel's answer says nothing we can read (alpaca: no body): ask about
            # the order now, so an exit right after the cancel finds the symbol free.
            rec = self.book.find(str(args[0]), None)
            if rec is not None and not rec.settled and rec.phase == Phase.ACTIVE:
                yield from self.poll(rec)
            return
        symbol = args[0] if args else (kwargs or {}).get("symbol")
        if method == "fetch_open_orders" and symbol:
            for rec in self.book.tracked_records():
                # Not among the open orders any more: final, but we do not know how. Poll now.
                if (
                    rec.exit.symbol == symbol
                    and rec.phase == Phase.ACTIVE
                    and rec.order_id not in seen
                ):
                    rec.next_poll = 0.0
                    yield Track(rec)

    def due(self, now: float) -> tuple[list[ExitRecord], float | None]:
        """This engine's records due for a poll, and when the next one falls due."""
        due, soonest = [], None
        for rec in self.book.tracked_records():
            if rec.owner is not self or rec.settled:
                continue
            if rec.next_poll <= now:
                due.append(rec)
            elif soonest is None or rec.next_poll < soonest:
                soonest = rec.next_poll
        return due, soonest

    def stream_lost(self) -> None:
        """This guard's order stream failed or closed: the orders it reported (ours or
        another guard's of the account) are polled at the normal pace again."""
        owners = []
        for rec in self.book.tracked_records():
            if rec.streamed_by is self:
                rec.streamed_by = None
                self._schedule(rec, progressed=True)
                if rec.owner not in owners:
                    owners.append(rec.owner)
        for owner in owners:
            owner.wake()  # their trackers may sleep until a poll now moved earlier

    def _schedule(self, rec: ExitRecord, *, progressed: bool) -> None:
        if rec.streamed_by is not None:
            # The stream reports this order: polling is a safety net, at the slowest pace.
            rec.poll_interval = self.options.poll_max_interval
        else:
            rec.poll_interval = (
                self.options.poll_interval
                if progressed or not rec.poll_interval
                else min(rec.poll_interval * 1.6, self.options.poll_max_interval)
            )
        rec.next_poll = self.clock() + rec.poll_interval
        rec.owner = rec.owner or self

    # =====================================================================================
    # Batches, buys, close-all
    # =====================================================================================
    def _batch(
        self,
        entry: EntryPoint,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        calls: list[OrderCall],
        markets: list[MarketInfo],
    ) -> Flow[Any]:
        """create_orders: each sell is prepared as its own exit; one batch is sent.

        A sell the guard refuses is left out of the batch and reported in place,
        as venues report their own rejections; a second sell of a symbol this
        batch already exits is refused at once. Buys go as they are.
        """
        bound = entry.bind(args, kwargs)
        slots: list[Any] = []  # per request: ExitRecord, OrderCall (as is), a refusal, or an order
        held: set[str] = set()
        try:
            for call, market in zip(calls, markets, strict=True):
                if not self.adapter.is_exit(call, market):
                    slots.append(call)
                    continue
                rec = self._new_record(call, market)
                if call.symbol in held:
                    yield from self._blocked(rec, None, "in_progress")
                    refusal = ExitInProgress(
                        f"this batch already exits {call.symbol}", exit=rec.exit
                    )
                    self._finish_call(rec, refusal)
                    slots.append(refusal)
                    continue
                try:
                    retried = yield from self._prepare(rec, call)
                except ccxt.BaseError as refusal:  # refused before anything was sent
                    self._finish_call(rec, refusal)
                    slots.append(refusal)
                    continue
                except BaseException as error:
                    self._finish_call(rec, error)
                    raise
                if retried is not None:
                    self._finish_call(rec, None)
                    slots.append(dict(retried.raw))
                    continue
                held.add(call.symbol)
                slots.append(rec)
        except BaseException as error:
            for slot in slots:
                if isinstance(slot, ExitRecord):
                    yield from self._abandon(slot)
                    self._finish_call(slot, error)
            raise
        records = [s for s in slots if isinstance(s, ExitRecord)]
        sendable = [s for s in slots if isinstance(s, (ExitRecord, OrderCall))]
        if not sendable:
            refusals = [s for s in slots if isinstance(s, BaseException)]
            if refusals and len(refusals) == len(slots):
                raise refusals[0]
            return [self._refused_slot(s) if isinstance(s, BaseException) else s for s in slots]
        for rec in records:
            rec.phase = Phase.SUBMITTING
            rec.caller_waiting = True
            rec.submitted_ms, rec.submitted_mono = _now_ms(), self.clock()
        requests = [self._batch_request(slot) for slot in sendable]
        try:
            replies = yield Call(
                entry.name, (requests, bound.get("params") or {}), purpose="submit"
            )
        except BaseException as error:
            return (yield from self._batch_failed(slots, records, error))
        results: list[Any] = []
        reply_iter = iter(replies or [])
        pending = list(records)
        for slot in slots:
            if isinstance(slot, BaseException):
                results.append(self._refused_slot(slot))
            elif isinstance(slot, Mapping):
                results.append(slot)
            elif isinstance(slot, ExitRecord):
                pending.remove(slot)
                try:
                    view = yield from self._submitted(slot, next(reply_iter, None))
                except Exception as error:  # this order was refused, or its fate is unknown
                    results.append(self._refused_slot(error, slot))
                    self._call_ended(slot, error)
                    self._finish_call(slot, error)
                    continue
                except BaseException as error:  # interrupted: the tracker has the rest
                    for rec in [slot, *pending]:
                        self._call_ended(rec, error)
                        self._finish_call(rec, error)
                    raise
                slot.caller_informed = True
                results.append(view.raw)
                self._call_ended(slot, None)
                self._finish_call(slot, None)
            else:
                reply = next(reply_iter, None)
                results.append(reply)
                if self.options.ownership == "ledger" and reply is not None:
                    yield from self._track_buy(slot, reply)
        return results

    def _batch_failed(
        self, slots: list[Any], records: list[ExitRecord], error: BaseException
    ) -> Flow[Any]:
        """The batch call itself failed: each sell is settled or reconciled on its own."""
        views: dict[int, OrderView] = {}
        first: BaseException | None = None
        for rec in records:
            try:
                views[id(rec)] = yield from self._submit_failed(rec, error)
            except Exception as raised:
                first = first or raised
            except BaseException as raised:
                for other in records:
                    self._call_ended(other, raised)
                    self._finish_call(other, raised)
                raise
        if first is None and not any(isinstance(s, OrderCall) for s in slots):
            # Every sell was found on the exchange: the batch went through after all.
            results = []
            for slot in slots:
                if isinstance(slot, ExitRecord):
                    slot.caller_informed = True
                    results.append(views[id(slot)].raw)
                else:
                    results.append(
                        self._refused_slot(slot) if isinstance(slot, BaseException) else slot
                    )
            for rec in records:
                self._call_ended(rec, None)
                self._finish_call(rec, None)
            return results
        final = first or error
        for rec in records:
            # Found orders are remembered: the bot's retry of the batch gets them back.
            self._call_ended(rec, final)
            self._finish_call(rec, final)
        if final is error:
            raise error
        raise final from error

    def _batch_request(self, slot: ExitRecord | OrderCall) -> dict[str, Any]:
        if isinstance(slot, OrderCall):
            return self.adapter.batch_request(slot, slot.amount, None, self.client)
        return self.adapter.batch_request(
            slot.call, slot.amount, slot.client_order_id or "", self.client
        )

    @staticmethod
    def _refused_slot(error: BaseException, rec: ExitRecord | None = None) -> dict[str, Any]:
        """A batch entry for an order the guard did not send, or whose fate is unknown."""
        if rec is not None and rec.last_order is not None:
            # The exchange acknowledged it (what failed came after: a journal write):
            # the order exists, and the bot gets it as it is.
            order = dict(rec.last_order.raw)
            order.setdefault("info", {})
            return order
        return {
            "id": None,
            "clientOrderId": rec.client_order_id if rec is not None else None,
            # Never "rejected" for an order that may exist.
            "status": None if isinstance(error, OutcomeUnknown) else "rejected",
            "info": {"nija_guard": f"{type(error).__name__}: {error}"},
        }

    def _passthrough(
        self,
        entry: EntryPoint,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        call: OrderCall,
        market: MarketInfo,
    ) -> Flow[Any]:
        """A buy: sent as the bot wrote it. In ledger mode its fills credit the ledger."""
        reply = yield Call(entry.name, tuple(args), dict(kwargs), purpose="buy")
        if self.options.ownership == "ledger":
            yield from self._track_buy(call, reply, market)
        return reply

    def _track_buy(
        self, call: OrderCall, reply: Any, market: MarketInfo | None = None
    ) -> Flow[None]:
        market = market or self.adapter.market_info(self.client, call.symbol)
        view = self._view_or_none(reply)
        if view is None:
            return
        known = self.book.find(view.id, view.client_order_id)
        if known is not None and known.kind == "buy" and not known.settled:
            # An edit the venue made in place (same id): still one order, credited once.
            if view.status is None:
                view = yield from self._confirm(known, view)
            yield from self._apply(known, view)
            return
        rec = ExitRecord(exit=self._exit_value(call), market=market, key=call.symbol, kind="buy")
        rec.exit = rec.exit.evolve(order_id=view.id, client_order_id=view.client_order_id)
        rec.owner = self
        self.book.track(rec)
        if view.status is None:
            view = yield from self._confirm(rec, view)
        yield from self._apply(rec, view)

    def _close_all(
        self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Flow[Any]:
        """close_all_positions: one account-wide exit that excludes every other."""
        bound = entry.bind(args, kwargs)
        params = bound.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise ccxt.BadRequest(f"{entry.name}(): params must be a dict")
        call = OrderCall(
            entry, bound, ACCOUNT_WIDE, "sell", "market", None, None, dict(params or {})
        )
        market = MarketInfo(ACCOUNT_WIDE, ACCOUNT_WIDE, "", None, None, None)
        rec = self._new_record(call, market)
        error: BaseException | None = None
        try:
            yield from self._notify(rec, "nija_guard_exit_requested", exit=rec.exit)
            try:
                yield from self._admit(rec, call)
                if self.durable:
                    yield from self._confirm_lease(rec)  # still ours right before the send
                reply = yield Call(entry.name, tuple(args), dict(kwargs), purpose="submit")
            finally:
                yield from self._unlock(rec)
            rec.exit = rec.exit.evolve(outcome=Outcome.FILLED)
            yield from self.observe("close_all_positions", (), reply)
            return reply
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish_call(rec, error)

    # =====================================================================================
    # Small pieces
    # =====================================================================================
    def _new_record(self, call: OrderCall, market: MarketInfo) -> ExitRecord:
        exit_value = self._exit_value(call)
        rec = ExitRecord(exit_value, market, call.symbol)
        rec.call = call
        rec.replaces = call.replaces
        rec.owner = self
        rec.bot_cid = self.adapter.bot_client_order_id(call)
        rec.span = self.telemetry.start_exit(exit_value)
        rec.metered = self.telemetry.metering()
        rec.span_context = rec.span.get_span_context()
        rec.started = self.clock()
        return rec

    def _reused_client_order_id(self, rec: ExitRecord) -> str | None:
        """A retry of a submit the exchange never got sends the same client id again."""
        if not self.book.not_placed:
            return None
        return self.book.not_placed.take(self._intent(rec), self.clock())

    @staticmethod
    def _intent(rec: ExitRecord) -> tuple[Any, ...]:
        """What makes a call "the same call again" (a retry after an unknown outcome):
        a stop-loss and a market sell of one amount are different calls. Built when
        first needed: most exits never look a retry up."""
        call = rec.call
        if not rec.intent and call is not None:
            rec.intent = (
                call.symbol,
                call.side,
                call.type,
                str(call.amount),
                str(call.price),
                str(call.cost),
                rec.bot_cid,
                call.entry.name,
                call.replaces,
                _params_key(call.params) if call.params else "",
            )
        return rec.intent

    def _exit_value(self, call: OrderCall) -> Exit:
        requested = call.amount if call.amount is not None else call.cost
        return make_exit(
            unique_id(),  # exit_id
            self.account,
            call.symbol,
            call.side,
            call.type,
            call.entry.name,  # method
            None if requested is None else float(requested),  # requested_amount
            None if call.price is None else float(call.price),  # price
            redact(call.params) if call.params else NO_PARAMS,  # params
            time.time(),  # created_at
        )

    def _acknowledged(self, rec: ExitRecord, view: OrderView, *, track: bool = True) -> None:
        with self.book.mutex:
            rec.last_order = rec.last_order or view
            rec.local_ack_ms = rec.local_ack_ms or _now_ms()
            rec.ack_seq = rec.ack_seq or self.book.ticket_locked()
            rec.exchange_ts = rec.exchange_ts or view.timestamp
            rec.phase = Phase.ACTIVE if not view.is_final else rec.phase
            changes: dict[str, Any] = {}
            if view.id and rec.exit.order_id != view.id:
                changes["order_id"] = view.id
            if view.client_order_id and not rec.exit.client_order_id:
                changes["client_order_id"] = view.client_order_id
            if changes:
                rec.exit = rec.exit.evolve(**changes)
            if track:
                self.book.track_locked(rec)

    def _reserve(self, rec: ExitRecord) -> None:
        """Hold the clamped amount (reserved at the balance refresh as the most it could be)."""
        self.book.settle_reservation(rec, ledger=self.options.ownership == "ledger")

    def _abandon(self, rec: ExitRecord) -> Flow[None]:
        """Nothing was sent: undo the reservation, give the lock back."""
        if rec.phase not in (Phase.ADMITTED,):
            return
        self.book.drop_sell(rec)
        if rec.ledger_reserved:
            self.book.ledger_add(rec.market.base, rec.ledger_reserved)
            rec.ledger_reserved = ZERO
        rec.phase = Phase.SETTLED
        rec.settled = True
        try:
            if rec.journaled:
                # Its "intent" row would otherwise wait for a recovery to find nothing.
                yield from self._journal(rec, "settled")
        except BackendUnavailable:
            pass  # the row stays; the next exit of the symbol finds no order and drops it
        finally:
            yield from self._unlock(rec, hand_back=True)

    # -- spans: stages of the exit, or linked background work after its call ------------
    def _stage(self, rec: ExitRecord, name: str) -> Any:
        if rec.span is not None:
            if rec.span is INVALID_SPAN:
                return INVALID_SPAN  # no tracing: no stages either
            span = self.telemetry.child(rec.span, name)
        else:
            span = self.telemetry.background(rec.span_context, name, rec.exit)
        if span.is_recording():  # a no-op span is never anyone's parent
            rec.stages.append(span)
        return span

    def _end_stage(self, rec: ExitRecord, span: Any) -> None:
        if span is INVALID_SPAN:
            return
        if span in rec.stages:
            rec.stages.remove(span)
        span.end()

    def _span_of(self, rec: ExitRecord) -> Any:
        """The innermost open span of the exit: hooks and broker calls run inside it."""
        return rec.stages[-1] if rec.stages else rec.span

    # -- leases that outlive the process: renewal, loss, crash recovery ---------------
    def _check_whole_close(self, rec: ExitRecord, call: OrderCall, amount: Decimal) -> None:
        """A close_position that can only sell everything may not sell more than allowed.

        The clamp (ledger ownership, a policy hook, other exits) may allow less
        than the whole position; a close the broker cannot size would sell it all.
        """
        whole = rec.pre_total
        if call.entry.kind != "close_position" or whole is None or self.adapter.sizes_close(call):
            return
        if amount < whole - (rec.market.amount_step or Decimal("1e-12")) / 2:
            raise GuardError(
                f"{call.entry.name}() would sell the whole {rec.key} position ({whole}) but "
                f"this exit may sell {amount}; sell that amount with an order instead"
            )

    def _take_lease(
        self, key: str, rec: ExitRecord, wait_until: float | None = None
    ) -> Flow[Lease | None]:
        """The backend lease of ``key`` for ``rec`` (also ``rec.lease`` from the moment it is
        taken: the lease keeper renews it and the unlock gives it back on every way
        out); None: another process holds it.

        In one process (the memory backend) the book's close lock is the only
        lock there is: the exit holds a local lease without a backend call.
        ``wait_until``: the deadline of an exit that waits (``on_conflict="wait"``).
        """
        if not self.durable:
            return LOCAL_LEASE
        wide = f"{self.account}/{ACCOUNT_WIDE}"
        if rec.behind_close_all and key != wide and (yield Holder(wide)) is not None:
            # Still there: do not take our lease just to give it back. Brief leases of
            # every waiting exit would keep close_all from ever seeing none.
            return None
        lease: Lease | None = yield Acquire(key, rec.exit.exit_id)
        if lease is None:
            return None
        rec.lease = lease
        if rec.phase == Phase.ADMITTED:
            # A lease lost while waiting (nothing sent yet): this one is ours again. Left
            # set, the lease check before the send would drop it without giving it back.
            rec.lease_lost = False
        # close_all_positions (the account-wide key) and a symbol's exit exclude each
        # other across processes too: each takes its own lease, then looks at the
        # other's; whichever looks second sees the first, so both can never go on.
        if key == wide:  # close_all_positions: any symbol's exit in flight (rare: a scan)
            others = [held for held in (yield Leases(f"{self.account}/")) if held.key != wide]
            # Both may look before either gives back: both would give back, and two that
            # wait would bounce in step until their deadlines. The one that waits keeps
            # the account-wide lease instead: a symbol's exit that sees it gives back
            # (its own rule), one that looked before goes on and ends; then none is left.
            if others and wait_until is not None:
                others = yield from self._hold_account_lease(rec, wait_until)
                if rec.lease is None:
                    return None  # lost while waiting: nothing was sent
        else:  # a symbol's exit: the one account-wide key (one lookup)
            others = [held for held in [(yield Holder(wide))] if held is not None]
            rec.behind_close_all = bool(others)
        if others:
            lease, rec.lease = rec.lease, None
            try:
                if lease is not None:  # (None: the keeper found it lost meanwhile)
                    yield Release(lease)
            except Exception:
                log.exception("lease release failed", extra=self._log_fields(rec, "lease"))
            return None
        return rec.lease

    def _hold_account_lease(self, rec: ExitRecord, wait_until: float) -> Flow[list[Lease]]:
        """close_all_positions waits, its lease kept, for symbols' exits to end.

        The lease is ``rec.lease``: the lease keeper renews it meanwhile, and the
        unlock gives it back however the wait ends (a backend error, a cancelled
        task). Returns the symbols' leases still held; ``rec.lease`` is None if the
        lease was lost meanwhile.
        """
        while True:
            lease = rec.lease
            if lease is None or rec.lease_lost:
                rec.lease = None
                return []
            wide = lease.key
            others = [held for held in (yield Leases(f"{self.account}/")) if held.key != wide]
            remaining = wait_until - self.clock()
            if not others or remaining <= 0:
                return others
            yield Sleep(min(self.options.poll_interval, self.options.lease_ttl / 3, remaining))
            # Renewed here too: the wait may outlast the keeper's interval.
            renewed = yield Renew(lease)
            if rec.lease is lease:
                rec.lease = renewed  # None: lost while waiting

    def _confirm_lease(self, rec: ExitRecord) -> Flow[None]:
        """Right before the submit: is the lease still ours? If not, send nothing."""
        lease = rec.lease
        renewed = (yield Renew(lease)) if lease is not None and not rec.lease_lost else None
        if renewed is not None:
            rec.lease = renewed
            return
        yield from self._lease_lost(rec, lease, retake=False)
        yield from self._blocked(rec, None, "lease_lost")
        raise ExitInProgress(
            f"the lease of {rec.key} was lost before the submit (another process may be "
            "exiting it); nothing was sent",
            exit=rec.exit,
        )

    def renew_leases(self) -> Flow[None]:
        """Keep this engine's leases alive while their exits are active; report lost ones."""
        for rec in self.book.lease_holders(self):
            lease = rec.lease
            if lease is None:
                continue
            try:
                renewed = yield Renew(lease)
            except BackendUnavailable as error:
                log.warning(
                    "could not renew the lease of %s: %s",
                    rec.key,
                    error,
                    extra=self._log_fields(rec, "lease_renew_failed"),
                )
                continue
            if rec.lease is not lease:
                continue  # passed on meanwhile
            if renewed is None:
                yield from self._lease_lost(rec, lease, retake=True)
            else:
                rec.lease = renewed

    def _lease_lost(self, rec: ExitRecord, lease: Lease | None, *, retake: bool) -> Flow[None]:
        """The backend no longer says we hold the lease: report it; maybe take it again."""
        rec.lease = None
        rec.lease_lost = True  # whatever happens next, this exit sends nothing new
        key = lease.key if lease is not None else self._lease_key(rec)
        log.error(
            "lease of %s lost (expired, or the backend lost it); another process may exit it",
            rec.key,
            extra=self._log_fields(rec, "lease_lost"),
        )
        self.telemetry.event(self._span_of(rec), "nija_guard.lease_lost", {"nija_guard.key": key})
        yield from self._notify(rec, "nija_guard_lease_lost", exit=rec.exit, key=key)
        if retake and rec.phase in (Phase.ACTIVE, Phase.UNKNOWN):
            # Its order may still rest on the exchange: hold the key again if
            # nobody else took it. An exit that has not sent anything never does.
            rec.lease = yield Acquire(key, rec.exit.exit_id)

    def _recover(self, rec: ExitRecord) -> Flow[ExitRecord | None]:
        """Exits another (now dead) process journaled as in flight on this symbol.

        We hold the symbol's lease, so their owners' leases expired: each is
        reconciled with the exchange before this exit goes on. A resting one
        takes the close lock; a final one is settled; one with no trace on the
        exchange is closed as never placed.
        """
        if not self.durable:
            return None
        entries = yield Scan(self.account, rec.exit.symbol)
        holder: ExitRecord | None = None
        for entry in entries:
            if entry.exit_id == rec.exit.exit_id or self.book.knows(entry.exit_id):
                continue
            orphan = self._orphan_record(rec.market, entry)
            span = self._stage(rec, "nija_guard.recover")
            try:
                view = yield from self._find(orphan)
                if view is None and entry.order_id:
                    try:
                        view = self._view_or_none(
                            (
                                yield Call(
                                    "fetch_order",
                                    (entry.order_id, entry.symbol),
                                    purpose="recover",
                                    span=self._span_of(rec),
                                )
                            )
                        )
                    except ccxt.BaseError:
                        view = None
            finally:
                self._end_stage(rec, span)
            if view is None:
                cid = entry.client_order_id
                unprovable = (
                    entry.state == "submitted"  # acknowledged once: no trace means we cannot look
                    or orphan.unanswered > 0  # a lookup failed: no evidence of absence
                    or not cid  # nothing to look for
                    or not self.adapter.lookup_by_client_id(entry.symbol, cid, self.client)
                )
                if unprovable:
                    self.book.drop_sell(orphan)  # not this process's sell to count
                    raise OutcomeUnknown(
                        f"exit {entry.exit_id} of a process that stopped is not found on the "
                        f"exchange yet; {rec.key} stays locked",
                        exit=rec.exit,
                    )
                log.warning(
                    "recovered exit %s of a stopped process: never placed",
                    entry.exit_id,
                    extra=self._log_fields(orphan, "recovered_not_placed"),
                )
                self.book.drop_sell(orphan)  # it never took anything from the balance
                yield Journal(entry.with_state("settled"))
                continue
            log.warning(
                "recovered exit %s of a stopped process: order %s is %s",
                entry.exit_id,
                view.id,
                view.status,
                extra=self._log_fields(orphan, "recovered"),
            )
            self._acknowledged(orphan, view)
            if view.is_final:
                self._account_fill(orphan, view)
                if self.book.claim_settlement(orphan):
                    yield from self._settle(orphan, view, outcome_of(view))
                continue
            self._account_fill(orphan, view)
            self._schedule(orphan, progressed=True)
            yield from self._journal(orphan, "submitted")
            yield Track(orphan)
            if holder is None and self.book.take_over(orphan, rec):
                rec.lease, orphan.lease = None, rec.lease
                holder = orphan
        return holder

    def recover(self, symbol: str) -> Flow[list[dict[str, Any]]]:
        """Operators: reconcile the journal's exits in flight on ``symbol`` now.

        Takes the symbol's lock and lease like an exit (refused if an exit of
        this process holds it, or another process's live lease does), runs the
        crash recovery, and reports what became of each journaled exit.
        """
        if not self.adapter.markets_loaded(self.client):
            yield Call("load_markets", purpose="markets")
        market = self.adapter.market_info(self.client, symbol)
        exit_value = Exit(
            exit_id=unique_id(),
            account=self.account,
            symbol=symbol,
            side="sell",
            type="recover",
            method="recover",
            requested_amount=None,
            created_at=time.time(),
        )
        rec = ExitRecord(exit=exit_value, market=market, key=symbol)
        rec.metered = self.telemetry.metering()
        rec.owner = self
        before = yield Scan(self.account, symbol)
        if not before:
            return []
        if self.book.admit(rec).verdict != "admitted":
            return [
                {
                    "exit_id": e.exit_id,
                    "symbol": symbol,
                    "result": "busy: an exit of this process holds the symbol",
                }
                for e in before
            ]
        try:
            rec.lease = yield Acquire(self._lease_key(rec), rec.exit.exit_id)
            if rec.lease is None:
                return [
                    {
                        "exit_id": e.exit_id,
                        "symbol": symbol,
                        "result": "busy: another process holds the lease",
                    }
                    for e in before
                ]
            holder = yield from self._recover(rec)
            after = {e.exit_id: e for e in (yield Scan(self.account, symbol))}
        finally:
            rec.phase = Phase.SETTLED
            yield from self._unlock(rec)
        report = []
        for entry in before:
            still = after.get(entry.exit_id)
            if still is None:
                result = "settled"
            elif holder is not None and holder.exit.exit_id == entry.exit_id:
                result = f"resting: order {still.order_id} is open; the guard tracks it"
            else:
                result = f"still {still.state}"
            report.append(
                {
                    "exit_id": entry.exit_id,
                    "symbol": symbol,
                    "client_order_id": entry.client_order_id,
                    "result": result,
                }
            )
        return report

    def resolve(self, exit_id: str, outcome: Outcome) -> Flow[dict[str, Any]]:
        """Operators: an exit whose outcome the guard cannot learn, settled by a person.

        For the cases the guard keeps a symbol locked rather than guess: an
        UNKNOWN exit of this process, or a journaled exit of a stopped process
        that the broker gives no way to look up. The operator has checked the
        broker: the order never reached it (``NOT_PLACED``), or it is final
        (``FILLED``, ``CANCELED``). An exit whose order the guard tracks as
        open is refused: cancel the order instead, and the guard follows.
        """
        if outcome not in (Outcome.NOT_PLACED, Outcome.FILLED, Outcome.CANCELED):
            raise ValueError("outcome must be Outcome.NOT_PLACED, FILLED or CANCELED")
        rec = next((r for r in self.book.tracked_records() if r.exit.exit_id == exit_id), None)
        if rec is not None:
            if rec.phase != Phase.UNKNOWN:
                raise GuardError(
                    f"exit {exit_id} is {rec.phase.value} with order {rec.order_id}: the guard "
                    "follows it; cancel the order on the exchange if it must go"
                )
            if self.book.claim_settlement(rec):
                log.warning(
                    "exit %s resolved by an operator: %s",
                    exit_id,
                    outcome.value,
                    extra=self._log_fields(rec, "resolved_by_operator"),
                )
                yield from self._settle(rec, None, outcome)
            return {"exit_id": exit_id, "symbol": rec.exit.symbol, "result": outcome.value}
        if self.durable:
            for entry in (yield Scan(self.account, None)):
                if entry.exit_id == exit_id:
                    log.warning(
                        "journaled exit %s of %s resolved by an operator: %s",
                        exit_id,
                        entry.symbol,
                        outcome.value,
                        extra={"nija_guard": {"event": "resolved_by_operator", "exit_id": exit_id}},
                    )
                    yield Journal(entry.with_state("settled"))
                    return {"exit_id": exit_id, "symbol": entry.symbol, "result": outcome.value}
        raise GuardError(f"no exit {exit_id} in flight in this account")

    def _orphan_record(self, market: MarketInfo, entry: JournalEntry) -> ExitRecord:
        amount = to_decimal(entry.amount)
        exit_value = Exit(
            exit_id=entry.exit_id,
            account=self.account,
            symbol=entry.symbol,
            side=entry.side,
            type="unknown",
            method="recovered",
            requested_amount=to_float(amount),
            client_order_id=entry.client_order_id,
            amount=to_float(amount),
            order_id=entry.order_id,
            created_at=entry.updated_at,
        )
        rec = ExitRecord(exit=exit_value, market=market, key=entry.symbol, phase=Phase.UNKNOWN)
        rec.metered = self.telemetry.metering()
        rec.amount = amount
        rec.owner = self
        # Look for its trades from a little before it was journaled.
        rec.submitted_ms = int(entry.updated_at * 1000) - 60_000
        rec.submitted_mono = self.clock() - 3600.0
        self.book.add_sell(rec)
        return rec

    def _lease_key(self, rec: ExitRecord) -> str:
        return f"{self.account}/{rec.key}"

    def _journal(self, rec: ExitRecord, state: str) -> Iterable[Any]:
        if not self.durable:
            return ()  # nothing outlives this process: no journal to recover from
        return self._write_journal(rec, state)

    def _write_journal(self, rec: ExitRecord, state: str) -> Flow[None]:
        rec.journaled = state != "settled"  # set first: a failed write may have landed
        yield Journal(
            JournalEntry(
                account=self.account,
                symbol=rec.exit.symbol,
                exit_id=rec.exit.exit_id,
                # Only an id the order carries: recovery must never look for one it lacks.
                client_order_id=rec.client_order_id if rec.cid_sent else None,
                state=state,
                side=rec.exit.side,
                amount=str(rec.amount) if rec.amount is not None else None,
                # An in-place edit carries no id of ours: recovery finds it by the order's.
                order_id=rec.order_id or (None if rec.cid_sent else rec.replaces),
                updated_at=time.time(),
                token=rec.lease.token if rec.lease is not None else None,
                key=self._lease_key(rec),
            )
        )

    def _notify(self, rec: ExitRecord, hook: str, **kwargs: Any) -> Iterable[Any]:
        """Call ``hook``'s implementations, if any (``yield from`` it): no generator is
        made for a hook nobody implements."""
        if not self.hooks.wants(hook):
            return ()
        return self._notify_now(Notify(hook, kwargs, self._span_of(rec)))

    @staticmethod
    def _notify_now(effect: Notify) -> Flow[None]:
        yield effect  # a generator: a driver may answer the effect with any value

    def _ask(self, rec: ExitRecord, hook: str, **kwargs: Any) -> Flow[Any]:
        if not self.hooks.wants(hook):
            return None
        return (yield Ask(hook, kwargs, self._span_of(rec)))

    def _blocked(self, rec: ExitRecord, holder: ExitRecord | None, reason: str) -> Flow[None]:
        rec.exit = rec.exit.evolve(outcome=Outcome.BLOCKED, reason=reason)
        self.book.count("blocked")
        self.telemetry.count("blocked", reason=reason)
        self.telemetry.event(
            self._span_of(rec), "nija_guard.blocked", {"nija_guard.reason": reason}
        )
        if log.isEnabledFor(logging.INFO):  # its fields cost more than the call
            log.info(
                "exit of %s blocked (%s)",
                rec.key,
                reason,
                extra=self._log_fields(rec, "blocked", reason=reason),
            )
        yield from self._notify(
            rec,
            "nija_guard_exit_blocked",
            exit=rec.exit,
            holder=holder.exit if holder is not None else None,
            reason=reason,
        )

    def _adopted_record(self, market: MarketInfo, view: OrderView) -> ExitRecord:
        exit_value = Exit(
            exit_id=unique_id(),
            account=self.account,
            symbol=market.symbol,
            side="sell",
            type=str(view.raw.get("type") or "limit"),
            method="adopted",
            requested_amount=to_float(view.amount),
            client_order_id=view.client_order_id,
            amount=to_float(view.amount),
            order_id=view.id,
            created_at=time.time(),
        )
        rec = ExitRecord(exit=exit_value, market=market, key=market.symbol, phase=Phase.ACTIVE)
        rec.metered = self.telemetry.metering()
        rec.amount = view.amount
        rec.filled = view.filled_or_zero()
        rec.exchange_ts = view.timestamp
        rec.local_ack_ms = _now_ms()
        rec.ack_seq = self.book.next_ticket()
        rec.owner = self
        rec.last_order = view
        rec.filled_before = rec.filled
        if self.options.ownership == "ledger" and rec.amount is not None:
            # What it may still sell is spoken for; its earlier fills are not ours to count.
            rec.ledger_reserved = max(rec.amount - rec.filled, ZERO)
            self.book.ledger_add(rec.market.base, -rec.ledger_reserved)
        self.book.add_sell(rec)
        return rec

    def _view_or_none(self, reply: Any) -> OrderView | None:
        if not isinstance(reply, Mapping):
            return None
        try:
            return self.adapter.order_view(reply)
        except Exception:
            return None

    def _looks_like_sell(
        self, entry: EntryPoint, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> bool:
        if entry.side == "sell":
            return True
        try:
            bound = entry.bind(args, kwargs)
        except ccxt.BaseError:
            return False
        side = bound.get("side")
        return isinstance(side, str) and side.strip().lower() == "sell"

    def _refused(
        self,
        entry: EntryPoint,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        error: BaseException,
    ) -> None:
        """A sell refused as bad input still gets its exit span (buys get none)."""
        if not self._looks_like_sell(entry, args, kwargs):
            return
        try:
            bound = entry.bind(args, kwargs)
        except ccxt.BaseError:
            bound = {}
        symbol = bound.get("symbol")
        exit_value = Exit(
            exit_id=unique_id(),
            account=self.account,
            symbol=symbol if isinstance(symbol, str) else repr(symbol),
            side="sell",
            type=str(entry.type or bound.get("type")),
            method=entry.name,
            requested_amount=None,
            outcome=Outcome.INVALID,
            created_at=time.time(),
        )
        self.telemetry.finish_exit(self.telemetry.start_exit(exit_value), exit_value, error)

    def _call_ended(self, rec: ExitRecord, error: BaseException | None) -> None:
        """The bot's call is over. If it ended without the order the exchange may
        have, remember the order for the bot's retry and leave the record to the
        tracker. No I/O: this also runs on cancellation."""
        if error is None:
            rec.caller_waiting = False  # it returned the order: nothing left in the dark
            return
        with self.book.mutex:
            rec.caller_waiting = False
            in_the_dark = (
                error is not None and not rec.caller_informed and rec.submitted_ms is not None
            )
            live = not rec.settled and rec.phase in (Phase.SUBMITTING, Phase.ACTIVE, Phase.UNKNOWN)
            exists = rec.last_order is not None and rec.exit.outcome not in (
                Outcome.REJECTED,
                Outcome.NOT_PLACED,
            )
        if not in_the_dark:
            return
        if exists:
            self.book.resolved.put(self._intent(rec), rec, self.clock())
        if live:
            if rec.phase == Phase.SUBMITTING:
                # Acknowledged (or maybe not): poll it by id, else reconcile.
                rec.phase = Phase.ACTIVE if rec.order_id else Phase.UNKNOWN
            self.book.track(rec)
            self._schedule(rec, progressed=True)

    def _retire_amended(self, previous: ExitRecord, rec: ExitRecord) -> None:
        """An edit kept the order's id (an in-place amend): one order, one record.

        The amended order's record retires without settling (no hooks: the order
        is not final); the edit carries its fills and takes over its books.
        """
        with self.book.mutex:
            if previous.settled:
                return
            previous.settled = True
            previous.phase = Phase.SETTLED
            rec.filled, rec.base_fee = previous.filled, previous.base_fee
            # What it filled is sold, not given back: the edit reserved only the rest,
            # and books only its own fills.
            sold = previous.filled - previous.filled_before
            rec.filled_before = previous.filled
        self.book.untrack(previous)
        self.book.drop_sell(previous)
        if previous.ledger_reserved:
            self.book.ledger_add(previous.market.base, previous.ledger_reserved - sold)
            previous.ledger_reserved = ZERO

    def _finish_call(self, rec: ExitRecord, error: BaseException | None) -> None:
        """End the exit's span with how the call ended."""
        if rec.exit.outcome is None:
            if error is None:
                outcome = Outcome.RESTING
            elif isinstance(error, OutcomeUnknown):
                outcome = Outcome.UNKNOWN
            elif isinstance(error, (ccxt.BadRequest, ccxt.InvalidOrder)):
                outcome = Outcome.INVALID
            elif isinstance(error, GuardError):
                outcome = Outcome.BLOCKED
            else:
                outcome = Outcome.ERROR
            rec.exit = rec.exit.evolve(outcome=outcome)
        if rec.span is not None:
            if rec.span is not INVALID_SPAN or rec.metered:  # else nothing to end or count
                self.telemetry.finish_exit(rec.span, rec.exit, error, rec.started)
            rec.span = None

    def _log_fields(self, rec: ExitRecord, event: str, **more: Any) -> dict[str, Any]:
        fields = {
            "event": event,
            "account": self.account,
            "symbol": rec.exit.symbol,
            "exit_id": rec.exit.exit_id,
            "client_order_id": rec.client_order_id,
            "order_id": rec.order_id,
            "requested_amount": rec.exit.requested_amount,
            "amount": rec.exit.amount,
            "phase": rec.phase.value,
        }
        fields.update(more)
        return {"nija_guard": fields}
