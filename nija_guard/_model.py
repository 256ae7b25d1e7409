"""The values the guard passes around: an exit, an order as the guard sees it, a market.

:class:`Exit` is the one immutable description of an exit that hooks, spans,
errors and logs share. It never contains credentials.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = ["Exit", "MarketInfo", "OrderView", "Outcome", "Phase"]

ZERO = Decimal(0)
# Wide enough for any amount a venue reports at any step it uses, exactly.
_EXACT = Context(prec=400, rounding=ROUND_DOWN, Emax=999_999, Emin=-999_999)

# Parameter names that may carry credentials; they never leave the guard.
SECRET_KEYS = frozenset(
    {"apikey", "secret", "password", "uid", "privatekey", "walletaddress", "token", "passphrase"}
)
REDACTED = "***"


NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


def redact(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``params`` with credential-like values masked."""
    if not params:
        return NO_PARAMS
    clean = {k: (REDACTED if str(k).lower() in SECRET_KEYS else v) for k, v in params.items()}
    return MappingProxyType(clean)


# Floats already converted: ccxt replies repeat the same few numbers (amounts, prices,
# zero), and Decimal(str(x)) is the costliest step of reading one. Bounded; a dict's
# get and set are atomic, so threads share it without a lock.
_FLOAT_DECIMALS: dict[float, Decimal | None] = {}
_FLOAT_DECIMALS_MAX = 4096


def to_decimal(value: Any) -> Decimal | None:
    """A finite Decimal for a ccxt number (float, int, str, Decimal), else None."""
    if type(value) is float:
        number = _FLOAT_DECIMALS.get(value)
        if number is None:
            number = _float_decimal(value)
        return number
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() else None


class _UniqueIds:
    """24 hex digits, unique without a system call each: a random prefix drawn once
    per process (64 bits, drawn again in a forked child) and a counter after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._state = (secrets.token_hex(8), itertools.count())

    def __call__(self) -> str:
        state = self._state
        n = next(state[1])  # atomic: one C call
        if n > 0xFFFFFFFF:  # the counter's 8 digits are used up: a new prefix
            with self._lock:
                if self._state is state:
                    self._reseed()
            return self()
        return state[0] + format(n, "08x")


unique_id = _UniqueIds()


def _float_decimal(value: float) -> Decimal | None:
    number = Decimal(repr(value))
    if not value:
        return number  # 0.0 and -0.0 are one key: never kept, each keeps its sign
    if not number.is_finite():
        return None  # nan (never equal to itself: never found here) and infinities
    if len(_FLOAT_DECIMALS) >= _FLOAT_DECIMALS_MAX:
        _FLOAT_DECIMALS.clear()
    _FLOAT_DECIMALS[value] = number
    return number


def divide_down(dividend: Decimal, divisor: Decimal) -> Decimal:
    """``dividend / divisor`` rounded toward zero: a limit on what may be sold must
    never come out a hair above the truth (the default context rounds to nearest)."""
    return _EXACT.divide(dividend, divisor)


def to_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


class Phase(str, enum.Enum):
    """Where an exit is in its life. The lock is held in every phase but SETTLED."""

    ADMITTED = "admitted"  # holds the close lock, nothing sent yet
    SUBMITTING = "submitting"  # the order request is on the wire
    ACTIVE = "active"  # the exchange has the order and it is not final yet
    UNKNOWN = "unknown"  # the submit may or may not have reached the exchange
    SETTLED = "settled"  # final on the exchange (or refused before sending)


class Outcome(str, enum.Enum):
    """How a guarded exit ended, as recorded on its span and in hooks."""

    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"  # final, with a fill short of the amount
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    RESTING = "resting"  # accepted; the guard tracks it until it is final
    UNKNOWN = "unknown"
    NOT_PLACED = "not_placed"  # the submit failed and the exchange has no such order
    BLOCKED = "blocked"
    NOTHING_TO_SELL = "nothing_to_sell"
    DUST = "dust"
    VETOED = "vetoed"
    INVALID = "invalid"
    ERROR = "error"


@dataclass(frozen=True)
class Exit:
    """One exit, as the bot asked for it and as the guard carried it out.

    Immutable: each stage yields a new value (``dataclasses.replace``), so a
    hook can keep the object it was given. Amounts are floats, as in ccxt.
    """

    exit_id: str
    account: str
    symbol: str
    side: str
    type: str
    method: str
    requested_amount: float | None
    price: float | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    client_order_id: str | None = None
    amount: float | None = None  # what was (or will be) submitted, after the clamp
    order_id: str | None = None
    outcome: Outcome | None = None
    filled: float = 0.0
    reason: str | None = None
    created_at: float = 0.0

    def evolve(self, **changes: Any) -> Exit:
        """A copy with ``changes`` (``dataclasses.replace``, without its cost)."""
        if not _EXIT_FIELDS.issuperset(changes):
            raise TypeError(f"Exit has no field(s) {sorted(changes.keys() - _EXIT_FIELDS)}")
        new = object.__new__(Exit)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @property
    def is_closing_all(self) -> bool:
        return self.requested_amount is None


_EXIT_FIELDS = frozenset(f.name for f in fields(Exit))


def make_exit(
    exit_id: str,
    account: str,
    symbol: str,
    side: str,
    type: str,
    method: str,
    requested_amount: float | None,
    price: float | None,
    params: Mapping[str, Any],
    created_at: float,
) -> Exit:
    """``Exit(...)`` for the engine's hot path, in half the time: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``; this fills
    ``__dict__`` at once. Every field is named here (tests/test_hot_path.py checks)."""
    new = object.__new__(Exit)
    new.__dict__.update(
        exit_id=exit_id,
        account=account,
        symbol=symbol,
        side=side,
        type=type,
        method=method,
        requested_amount=requested_amount,
        price=price,
        params=params,
        client_order_id=None,
        amount=None,
        order_id=None,
        outcome=None,
        filled=0.0,
        reason=None,
        created_at=created_at,
    )
    return new


@dataclass(frozen=True)
class MarketInfo:
    """What the clamp needs to know about a market."""

    symbol: str
    base: str
    quote: str
    amount_step: Decimal | None
    min_amount: Decimal | None
    min_cost: Decimal | None
    # The fee of a sell is taken from the base asset on top of the amount.
    sell_fee_rate_in_base: Decimal = ZERO
    contract: bool = False  # a derivative: amounts are contracts, holdings are positions
    contract_size: Decimal = Decimal(1)  # base units per contract
    # A step of one unit of a decimal place (0.0001, 1): a quantize does the floor.
    _quantum: Decimal | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        step = self.amount_step
        if step is not None and step.is_finite():
            sign, digits, exponent = step.as_tuple()
            if digits == (1,) and isinstance(exponent, int) and exponent <= 0 and not sign:
                object.__setattr__(self, "_quantum", step)

    def floor_amount(self, amount: Decimal) -> Decimal:
        """``floor(amount / step) * step``: never rounds up into holdings we lack."""
        if amount <= 0:
            return ZERO
        if not self.amount_step:
            return amount
        try:
            # Exact: the default context's 28 digits would round 1e12 coins at 1e-18
            # steps (31 digits) to nearest, which can be up.
            if self._quantum is not None:
                return amount.quantize(self._quantum, rounding=ROUND_DOWN, context=_EXACT)
            steps = _EXACT.divide_int(amount, self.amount_step)
            return _EXACT.multiply(steps, self.amount_step)
        except InvalidOperation:
            # More than _EXACT's digits between the amount and its step: nothing a
            # real balance holds. Sell nothing rather than guess.
            return ZERO

    def below_minimum(self, amount: Decimal, price: Decimal | None) -> str | None:
        """Why ``amount`` is below the market's minimum, or None."""
        if amount <= 0:
            return "amount rounds down to zero"
        if self.min_amount is not None and amount < self.min_amount:
            return f"amount {amount} below minimum {self.min_amount}"
        cost = amount * self.contract_size * price if price is not None else None
        if self.min_cost is not None and cost is not None and cost < self.min_cost:
            return f"cost {cost} below minimum {self.min_cost}"
        return None


