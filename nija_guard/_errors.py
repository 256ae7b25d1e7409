"""Errors raised by the guard.

Each error is also an instance of the ccxt exception a bot already handles, so
``except ccxt.InsufficientFunds`` keeps catching "nothing to sell" and
``except ccxt.NetworkError`` keeps catching "outcome unknown".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ccxt

if TYPE_CHECKING:
    from ._model import Exit

__all__ = [
    "BackendUnavailable",
    "DustPosition",
    "ExitInProgress",
    "ExitVetoed",
    "GuardError",
    "NothingToSell",
    "OutcomeUnknown",
]


class GuardError(ccxt.BaseError):  # type: ignore[misc]
    """Base class of every error the guard raises itself.

    ``exit`` is the immutable :class:`~nija_guard.Exit` the error is about, when
    there is one.
    """

    def __init__(self, message: str, *, exit: Exit | None = None, **details: Any) -> None:
        super().__init__(message)
        self.exit = exit
        self.details = details


class ExitInProgress(GuardError, ccxt.OperationRejected):  # type: ignore[misc]
    """Another exit holds the close lock of this (account, symbol)."""


class NothingToSell(GuardError, ccxt.InsufficientFunds):  # type: ignore[misc]
    """The broker reports no sellable holdings: no order was sent."""


class DustPosition(GuardError, ccxt.InvalidOrder):  # type: ignore[misc]
    """What is left is below the market's minimum amount or cost: no order was sent."""


class OutcomeUnknown(GuardError, ccxt.NetworkError):  # type: ignore[misc]
    """An order may or may not exist on the exchange.

    The symbol stays locked until the guard reconciles it with exchange
    evidence; retrying the same exit never creates a second order.
    """


class ExitVetoed(GuardError, ccxt.OperationRejected):  # type: ignore[misc]
    """A policy hook refused the exit: no order was sent."""


class BackendUnavailable(GuardError, ccxt.ExchangeNotAvailable):  # type: ignore[misc]
    """The lock backend could not be reached: the guard fails closed, nothing was sent."""
