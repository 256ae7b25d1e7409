"""Keep a bot's own position record in sync with its guarded exits.

The seed of nija-guard is a bot whose position record said "open" after the
exchange had closed it. With this plugin the record follows the exchange:

- every fill of a guarded exit lowers the symbol's position by what filled;
- a full close deletes the symbol at once, before the guard releases the
  symbol's close lock, so no new exit can read a stale record.

Symbols the mapping does not hold are left alone (the bot decides what it
tracks); values keep their type (``float``, ``int``, ``Decimal``)::

    from nija_guard_positions import Positions

    positions = {"BTC/USDT": 0.5}
    exchange = nija_guard.guard(client, plugins=[Positions(positions)])

Installed, the plugin is also registered through the ``nija_guard`` entry-point
group with a module-level mapping, ``nija_guard_positions.positions``.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from decimal import Decimal
from typing import Any

from nija_guard import Exit, hookimpl

__all__ = ["Positions", "plugin", "positions"]


class Positions:
    """A plugin that keeps ``positions`` (symbol -> amount) in sync with exits."""

    def __init__(
        self,
        positions: MutableMapping[str, Any] | None = None,
        *,
        lock: Any = None,
    ) -> None:
        if positions is not None and not isinstance(positions, MutableMapping):
            raise TypeError("positions must be a mutable mapping of symbol to amount")
        self.positions: MutableMapping[str, Any] = {} if positions is None else positions
        # Share the bot's own lock if it has one around its record.
        self.lock = lock if lock is not None else threading.RLock()

    @hookimpl
    def nija_guard_order_filled(self, exit: Exit, amount: float) -> None:
        """Lower the symbol's position by what just filled (never below zero)."""
        if exit.side != "sell":
            return
        with self.lock:
            held = self.positions.get(exit.symbol)
            if held is None:
                return
            if isinstance(held, Decimal):
                left: Any = max(held - Decimal(str(amount)), Decimal(0))
            else:
                left = max(held - amount, 0)
                if isinstance(held, int) and float(left).is_integer():
                    left = int(left)
            self.positions[exit.symbol] = left

    @hookimpl
    def nija_guard_position_flushed(self, symbol: str) -> None:
        """The exit fully closed ``symbol``: forget it at once."""
        with self.lock:
            self.positions.pop(symbol, None)


plugin = Positions()
positions = plugin.positions
