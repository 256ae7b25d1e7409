"""An account's shared state: close locks, in-flight exits, the ledger.

Every method is a short critical section under one mutex and never waits or
performs I/O: waiting and broker calls belong to the drivers. That is what
lets different symbols run in parallel, and threads of several event loops
share one book.

Tables shrink back: a symbol's entry exists only while an exit holds it or a
waiter waits on it; settled sells are kept for a bounded time and count, for
correcting stale balance snapshots; caches (dust, prices, resolved retries)
are bounded LRU maps.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

from ._backend import Lease
from ._model import ZERO, Exit, MarketInfo, OrderView, Phase

__all__ = ["Book", "ExitRecord"]

K = TypeVar("K")
V = TypeVar("V")

ACCOUNT_WIDE = "*"  # the key close_all_positions locks: conflicts with every symbol


class LRU(Generic[K, V]):
    """A thread-safe dict that forgets entries beyond ``size`` and after ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.size, self.ttl = size, ttl

    def get(self, key: K, now: float, ttl: float | None = None) -> V | None:
        """``ttl``: the caller's own window, at most ``self.ttl`` (which bounds keeping)."""
        item = self._data.get(key)  # one atomic lookup: no lock to read
        if item is None:
            return None
        if ttl is not None and now - item[0] > ttl:
            return None
        if now - item[0] > self.ttl:
            with self._lock:
                current = self._data.get(key)
                if current is not None and now - current[0] > self.ttl:
                    del self._data[key]
            return None
        return item[1]

    def take(self, key: K, now: float) -> V | None:
        """Get and forget: a value that may be used once."""
        with self._lock:
            item = self._data.pop(key, None)
        return None if item is None or now - item[0] > self.ttl else item[1]

    def put(self, key: K, value: V, now: float) -> None:
        self.put_many(((key, value),), now)

    def put_many(self, items: Iterable[tuple[K, V]], now: float) -> None:
        with self._lock:
            data = self._data
            for key, value in items:
                data[key] = (now, value)
                data.move_to_end(key)
            while len(data) > self.size:
                data.popitem(last=False)

    def refresh(self, key: K, value: V, now: float) -> None:
        """``put``, unless the same value was put less than a tenth of ``ttl`` ago."""
        item = self._data.get(key)  # a glance, no lock: at worst a put that was not needed
        if item is None or item[1] != value or now - item[0] > self.ttl / 10:
            self.put_many(((key, value),), now)

    def pop(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)  # no lock: a glance that lets the hot path skip a lookup


