"""``nija-guard demo``: the same concurrent bot, unguarded then guarded, side by side.

The bot is written the way bots are. Every round it holds one coin of each
symbol and rests a take-profit limit sell for it. Then the market moves: some
coins spike through their take-profit (some fill only partly before the price
turns), then every coin drops through its stop. Several stop-loss workers
(threads) get the stop signal for every position; each reads the bot's own
position record, market-sells what it says, cancels the take-profit and marks
the position closed. Between the read and the mark another worker can read the
same record (a double-sell), and the record knows nothing of the take-profit's
fills (a stop-loss racing a take-profit sells coins already sold).

The exchange makes it worse, as exchanges do: its balance endpoint lags its
matching engine, it loses some replies after executing the order (ghost
orders; the bot retries a timeout, as most bots do), and the price may whip
back up through a take-profit that still rests while the stop-loss runs. The
account is shared with another strategy, so an oversell is not rejected by the
exchange: it sells coins the bot does not own.

Guarded, the bot's code is the same except for one option: its stop-loss says
``params={"nija_guard": {"on_conflict": "replace"}}``, so the guard cancels the
resting take-profit, confirms the cancel, accounts for its partial fill, and
sells only the rest.

Scoring is exact whatever the threads' interleaving: after each round (and,
guarded, once the guard has settled every exit) the venue's own trades are
compared with the one coin per position the bot owned.
"""

from __future__ import annotations

import contextlib
import functools
import random
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import ccxt

from ._errors import DustPosition, ExitInProgress, NothingToSell, OutcomeUnknown
from ._guard import guard
from .testing import PaperExchange
from .testing._venue import Market, Venue

__all__ = ["DemoResult", "format_table", "run_demo"]

ENTRY = Decimal(100)  # every position is bought at 100 ...
TAKE_PROFIT = Decimal(102)  # ... with a take-profit limit sell resting at 102 ...
STOPPED = Decimal(97)  # ... and the price ends each round below the stop
OWNED = Decimal(1)  # the bot's position in each coin
SHARED = Decimal(1)  # what another strategy in the same account holds of each coin
SETTLE_TIMEOUT = 15.0  # seconds the guard gets to settle a round's exits


@dataclass
class DemoResult:
    mode: str
    positions: int = 0
    double_sells: int = 0
    oversold: float = 0.0
    races: int = 0
    unsold: float = 0.0
    rejections: int = 0
    unknown_left: int = 0
    exits_completed: int = 0
    refused: int = 0
    rounds: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p99_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data["oversold"] = round(self.oversold, 8)
        data["unsold"] = round(self.unsold, 8)
        data["p50_ms"] = round(self.p50_ms, 3)
        data["p99_ms"] = round(self.p99_ms, 3)
        return data


@dataclass
class _Script:
    """What the market does to one round's positions (drawn from the seed)."""

    partial: dict[str, Decimal]  # symbol -> share of its take-profit filled, then the turn
    spiked: list[str]  # take-profit filled in full, then the drop: the bot's record is stale
    whipsaw: list[str]  # back up through the take-profit while the stop-losses run

    @classmethod
    def draw(cls, names: list[str], rng: random.Random) -> _Script:
        script = cls({}, [], [])
        for index, symbol in enumerate(names):
            if index == 0:
                # The lined-up race of every round: the take-profit filled, then the
                # price dropped before the bot noticed; all workers fire the stop at once.
                script.spiked.append(symbol)
                continue
            if index == 1:
                script.partial[symbol] = Decimal("0.5")  # a partial fill, every round
                continue
            draw = rng.random()
            if draw < 0.25:
                script.partial[symbol] = Decimal(rng.randint(1, 9)) / 10
            elif draw < 0.35:
                script.spiked.append(symbol)
            elif draw < 0.55:
                script.whipsaw.append(symbol)
        return script


def _exchange(
    symbols: int, seed: int, latency: float, ghost_rate: float
) -> tuple[PaperExchange, list[str]]:
    names = [f"C{i:03d}/USDT" for i in range(symbols)]
    markets = {s: Market(symbol=s, price=ENTRY, min_cost=Decimal(1)) for s in names}
    paper = PaperExchange(
        markets=markets,
        balances={s.split("/")[0]: OWNED + SHARED for s in names} | {"USDT": 10**9},
    )
    paper.latency = latency
    paper.venue.balance_lag = 0.05  # the broker's balance trails its matching engine
    paper.ghost_rate = ghost_rate
    paper.rng = random.Random(seed)
    return paper, names


