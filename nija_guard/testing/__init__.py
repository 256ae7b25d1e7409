"""Test tools: a paper exchange that behaves like a ccxt client.

>>> from nija_guard.testing import PaperExchange
>>> ex = PaperExchange(balances={"BTC": 1, "USDT": 1000})
"""

from ._async_paper import AsyncPaperExchange
from ._paper import Fault, PaperExchange
from ._recorder import HookRecorder
from ._venue import Market, Venue, VenueOrder, VenueTrade

__all__ = [
    "AsyncPaperExchange",
    "Fault",
    "HookRecorder",
    "Market",
    "PaperExchange",
    "Venue",
    "VenueOrder",
    "VenueTrade",
]