@dataclass(eq=False, init=False)
class ExitRecord:
    """The guard's mutable record of one exit (or one tracked buy in ledger mode).

    Defaults live on the class: a new record sets only what differs (one is made
    per exit, and a 50-field ``__init__`` was a tenth of an exit's own CPU).
    """

    exit: Exit
    market: MarketInfo
    key: str
    kind: str = "exit"  # "exit" | "buy"
    phase: Phase = Phase.ADMITTED
    ticket: int = 0
    amount: Decimal | None = None  # submitted
    filled: Decimal = ZERO  # observed so far
    base_fee: Decimal = ZERO
    credited: Decimal = ZERO  # ledger credit already booked (buys)
    exchange_ts: int | None = None  # when the exchange accepted the order
    local_ack_ms: int | None = None
    submitted_ms: int | None = None  # local wall clock when the submit began
    submitted_mono: float | None = None
    pre_total: Decimal | None = None  # holdings total before submit: evidence for reconciling
    pre_free: Decimal | None = None  # free holdings before submit: a resting order locks them
    settled: bool = False
    journaled: bool = False  # the backend has a row for it that is not settled
    lease: Lease | None = None
    owner: Any = None  # the Guard that tracks this record
    intent: tuple[Any, ...] = ()
    next_poll: float = 0.0
    poll_interval: float = 0.0
    polls: int = 0
    reconciler: ExitRecord | None = None
    replacer: ExitRecord | None = None
    ledger_reserved: Decimal = ZERO
    span: Any = None  # the exit span, while the bot's call runs
    span_context: Any = None  # what background spans link to
    stages: list[Any] = field(default_factory=list)  # open stage spans, innermost last
    started: float = 0.0
    last_order: OrderView | None = None
    settled_mono: float | None = None
    error: BaseException | None = None
    replaces: str | None = None  # the order id (or client id) an edit amends
    sellable: Decimal | None = None  # holdings the clamp saw: what a full close is judged by
    replaced: ExitRecord | None = None  # the exit an edit took the lock from
    call: Any = None  # the parsed OrderCall
    unknown_notified: bool = False
    cid_sent: bool = True  # the broker's order carries client_order_id (findable by it)
    unanswered: int = 0  # lookups of the last reconcile round that failed without an answer
    caller_waiting: bool = False  # the bot's call is still running: it will get the answer
    caller_informed: bool = False  # the bot's call returned this order
    final_ts: int | None = None  # when the exchange made the order final (its clock)
    filled_before: Decimal = ZERO  # fills that happened before we adopted the order
    lease_lost: bool = False  # its backend lease was lost once: it may not submit
    last_fill_ts: int | None = None  # exchange clock: the last fill seen
    position_side: str | None = None  # derivatives: the side of the position it closes
    streamed_by: Any = None  # the engine whose order stream reports this order: poll rarely
    bot_cid: str | None = None  # the client id the bot itself put in the call's params
    metered: bool = False  # metrics go somewhere (an SDK): looked up once, when the exit began
    ack_seq: int | None = None  # the book's ticket when the order was acknowledged here
    behind_close_all: bool = False  # gave its lease back to close_all_positions: peek first

    def __init__(self, exit: Exit, market: MarketInfo, key: str, **fields: Any) -> None:
        self.exit, self.market, self.key = exit, market, key
        self.stages = []
        for name, value in fields.items():
            if name not in _RECORD_FIELDS:
                raise TypeError(f"ExitRecord has no field {name!r}")
            setattr(self, name, value)

    @property
    def holding(self) -> str:
        """What this exit sells from: the base asset (spot), or one side of a position."""
        if self.market.contract:
            return f"{self.market.symbol}#{self.position_side or 'flat'}"
        return self.market.base

    @property
    def order_id(self) -> str | None:
        return self.exit.order_id

    @property
    def client_order_id(self) -> str | None:
        return self.exit.client_order_id

    def not_reflected_in(
        self, snapshot_ms: int | None, snapshot_local_ms: int, reader: int | None = None
    ) -> Decimal:
        """How much this sell is missing from a balance snapshot taken at ``snapshot_ms``.

        An exchange moves an order's amount from free to used when it accepts
        it; fills then take it out of used. A snapshot older than the order's
        acceptance still shows the amount as free, so it must be subtracted:
        the whole amount while the order may still fill, what it filled once
        it is final. ``reader``: the admission ticket of the exit whose snapshot
        it is (see :func:`_accepted_before`).
        """
        if self.kind != "exit" or self.amount is None:
            return ZERO
        if self.exchange_ts is not None and snapshot_ms is not None:
            reflected = _accepted_before(self.exchange_ts, self.ack_seq, snapshot_ms, reader)
        elif self.local_ack_ms is not None:
            reflected = _accepted_before(self.local_ack_ms, self.ack_seq, snapshot_local_ms, reader)
        else:
            reflected = False  # not accepted yet: it may take its amount any moment
        if reflected:
            return ZERO
        return self.filled if self.settled else self.amount


_RECORD_FIELDS = frozenset(ExitRecord.__dataclass_fields__)


def _accepted_before(
    exchange_ts: int, ack_seq: int | None, snapshot_ms: int, reader: int | None
) -> bool:
    """Whether a snapshot stamped ``snapshot_ms`` shows an order the exchange stamped
    ``exchange_ts``: it does when the order is older. Venues stamp a balance with
    its last change, so one millisecond is usually the order itself; but two exits
    of one asset through two symbols run side by side, and a read of the same
    millisecond may have come first. Then what happened here decides: the order was
    acknowledged before the reader's balance fetch began, or it counts as not shown
    (``ack_seq`` and ``reader`` are tickets of one book).
    """
    if exchange_ts != snapshot_ms:
        return exchange_ts < snapshot_ms
    return reader is None or ack_seq is None or ack_seq < reader