def _in_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``count`` threads; a worker's crash is re-raised here."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def _broker_caught_up(venue: Venue) -> bool:
    """The balance endpoint (lagging) shows what the matching engine holds."""
    with venue.lock:
        shown = venue.balance()
        return all(
            shown.free.get(a, Decimal(0)) == venue.free.get(a, Decimal(0))
            and shown.used.get(a, Decimal(0)) == venue.used.get(a, Decimal(0))
            for a in set(venue.free) | set(venue.used)
        )


def _settled(client: Any) -> bool:
    status = client.nija_guard.status()
    return not status["locked"] and not status["unknown"]


class _Bot:
    """The bot: take-profits on entry, stop-loss workers on the drop."""

    def __init__(self, client: Any, names: list[str], guarded: bool, result: DemoResult) -> None:
        self.client = client
        self.names = names
        self.guarded = guarded
        self.result = result
        self.lock = threading.Lock()
        self.positions: dict[str, float] = {}  # the bot's own record
        self.take_profits: dict[str, str] = {}  # symbol -> the take-profit order id it knows
        # Guarded, the stop-loss replaces the resting take-profit (the one change).
        self.stop_params: dict[str, Any] = (
            {"nija_guard": {"on_conflict": "replace", "wait_timeout": 10}} if guarded else {}
        )

    def count(self, name: str, latency_from: float | None = None) -> None:
        with self.lock:
            setattr(self.result, name, getattr(self.result, name) + 1)
            if latency_from is not None:
                self.result.latencies_ms.append((time.perf_counter() - latency_from) * 1000)

    def timed_out(self) -> None:
        # The unguarded bot never learns what became of an order whose reply was
        # lost: it resends. (Guarded, the guard resolves it: counted at the end.)
        if not self.guarded:
            self.count("unknown_left")

    def enter(self, symbol: str) -> None:
        """The position is open: rest its take-profit."""
        self.positions[symbol] = float(OWNED)
        self.take_profits.pop(symbol, None)
        try:
            try:
                order = self.client.create_limit_sell_order(
                    symbol, float(OWNED), float(TAKE_PROFIT)
                )
            except ccxt.RequestTimeout:
                self.timed_out()
                order = self.client.create_limit_sell_order(
                    symbol, float(OWNED), float(TAKE_PROFIT)
                )
            self.take_profits[symbol] = order["id"]
        except (ExitInProgress, NothingToSell, DustPosition):
            self.count("refused")
        except OutcomeUnknown:
            pass  # the guard holds the symbol and resolves it
        except ccxt.RequestTimeout:
            self.timed_out()
        except ccxt.BaseError:
            self.count("rejections")

    def stop_loss(self, symbol: str) -> None:
        amount = self.positions.get(symbol, 0.0)  # read the record ...
        if amount <= 0:
            return
        started = time.perf_counter()
        try:
            try:
                self.client.create_market_sell_order(symbol, amount, self.stop_params)
            except ccxt.RequestTimeout:
                self.timed_out()
                self.client.create_market_sell_order(symbol, amount, self.stop_params)  # retry
            self.count("exits_completed", latency_from=started)
            take_profit = self.take_profits.get(symbol)
            if take_profit is not None:
                # ... then the take-profit (unless filled, or cancelled already: by
                # another worker, or by the guard)
                with contextlib.suppress(ccxt.BaseError):
                    self.client.cancel_order(take_profit, symbol)
        except (ExitInProgress, NothingToSell, DustPosition):
            self.count("refused")
        except OutcomeUnknown:
            pass  # the guard holds the symbol and resolves it
        except ccxt.RequestTimeout:
            self.timed_out()
        except ccxt.BaseError:
            self.count("rejections")
        self.positions[symbol] = 0.0  # ... and mark it closed, a little later


