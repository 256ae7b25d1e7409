"""nija-guard: one line that makes a trading bot's exit orders safe.

>>> import ccxt, nija_guard
>>> exchange = nija_guard.guard(ccxt.binance({...}))  # doctest: +SKIP

Public names live here; the modules behind them are private.
"""

import logging

from ._broker import Broker, OrderMethod
from ._errors import (
    BackendUnavailable,
    DustPosition,
    ExitInProgress,
    ExitVetoed,
    GuardError,
    NothingToSell,
    OutcomeUnknown,
)
from ._guard import Guard, guard, unguarded
from ._hooks import hookimpl
from ._model import Exit, Outcome, Phase

__version__ = "0.1.0"

# A library logs; the application decides where logs go.
logging.getLogger("nija_guard").addHandler(logging.NullHandler())

__all__ = [
    "BackendUnavailable",
    "Broker",
    "DustPosition",
    "Exit",
    "ExitInProgress",
    "ExitVetoed",
    "Guard",
    "GuardError",
    "NothingToSell",
    "OrderMethod",
    "Outcome",
    "OutcomeUnknown",
    "Phase",
    "__version__",
    "guard",
    "hookimpl",
    "unguarded",
]