@dataclass(slots=True)
class SettledSell:
    """What a final sell leaves behind: its fill and when the exchange accepted it.

    Never changed once made (not frozen: that would cost a setattr call per field,
    once per exit)."""

    exchange_ts: int | None
    local_ack_ms: int | None
    submitted_ms: int | None
    filled: Decimal
    settled_mono: float
    amount: Decimal = ZERO
    final_ts: int | None = None  # exchange clock: when the order became final
    settled_ms: int = 0  # local wall clock: when the guard saw it final
    last_fill_ts: int | None = None  # exchange clock: its last fill (what moves a position)
    ack_seq: int | None = None  # the book's ticket when it was acknowledged here

    # From this exchange time on, a snapshot shows the sell whole: no correction.
    quiet: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.exchange_ts is not None:
            self.quiet = max(self.exchange_ts, self.final_ts or self.exchange_ts)

    def reflected_in(
        self, snapshot_ms: int | None, snapshot_local_ms: int, reader: int | None = None
    ) -> bool:
        if self.exchange_ts is not None and snapshot_ms is not None:
            return _accepted_before(self.exchange_ts, self.ack_seq, snapshot_ms, reader)
        if self.local_ack_ms is not None:
            # Local ack vs the fetch's local start: a same-millisecond tie is decided
            # by the book's tickets, as for exchange times.
            return _accepted_before(self.local_ack_ms, self.ack_seq, snapshot_local_ms, reader)
        return False

    def correction(
        self, snapshot_ms: int | None, snapshot_local_ms: int, reader: int | None = None
    ) -> Decimal:
        """What to take off a snapshot's free balance for this final sell.

        Taken before the exchange accepted it: the snapshot still counts what it
        sold. Taken while it rested: the snapshot shows its unfilled part as
        locked, which the exchange has given back since: add it back, but only
        when the exchange's own clocks prove the order (the snapshot's and the
        order's final timestamp); otherwise never count on it.
        """
        if not self.reflected_in(snapshot_ms, snapshot_local_ms, reader):
            return self.filled
        if (
            self.final_ts is not None
            and snapshot_ms is not None
            and self.exchange_ts is not None
            and snapshot_ms < self.final_ts
        ):
            return -(self.amount - self.filled)
        return ZERO


@dataclass
class AssetSells:
    inflight: list[ExitRecord] = field(default_factory=list)
    settled: deque[SettledSell] = field(
        default_factory=lambda: deque(maxlen=Book.SETTLED_KEEP_PER_ASSET)
    )
    # A snapshot from this exchange time on shows every settled sell whole, so a
    # fresh one skips them all at once. None: unknown (a sell without exchange
    # time is kept). May run ahead of the sells still kept: that only costs a look.
    quiet_by: int | None = -1
    # The latest acknowledgement ticket among the settled sells (kept or gone): a
    # snapshot of the quiet_by millisecond read by an exit admitted after it shows
    # them all whole too.
    acked_by: int = 0

    def add_settled(self, sell: SettledSell) -> None:
        self.settled.append(sell)
        if sell.ack_seq is not None and sell.ack_seq > self.acked_by:
            self.acked_by = sell.ack_seq
        if sell.quiet is None:
            self.quiet_by = None
        elif self.quiet_by is not None:
            self.quiet_by = max(self.quiet_by, sell.quiet)


@dataclass
class SymbolState:
    holder: ExitRecord | None = None
    generation: int = 0
    waiters: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Admission:
    """What :meth:`Book.admit` decided: ``admitted``, ``reconcile`` or ``conflict``."""

    verdict: str
    holder: ExitRecord | None = None
    generation: int = 0
    handed_over: ExitRecord | None = None


ADMITTED = Admission("admitted")  # the usual answer: one shared, never changed


@dataclass
class BalanceFlight:
    """One fetch_balance shared by every exit admitted before it started.

    ``ticket`` and ``started_ms`` are set when the request starts; ``after`` is
    the flight that must finish first (it started too early for our joiners).
    """

    ticket: int = 0
    started_ms: int = 0
    after: BalanceFlight | None = None
    what: str = "balance"
    finished: bool = False
    # Made only for a thread that waits (Book.event_of): most fetches have no joiner.
    done: threading.Event | None = None
    result: Any = None
    error: BaseException | None = None
    # Made for the first task that waits (Book.balance_subscribe), like ``done``.
    callbacks: list[Callable[[], None]] | None = None

    @property
    def abandoned(self) -> bool:
        """Its leader was cancelled: joiners must plan again, not inherit the cancellation."""
        return self.error is not None and not isinstance(self.error, Exception)