def _market_moves(venue: Venue, names: list[str], script: _Script) -> None:
    """Before the stop fires: spikes and partial fills, then the drop."""
    for symbol in script.spiked:
        venue.set_price(symbol, TAKE_PROFIT)  # every resting take-profit fills
    for symbol, share in script.partial.items():
        for order in venue.open_orders(symbol):
            if order.side == "sell" and order.type == "limit":
                # A buyer lifts part of the offer, then the price turns.
                venue.fill(order.id, (order.remaining * share).quantize(Decimal("0.0001")))
                break
    for symbol in names:
        venue.set_price(symbol, STOPPED)


def _whipsaw(
    venue: Venue, script: _Script, rng: random.Random, span: float, done: threading.Event
) -> None:
    """While the stop-losses run: prices spike back through the take-profit and fall."""
    moments = sorted((rng.uniform(0, span), s) for s in script.whipsaw)
    started = time.monotonic()
    for at, symbol in moments:
        if done.wait(max(0.0, started + at - time.monotonic())):
            return
        venue.set_price(symbol, TAKE_PROFIT)  # fills a take-profit still resting
        venue.set_price(symbol, STOPPED)


def _score_round(venue: Venue, names: list[str], result: DemoResult) -> None:
    """Compare the venue's sells with the one coin per position the bot owned."""
    with venue.lock:
        for symbol in names:
            sold = Decimal(0)
            past_position: set[str] = set()
            for trade in venue.trades:  # in execution order
                if trade.symbol == symbol and trade.side == "sell":
                    sold += trade.amount
                    if sold > OWNED:
                        past_position.add(trade.order_id)  # sold coins already sold
            result.double_sells += len(past_position)
            if sold > OWNED:
                result.oversold += float(sold - OWNED)
            else:
                result.unsold += float(OWNED - sold)
            if any(
                o.side == "sell" and o.type == "limit" and o.filled > 0
                for o in venue.all_orders(symbol)
            ):
                result.races += 1  # the take-profit filled, and the stop fired too
    result.positions += len(names)


def _run_bot(
    client: Any,
    paper: PaperExchange,
    names: list[str],
    threads: int,
    seconds: float,
    seed: int,
    result: DemoResult,
    progress: Callable[[float], None],
) -> None:
    venue = paper.venue
    guarded = hasattr(client, "nija_guard")
    bot = _Bot(client, names, guarded, result)
    started = time.monotonic()
    deadline = started + seconds
    span = max(0.01, len(names) * paper.latency * 2)  # first guess of a round's stop phase
    while True:
        result.rounds += 1
        rng = random.Random(seed * 1_000_003 + result.rounds)
        script = _Script.draw(names, rng)

        # Entry: the broker shows the position, the bot rests a take-profit per position.
        if not _wait_until(functools.partial(_broker_caught_up, venue), 10.0):
            raise RuntimeError("the paper exchange's balance never caught up")

        def entry_worker(index: int) -> None:
            for symbol in names[index::threads]:
                bot.enter(symbol)

        _in_threads(threads, entry_worker)

        # The market spikes some coins through their take-profit, then everything drops.
        _market_moves(venue, names, script)

        # The stop fires for every position: every worker gets the signal.
        lined_up = threading.Barrier(threads)
        done = threading.Event()
        mover = threading.Thread(
            target=_whipsaw, args=(venue, script, rng, span, done), daemon=True
        )

        def stop_worker(
            index: int, round_seed: int = rng.randrange(2**32), barrier: Any = lined_up
        ) -> None:
            order = names[1:]
            random.Random(round_seed + index).shuffle(order)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=30)  # all workers fire the first stop at once
            for symbol in names[:1] + order:
                bot.stop_loss(symbol)

        phase = time.monotonic()
        mover.start()
        try:
            _in_threads(threads, stop_worker)
        finally:
            done.set()
            mover.join()
        span = max(0.01, time.monotonic() - phase)

        # The round ends: what still rests is cancelled, and (guarded) every exit
        # settles before the venue's trades are scored.
        for order in venue.open_orders():
            with contextlib.suppress(ccxt.BaseError):
                client.cancel_order(order.id, order.symbol)
        if guarded:
            _wait_until(functools.partial(_settled, client), SETTLE_TIMEOUT)
        _score_round(venue, names, result)
        progress(min(1.0, (time.monotonic() - started) / seconds))
        if time.monotonic() >= deadline:
            break
        _reset(client, venue, names, guarded)


