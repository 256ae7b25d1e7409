"""alpaca-py's ``TradingClient``, guarded: a :class:`Broker` description of its trading API.

``guard(TradingClient(...))`` picks this adapter by itself. What it knows:

- exits: ``submit_order`` with side ``sell`` (or a ``sell_to_*`` position
  intent), ``close_position`` and ``close_all_positions``. The guard rewrites
  the request's ``qty`` to the clamped amount (a notional sell is sent as a
  qty) and sets its ``client_order_id``. ``replace_order_by_id`` is refused:
  cancel, then submit through the guard.
- holdings: ``get_all_positions()``: ``qty_available`` is free, ``qty`` total;
  crypto positions are keyed without the slash (``BTC/USD`` -> ``BTCUSD``).
- lookups: ``get_order_by_id``, ``get_order_by_client_id``, open orders with
  ``get_orders``; market rules from ``get_asset`` (whole shares for assets
  that are not fractionable); a price (to size a notional sell) from the
  position's ``current_price``.
- errors: ``APIError`` by status: 5xx and no status are unknown, 404 not
  found, 429 rate limited, "client_order_id must be unique" a duplicate (the
  order exists: alpaca-py itself retries a POST after a 504), insufficient qty,
  other 4xx rejected; ``requests`` connection errors and timeouts unknown.

alpaca-py is imported only when such a client is guarded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from ._broker import Broker, OrderMethod

__all__ = ["AlpacaAdapter"]


def _side(request: Any) -> Any:
    side = getattr(request, "side", None)
    if side is not None:
        return side
    intent = getattr(getattr(request, "position_intent", None), "value", None)
    if isinstance(intent, str) and "_to_" in intent:
        return intent.split("_", 1)[0]  # sell_to_close -> sell
    return None


def _read_request(arguments: Mapping[str, Any]) -> dict[str, Any]:
    request = arguments["order_data"]
    return {
        "symbol": request.symbol,
        "side": _side(request),
        "amount": request.qty,
        "cost": request.notional,
        "price": getattr(request, "limit_price", None),
        "type": request.type,
        "client_order_id": request.client_order_id,
    }


def _rewrite_request(
    arguments: Mapping[str, Any], amount: Decimal | None, client_order_id: str | None
) -> dict[str, Any]:
    request = arguments["order_data"]
    update: dict[str, Any] = {"client_order_id": client_order_id}
    if amount is not None:
        update.update(qty=float(amount), notional=None)
    return {"order_data": request.model_copy(update=update)}


def _read_close(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {"symbol": str(arguments["symbol_or_asset_id"])}


def _rewrite_close(
    arguments: Mapping[str, Any], amount: Decimal | None, client_order_id: str | None
) -> dict[str, Any]:
    """close_position for the clamped qty: never more than the guard allows."""
    from alpaca.trading.requests import ClosePositionRequest

    rewritten = dict(arguments)
    if amount is not None:
        rewritten["close_options"] = ClosePositionRequest(qty=format(amount, "f"))
    return rewritten


def _open_orders(client: Any, symbol: str | None) -> Any:
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import GetOrdersRequest

    query = GetOrdersRequest(
        status=QueryOrderStatus.OPEN, symbols=[symbol] if symbol else None, limit=500
    )
    return client.get_orders(filter=query)


def _field(reply: Any, name: str) -> Any:
    """A field of a model, or of the dict a ``raw_data=True`` client returns."""
    return reply.get(name) if isinstance(reply, Mapping) else getattr(reply, name, None)


def _rules(client: Any, symbol: str) -> dict[str, Any]:
    # Crypto assets are named without the slash in the URL path (BTC/USD -> BTCUSD).
    asset = client.get_asset(symbol.replace("/", ""))
    step = _field(asset, "min_trade_increment")
    if step is None:
        step = Decimal("1e-9") if _field(asset, "fractionable") else Decimal(1)
    return {"amount_step": step, "min_amount": _field(asset, "min_order_size")}


def _price(client: Any, symbol: str) -> Any:
    # The trading API has no quotes; a position knows its current price.
    return _field(client.get_open_position(symbol.replace("/", "")), "current_price")


def _category(error: BaseException) -> str | None:
    from alpaca.common.exceptions import APIError

    if isinstance(error, APIError):
        status = error.status_code
        text = str(error).lower()
        if status is None or status >= 500:
            return "unknown"
        if "client_order_id must be unique" in text:
            return "duplicate"
        if status == 429:
            # alpaca-py retries a 504 (and a 429) by itself: a 429 at the end may follow
            # a 504 whose order executed. Not a refusal: reconciled by client id.
            return "unknown"
        if status == 404:
            return "not_found"
        if "insufficient" in text:
            # Likewise a retried submit finds the coins its first try already sold.
            return "unknown"
        return "rejected" if 400 <= status < 500 else "unknown"
    try:
        import requests
    except ImportError:  # pragma: no cover - alpaca-py depends on requests
        return None
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return "unknown"
    return None  # anything else (a reply alpaca-py could not parse...): unknown


def _account(client: Any) -> str:
    key = getattr(client, "_api_key", None) or getattr(client, "_oauth_token", None)
    if not key:
        return f"anonymous-{id(client):x}"
    return hashlib.sha256(str(key).encode()).hexdigest()[:16]


class AlpacaAdapter(Broker):
    """The adapter ``guard()`` uses for ``alpaca.trading.client.TradingClient``."""

    _shared: ClassVar[AlpacaAdapter | None] = None

    def __init__(self) -> None:
        super().__init__(
            name="alpaca",
            orders={
                "submit_order": OrderMethod(read=_read_request, rewrite=_rewrite_request),
                "close_position": OrderMethod(
                    kind="close_position", read=_read_close, rewrite=_rewrite_close
                ),
                "close_all_positions": OrderMethod(kind="close_all"),
                "replace_order_by_id": OrderMethod(kind="unsupported"),
            },
            holdings="get_all_positions",
            asset=lambda symbol: symbol.replace("/", ""),
            fetch_order=lambda client, order_id, symbol: client.get_order_by_id(order_id),
            fetch_order_by_client_id=lambda client, cid, symbol: client.get_order_by_client_id(cid),
            fetch_open_orders=_open_orders,
            cancel_order=lambda client, order_id, symbol: client.cancel_order_by_id(order_id),
            price=_price,
            markets=_rules,
            errors=_category,
            account=_account,
            observe={
                "get_order_by_id": "fetch_order",
                "get_order_by_client_id": "fetch_order",
                "get_orders": "fetch_orders",
                "cancel_order_by_id": "cancel_order",
            },
        )

    @classmethod
    def shared(cls) -> AlpacaAdapter:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    @staticmethod
    def handles(client: Any) -> bool:
        return any(
            klass.__name__ == "TradingClient" and klass.__module__.startswith("alpaca.trading")
            for klass in type(client).__mro__
        )