class OrderView(NamedTuple):
    """The fields of a ccxt order the guard acts on, as Decimals.

    A named tuple, not a frozen dataclass: one is made for every order reply, and
    a tuple is built in a third of the time.
    """

    id: str | None
    client_order_id: str | None
    symbol: str | None
    side: str | None
    status: str | None
    amount: Decimal | None
    filled: Decimal | None
    remaining: Decimal | None
    average: Decimal | None
    timestamp: int | None
    base_fee: Decimal  # fee paid in the base asset (what the holder lost on top)
    raw: Mapping[str, Any]

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def filled_or_zero(self) -> Decimal:
        return self.filled if self.filled is not None else ZERO


FINAL_STATUSES = frozenset({"closed", "canceled", "cancelled", "expired", "rejected"})


def outcome_of(order: OrderView) -> Outcome:
    """The final outcome an order's status stands for."""
    status = order.status
    if status == "closed":
        filled, amount = order.filled_or_zero(), order.amount
        if amount is not None and filled < amount and filled > 0 and order.remaining:
            return Outcome.PARTIALLY_FILLED
        return Outcome.FILLED
    if status in ("canceled", "cancelled"):
        return Outcome.PARTIALLY_FILLED if order.filled_or_zero() > 0 else Outcome.CANCELED
    if status == "expired":
        return Outcome.PARTIALLY_FILLED if order.filled_or_zero() > 0 else Outcome.EXPIRED
    if status == "rejected":
        return Outcome.REJECTED
    return Outcome.RESTING


def check_amount(value: Any) -> Decimal:
    """Validate a requested amount: a positive finite number, else ``ValueError``."""
    if type(value) is float and value > 0 and value != math.inf:
        number = to_decimal(value)
        if number is not None:
            return number  # the usual amount: a positive finite float
    if isinstance(value, bool) or value is None:
        raise ValueError(f"amount must be a positive number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"amount must be finite, got {value!r}")
    number = to_decimal(value)
    if number is None:
        raise ValueError(f"amount must be a positive number, got {value!r}")
    if number <= 0:
        raise ValueError(f"amount must be positive, got {value!r}")
    return number