def _reset(client: Any, venue: Venue, names: list[str], guarded: bool) -> None:
    """Re-enter every position for the next round (a bot's entry logic, single-threaded)."""
    with venue.lock:
        venue.orders.clear()
        venue.trades.clear()
        for symbol in names:
            base = symbol.split("/")[0]
            venue.free[base] = OWNED + SHARED
            venue.used[base] = Decimal(0)
            venue.set_price(symbol, ENTRY)
    if guarded:
        for symbol in names:
            base = symbol.split("/")[0]
            client.nija_guard.seed(base, max(Decimal(0), OWNED - client.nija_guard.owned(base)))


def run_demo(
    threads: int = 8,
    symbols: int = 50,
    seconds: float = 2.0,
    seed: int = 1,
    latency: float = 0.002,
    ghost_rate: float = 0.05,
    show_progress: bool = True,
    backend: str = "memory",
) -> list[DemoResult]:
    """Run the bot unguarded, then guarded; return both results."""
    results = []
    for mode in ("unguarded", "guarded"):
        paper, names = _exchange(symbols, seed, latency, ghost_rate)
        result = DemoResult(mode)
        if mode == "guarded":
            client = guard(
                paper,
                ownership="ledger",
                ledger_seed={s.split("/")[0]: OWNED for s in names},
                backend=backend,
                # A fresh account name per run: runs sharing a durable backend never meet.
                account=f"nija-guard-demo-{secrets.token_hex(4)}",
                load_entrypoints=False,
                absent_after=0.2,
                poll_interval=0.05,
            )
        else:
            client = paper
        client.load_markets()

        def progress(fraction: float, mode: str = mode) -> None:
            if show_progress:
                filled = int(fraction * 30)
                print(
                    f"\r  {mode:<10} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}",
                    end="",
                    flush=True,
                )

        try:
            _run_bot(client, paper, names, threads, seconds, seed, result, progress)
            if mode == "guarded":
                _wait_until(functools.partial(_settled, client), SETTLE_TIMEOUT)
                result.unknown_left = len(client.nija_guard.status()["unknown"])
        finally:
            if show_progress:
                print()
            if mode == "guarded":
                client.nija_guard.close()
        results.append(result)
    return results


ROWS = [
    ("positions", "positions", "{:d}", "positions opened (one coin each, all stopped out)"),
    ("double-sells", "double_sells", "{:d}", "sell orders that sold a position already sold"),
    ("oversold quantity", "oversold", "{:.4f}", "coins sold beyond what the bot owned"),
    (
        "stop-loss vs take-profit races",
        "races",
        "{:d}",
        "positions whose take-profit filled (partly or fully) and whose stop fired",
    ),
    ("coins left unsold", "unsold", "{:.4f}", "coins the bot owned but did not sell"),
    ("exchange rejections", "rejections", "{:d}", "sells the exchange refused"),
    (
        "unknown outcomes left",
        "unknown_left",
        "{:d}",
        "lost replies never resolved (unguarded: the bot just resent)",
    ),
    ("exits completed", "exits_completed", "{:d}", "stop-loss sells the exchange accepted"),
    (
        "exits refused by the guard",
        "refused",
        "{:d}",
        "stop-losses the guard sent nothing for: the position was sold already",
    ),
    ("p50 exit latency (ms)", "p50_ms", "{:.2f}", "stop-loss call, median"),
    ("p99 exit latency (ms)", "p99_ms", "{:.2f}", "stop-loss call, 99th percentile"),
]


def format_table(results: list[DemoResult], notes: bool = True) -> str:
    """The side-by-side table, with a one-line explanation of each row under it."""
    width = 32
    lines = [f"{'':<{width}}" + "".join(f"{r.mode:>14}" for r in results)]
    for label, attr, fmt, _ in ROWS:
        lines.append(
            f"{label:<{width}}" + "".join(f"{fmt.format(getattr(r, attr)):>14}" for r in results)
        )
    if notes:
        lines.append("")
        lines.extend(f"{label}: {note}" for label, _, _, note in ROWS)
    return "\n".join(lines)