class Book:
    """Shared state of one account, across every guard (and thread) using it."""

    # How long, and how many, settled sells are kept to correct lagging balance
    # snapshots. Broker balance lag is milliseconds to seconds; this is far beyond.
    SETTLED_KEEP_SECONDS = 120.0
    SETTLED_KEEP_PER_ASSET = 64

    def __init__(self, account: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.account = account
        self.mutex = threading.Lock()
        self.clock = clock
        self.symbols: dict[str, SymbolState] = {}
        self.sells: dict[str, AssetSells] = {}  # asset -> in flight and recently settled
        self.ledger: dict[str, Decimal] = {}
        self.ownership: str | None = None
        self.tracked: dict[str, ExitRecord] = {}  # exit_id -> records awaiting a final status
        self.by_order_id: dict[str, ExitRecord] = {}
        self.by_client_id: dict[str, ExitRecord] = {}
        self.resolved: LRU[tuple[Any, ...], ExitRecord] = LRU(1024, 300.0)
        self.not_placed: LRU[tuple[Any, ...], str | None] = LRU(1024, 300.0)
        self.dust: LRU[str, Decimal] = LRU(4096, 3600.0)
        self.prices: LRU[str, Decimal] = LRU(4096, 600.0)
        # The last fetch_tickers reply whose prices were kept: a single flight hands
        # one reply to every exit that waited on it, and it is read once, not by each.
        self.prices_from: Any = None
        self.adopted: set[str] = set()
        # Whether fetch_open_orders() lists every symbol here: None until tried.
        self.lists_open_orders: bool | None = None
        # Assets with settled sells, by when to look at them again: an asset that is
        # never traded again still lets its settled sells go (100,000 symbols...).
        self._sweep_queue: list[tuple[float, str]] = []  # a heap: the soonest first
        self._scheduled: set[str] = set()
        # per kind: [on the wire, gathering joiners (not started), latest finished]
        self.flights: dict[str, list[BalanceFlight | None]] = {}
        self._tickets = itertools.count(1)
        self.counters: dict[str, int] = {}
        self.backend: Any = None  # set by whoever creates the book
        self.engines: weakref.WeakSet[Any] = weakref.WeakSet()  # every live guard's engine

    # -- tickets order admissions and balance fetches ------------------------------
    def next_ticket(self) -> int:
        with self.mutex:
            return next(self._tickets)

    def ticket_locked(self) -> int:
        """``next_ticket``, for a caller that holds the mutex."""
        return next(self._tickets)

    def count(self, name: str, n: int = 1) -> None:
        with self.mutex:
            self.counters[name] = self.counters.get(name, 0) + n

    # -- the close lock ------------------------------------------------------------------
    def admit(self, rec: ExitRecord) -> Admission:
        """Try to take the close lock of ``rec.key`` for ``rec``; never waits."""
        with self.mutex:
            if rec.key != ACCOUNT_WIDE:
                wide = self.symbols.get(ACCOUNT_WIDE)
                if wide is not None and wide.holder is not None:
                    return Admission("conflict", wide.holder, wide.generation)
            else:
                for key, other in self.symbols.items():
                    if key != ACCOUNT_WIDE and other.holder is not None:
                        return Admission("conflict", other.holder, other.generation)
            state = self.symbols.get(rec.key)
            if state is None:
                state = self.symbols[rec.key] = SymbolState(generation=next(self._tickets))
            holder = state.holder
            if holder is None:
                state.holder = rec
                rec.ticket = next(self._tickets)
                rec.phase = Phase.ADMITTED
                return ADMITTED
            if rec.replaces is not None and rec.replaces in (
                holder.order_id,
                holder.client_order_id,
            ):
                # An edit of the order that holds the lock: the lock passes to the edit.
                state.holder = rec
                rec.ticket = next(self._tickets)
                rec.phase = Phase.ADMITTED
                holder.replacer = rec
                return Admission("admitted", handed_over=holder)
            if holder.phase == Phase.UNKNOWN and holder.reconciler is None:
                holder.reconciler = rec
                return Admission("reconcile", holder, state.generation)
            return Admission("conflict", holder, state.generation)

    def take_over(self, rec: ExitRecord, previous: ExitRecord) -> bool:
        """Hand the lock ``previous`` holds to ``rec`` (replace, reconcile). Atomic."""
        with self.mutex:
            state = self.symbols.get(rec.key)
            if state is None or state.holder is not previous:
                return False
            state.holder = rec
            rec.ticket = next(self._tickets)
            rec.phase = Phase.ADMITTED
            return True

    def hand_back(self, previous: ExitRecord, rec: ExitRecord) -> bool:
        """Return the lock ``rec`` took over from ``previous`` (a failed edit). Atomic."""
        with self.mutex:
            state = self.symbols.get(rec.key)
            if state is None or state.holder is not rec:
                return False
            state.holder = previous
            return True

    def release(self, rec: ExitRecord) -> list[Callable[[], None]]:
        """Give up ``rec``'s lock if it holds it; returns the waiters to wake outside the mutex."""
        with self.mutex:
            state = self.symbols.get(rec.key)
            if state is None or state.holder is not rec:
                return []
            state.holder = None
            state.generation = next(self._tickets)
            waiters, state.waiters = state.waiters, []
            del self.symbols[rec.key]
            return waiters

    def holds(self, rec: ExitRecord) -> bool:
        with self.mutex:
            state = self.symbols.get(rec.key)
            return state is not None and state.holder is rec

    def add_waiter(self, key: str, generation: int, wake: Callable[[], None]) -> bool:
        """Call ``wake`` at the next release of ``key``; False if it already happened."""
        with self.mutex:
            state = self.symbols.get(key)
            if state is None or state.generation != generation or state.holder is None:
                return False
            state.waiters.append(wake)
            return True

    def remove_waiter(self, key: str, wake: Callable[[], None]) -> None:
        with self.mutex:
            state = self.symbols.get(key)
            if state is not None and wake in state.waiters:
                state.waiters.remove(wake)

    def lease_holders(self, owner: Any) -> list[ExitRecord]:
        """Lock holders of ``owner`` (an engine) that hold a backend lease."""
        with self.mutex:
            return [
                s.holder
                for s in self.symbols.values()
                if s.holder is not None and s.holder.lease is not None and s.holder.owner is owner
            ]

    def knows(self, exit_id: str) -> bool:
        """Whether an exit of this process is alive (tracked, or holding a lock)."""
        with self.mutex:
            if exit_id in self.tracked:
                return True
            return any(
                s.holder is not None and s.holder.exit.exit_id == exit_id
                for s in self.symbols.values()
            )

    def holder_of(self, key: str) -> ExitRecord | None:
        with self.mutex:
            state = self.symbols.get(key)
            return state.holder if state else None

    def locked_keys(self) -> list[str]:
        with self.mutex:
            return [k for k, s in self.symbols.items() if s.holder is not None]

    # -- holdings single flight (balances, positions) -----------------------------------
    def balance_plan(self, ticket: int, what: str = "balance") -> tuple[str, BalanceFlight]:
        """How an exit admitted at ``ticket`` gets holdings fetched after its admission.

        ``("use", f)``: a finished fetch started after admission; ``("join", f)``:
        wait for ``f``; ``("lead", f)``: fetch for everyone who joined ``f``; if
        ``f.after`` is set, first wait for it, then call :meth:`balance_start`
        (with nothing on the wire, ``f`` is started here: one critical section).
        At most two fetches serve any burst: the one on the wire, and the next.
        ``what`` keeps balances and positions apart.
        """
        with self.mutex:
            slots = self.flights.setdefault(what, [None, None, None])
            current, pending, latest = slots
            if latest is not None and latest.ticket > ticket and latest.error is None:
                return "use", latest
            if current is not None and current.ticket > ticket:
                return "join", current
            if pending is not None:
                return "join", pending
            flight = BalanceFlight(after=current, what=what)
            if current is None:  # nobody to wait for: on the wire at once
                flight.ticket = next(self._tickets)
                flight.started_ms = int(time.time() * 1000)
                slots[0] = flight
            else:
                slots[1] = flight
            return "lead", flight

    def balance_start(self, flight: BalanceFlight, started_ms: int) -> None:
        with self.mutex:
            slots = self.flights[flight.what]
            if slots[1] is flight:
                slots[1] = None
            flight.ticket = next(self._tickets)  # after every joiner's admission
            flight.started_ms = started_ms
            flight.after = None
            slots[0] = flight

    def balance_done(self, flight: BalanceFlight) -> None:
        """The leader is done (or gave up, even before starting): wake every joiner."""
        with self.mutex:
            slots = self.flights[flight.what]
            if slots[0] is flight:
                slots[0] = None
            if slots[1] is flight:
                slots[1] = None
            if flight.error is None and (slots[2] is None or flight.ticket > slots[2].ticket):
                slots[2] = flight
            callbacks, flight.callbacks = flight.callbacks or (), None
            flight.finished = True
            if flight.done is not None:
                flight.done.set()
        for callback in callbacks:
            callback()

    def forget_holdings(self) -> None:
        """Drop the cached snapshots: the next exit fetches anew (a flush)."""
        with self.mutex:
            for slots in self.flights.values():
                slots[2] = None

    def event_of(self, flight: BalanceFlight) -> threading.Event:
        """An event set when ``flight`` is done, for a thread to wait on."""
        with self.mutex:
            if flight.done is None:
                flight.done = threading.Event()
                if flight.finished:
                    flight.done.set()
            return flight.done

    def balance_subscribe(self, flight: BalanceFlight, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when ``flight`` is done; False if it is done already."""
        with self.mutex:
            if flight.finished:
                return False
            if flight.callbacks is None:
                flight.callbacks = []
            flight.callbacks.append(callback)
            return True

    # -- in-flight sells and stale balances ----------------------------------------
    def add_sell(self, rec: ExitRecord) -> None:
        with self.mutex:
            self._sells(rec.holding).inflight.append(rec)

    def drop_sell(self, rec: ExitRecord) -> None:
        """Forget a sell that never reached the exchange's book."""
        with self.mutex:
            sells = self.sells.get(rec.holding)
            if sells is not None and rec in sells.inflight:
                sells.inflight.remove(rec)
                self._maybe_forget(rec.holding, sells)

    def settle(self, rec: ExitRecord) -> None:
        """A record is final: no longer tracked; an exit's sell is kept for stale snapshots."""
        holding = rec.holding if rec.kind == "exit" else None
        with self.mutex:
            self._untrack(rec)
            if holding is not None:
                self._settle_sell(rec, holding)

    def _settle_sell(self, rec: ExitRecord, holding: str) -> None:
        """A sell is final: keep what it filled, for snapshots that do not show it yet."""
        # Called under the mutex (settle).
        sells = self.sells.get(holding)
        if sells is None:
            return
        if rec in sells.inflight:
            sells.inflight.remove(rec)
        if rec.filled > 0 or (rec.final_ts is not None and rec.amount):
            sells.add_settled(
                SettledSell(
                    rec.exchange_ts,
                    rec.local_ack_ms,
                    rec.submitted_ms,
                    rec.filled,
                    self.clock(),
                    rec.amount or ZERO,
                    rec.final_ts,
                    int(time.time() * 1000),
                    rec.last_fill_ts,
                    rec.ack_seq,
                )
            )
            if holding not in self._scheduled:
                self._scheduled.add(holding)
                heapq.heappush(self._sweep_queue, (self.clock(), holding))
        self._maybe_forget(holding, sells)
        self._sweep()

    def _sweep(self) -> None:
        """Let other assets' settled sells go once they are past the keep window."""
        horizon = self.clock() - self.SETTLED_KEEP_SECONDS
        queue = self._sweep_queue
        while queue and queue[0][0] < horizon:
            _, asset = heapq.heappop(queue)
            self._scheduled.discard(asset)
            sells = self.sells.get(asset)
            if sells is None:
                continue
            self._maybe_forget(asset, sells)
            if asset in self.sells and sells.settled:
                # Newer ones remain: look again once the newest is past the window.
                self._scheduled.add(asset)
                heapq.heappush(queue, (sells.settled[-1].settled_mono, asset))

    def _sells(self, asset: str) -> AssetSells:
        sells = self.sells.get(asset)
        if sells is None:
            sells = self.sells[asset] = AssetSells()
        return sells

    def _maybe_forget(self, asset: str, sells: AssetSells) -> None:
        horizon = self.clock() - self.SETTLED_KEEP_SECONDS
        while sells.settled and sells.settled[0].settled_mono < horizon:
            sells.settled.popleft()
        if not sells.inflight and not sells.settled:
            del self.sells[asset]

    def unreflected_sells(
        self,
        asset: str,
        snapshot_ms: int | None,
        snapshot_local_ms: int,
        exclude: ExitRecord,
        positional: bool = False,
    ) -> Decimal:
        """What other exits sold or reserve that a snapshot does not show yet.

        ``positional``: a derivatives position, which a resting reduce-only order
        does not lock: every other exit in flight may still take its whole amount,
        and a final one's fills show only in snapshots newer than its end.
        """
        with self.mutex:
            return self._unreflected(asset, snapshot_ms, snapshot_local_ms, exclude, positional)

    def reserve_sellable(
        self,
        rec: ExitRecord,
        free: Decimal,
        snapshot_ms: int | None,
        snapshot_local_ms: int,
        *,
        freed: Decimal = ZERO,
        ledger: bool = False,
        ledger_freed: Decimal = ZERO,
        reader: int | None = None,
    ) -> Decimal:
        """What ``rec`` may sell of its asset, and the most it will sell reserved, at once.

        Two symbols of one asset (BTC/USDT, BTC/EUR) have two close locks: their
        exits run side by side. Each one's sellable (the snapshot's free amount,
        less what other sells took that the snapshot does not show, capped by
        the ledger) and its reservation are one critical section, so the second
        sees the first's reservation: together they never sell more than there
        is. The reservation is the requested amount (everything, unsized) capped
        at the sellable; the clamp only ever lowers it (:meth:`settle_reservation`).
        ``freed``: what an edit's amended order had locked; ``ledger_freed``: its
        ledger reservation not yet filled. ``reader``: the ticket of the balance
        fetch the snapshot came from, taken when it started (see
        :func:`_accepted_before`); without it, the exit's admission ticket, which
        is older, so a tie is read the cautious way.
        """
        asset = rec.holding
        requested = rec.call.amount if rec.call is not None else None
        with self.mutex:
            # Same-millisecond ties are judged by what this book saw first.
            unreflected = self._unreflected(
                asset, snapshot_ms, snapshot_local_ms, rec, reader=reader or rec.ticket
            )
            sellable = free - unreflected + freed
            if ledger:
                sellable = min(sellable, max(self.ledger.get(asset, ZERO), ZERO) + ledger_freed)
            sellable = max(sellable, ZERO)
            hold = sellable if requested is None else min(requested, sellable)
            rec.amount = hold  # other exits of the asset count it from now on
            inflight = self._sells(asset).inflight
            if rec not in inflight:
                inflight.append(rec)
            if ledger and hold > rec.ledger_reserved:
                # An edit may hold more than the ledger has: the amended order's part.
                # That part is owed (a negative ledger) until the amended order gives
                # its own reservation back; a floor at zero would forget the debt.
                self.ledger[asset] = self.ledger.get(asset, ZERO) + rec.ledger_reserved - hold
                rec.ledger_reserved = hold
            return sellable

    def settle_reservation(self, rec: ExitRecord, ledger: bool = False) -> None:
        """The clamp decided ``rec.amount``: hold that, give back the rest of the reservation."""
        with self.mutex:
            inflight = self._sells(rec.holding).inflight
            if rec not in inflight:
                inflight.append(rec)  # no reservation was made (a position's close)
            if ledger and rec.amount is not None and rec.ledger_reserved != rec.amount:
                self._ledger_add(rec.market.base, rec.ledger_reserved - rec.amount)
                rec.ledger_reserved = rec.amount

    def _unreflected(
        self,
        asset: str,
        snapshot_ms: int | None,
        snapshot_local_ms: int,
        exclude: ExitRecord,
        positional: bool = False,
        reader: int | None = None,
    ) -> Decimal:
        sells = self.sells.get(asset)
        if sells is None:
            return ZERO
        self._maybe_forget(asset, sells)
        total = ZERO
        for rec in sells.inflight:
            if rec is exclude:
                continue
            if positional:
                total += rec.amount or ZERO
            else:
                total += rec.not_reflected_in(snapshot_ms, snapshot_local_ms, reader)
        # Spot snapshots with an exchange time: settled sells it shows whole are skipped
        # (of its own millisecond, only those acknowledged before the reader's admission).
        seen_by = snapshot_ms if not positional else None
        fresh_by = sells.quiet_by
        if (
            seen_by is not None
            and fresh_by is not None
            and (
                seen_by > fresh_by
                or (seen_by == fresh_by and (reader is None or sells.acked_by < reader))
            )
        ):
            return total  # a fresh snapshot: it shows every settled sell whole
        quiet_by: int | None = -1  # recomputed over the sells kept now
        for done in sells.settled:
            if seen_by is not None:
                quiet = done.quiet
                if quiet is None:
                    quiet_by = None
                    # fall through: no exchange time, compare by local time
                else:
                    if quiet_by is not None:
                        quiet_by = max(quiet_by, quiet)
                    if seen_by > quiet or (seen_by == quiet and reader is None):
                        continue  # the snapshot shows it whole (a tie: correction decides)
            if positional:
                # A position moves only on fills: its time is its last change.
                if snapshot_ms is not None and done.last_fill_ts is not None:
                    seen = done.last_fill_ts <= snapshot_ms
                else:  # no exchange clock to compare: a fetch begun after we saw it final
                    seen = done.settled_ms <= snapshot_local_ms
                total += ZERO if seen else done.filled
            else:
                total += done.correction(snapshot_ms, snapshot_local_ms, reader)
        if seen_by is not None:
            sells.quiet_by = quiet_by
        return total

    def sold_since(self, asset: str, submitted_ms: int, exclude: ExitRecord) -> Decimal:
        """What other exits of ``asset`` submitted since ``submitted_ms`` filled."""
        with self.mutex:
            sells = self.sells.get(asset)
            if sells is None:
                return ZERO
            total = sum(
                (
                    r.filled
                    for r in sells.inflight
                    if r is not exclude and (r.submitted_ms or 0) >= submitted_ms
                ),
                ZERO,
            )
            return total + sum(
                (s.filled for s in sells.settled if (s.submitted_ms or 0) >= submitted_ms), ZERO
            )

    def reserved_since(self, asset: str, submitted_ms: int, exclude: ExitRecord) -> Decimal:
        """What other exits of ``asset`` submitted since ``submitted_ms`` lock or sold."""
        with self.mutex:
            sells = self.sells.get(asset)
            if sells is None:
                return ZERO
            total = sum(
                (
                    r.amount or ZERO
                    for r in sells.inflight
                    if r is not exclude and (r.submitted_ms or 0) >= submitted_ms
                ),
                ZERO,
            )
            return total + sum(
                (s.filled for s in sells.settled if (s.submitted_ms or 0) >= submitted_ms), ZERO
            )

    # -- ledger ----------------------------------------------------------------------
    def ledger_available(self, asset: str) -> Decimal:
        with self.mutex:
            return max(self.ledger.get(asset, ZERO), ZERO)

    def ledger_owned(self, asset: str, exclude: ExitRecord) -> Decimal:
        """What the bot still owns of ``asset`` besides ``exclude``: the ledger, and what
        other exits in flight hold reserved and have not sold (they may give it back)."""
        with self.mutex:
            owned = self.ledger.get(asset, ZERO)
            sells = self.sells.get(asset)
            for rec in sells.inflight if sells is not None else ():
                # An adopted order's earlier fills were never part of its reservation.
                sold = rec.filled - rec.filled_before
                if rec is not exclude and rec.ledger_reserved > sold:
                    owned += rec.ledger_reserved - sold
            return max(owned, ZERO)

    def ledger_add(self, asset: str, delta: Decimal) -> Decimal:
        with self.mutex:
            return self._ledger_add(asset, delta)

    def _ledger_add(self, asset: str, delta: Decimal) -> Decimal:
        before = self.ledger.get(asset, ZERO)
        value = before + delta
        # A debt (an edit's borrowed reservation) is kept until repaid; anything else
        # floors at zero: selling more than the ledger says never makes it negative.
        if value > 0 or (value < 0 and before < 0):
            self.ledger[asset] = value
        else:
            self.ledger.pop(asset, None)
            value = ZERO if value >= 0 else value
        return value

    # -- tracked orders ----------------------------------------------------------------
    def track(self, rec: ExitRecord) -> None:
        with self.mutex:
            self.track_locked(rec)

    def track_locked(self, rec: ExitRecord) -> None:
        """``track``, for a caller that holds the mutex."""
        exit = rec.exit
        self.tracked[exit.exit_id] = rec
        if exit.order_id:
            self.by_order_id[exit.order_id] = rec
        if exit.client_order_id:
            self.by_client_id[exit.client_order_id] = rec

    def untrack(self, rec: ExitRecord) -> None:
        with self.mutex:
            self._untrack(rec)

    def _untrack(self, rec: ExitRecord) -> None:
        exit = rec.exit
        self.tracked.pop(exit.exit_id, None)
        order_id, client_order_id = exit.order_id, exit.client_order_id
        if order_id and self.by_order_id.get(order_id) is rec:
            del self.by_order_id[order_id]
        if client_order_id and self.by_client_id.get(client_order_id) is rec:
            del self.by_client_id[client_order_id]

    def find(self, order_id: str | None, client_order_id: str | None) -> ExitRecord | None:
        with self.mutex:
            rec = self.by_order_id.get(order_id) if order_id else None
            if rec is None and client_order_id:
                rec = self.by_client_id.get(client_order_id)
            return rec

    def claim_settlement(self, rec: ExitRecord) -> bool:
        """True exactly once per record: whoever sees the final status first settles it."""
        with self.mutex:
            if rec.settled:
                return False
            rec.settled = True
            rec.settled_mono = self.clock()
            rec.phase = Phase.SETTLED
            return True

    def tracked_records(self) -> list[ExitRecord]:
        with self.mutex:
            return list(self.tracked.values())

    def iter_records(self) -> Iterator[ExitRecord]:
        return iter(self.tracked_records())

    # -- introspection --------------------------------------------------------------
    def table_sizes(self) -> dict[str, int]:
        with self.mutex:
            return {
                "symbols": len(self.symbols),
                "assets": len(self.sells),
                "sells": sum(len(v.inflight) + len(v.settled) for v in self.sells.values()),
                "tracked": len(self.tracked),
                "by_order_id": len(self.by_order_id),
                "by_client_id": len(self.by_client_id),
                "resolved": len(self.resolved),
                "dust": len(self.dust),
                "prices": len(self.prices),
                "ledger": len(self.ledger),
            }
