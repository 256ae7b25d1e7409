"""Point a ccxt client at a loopback fake: light enough for bot processes to import.

A bot in another process than the fake needs only this (not the fake, whose
imports pull in the async clients): ``point_at(ccxt.binance(config), url)`` with
``config`` from :meth:`FakeBinance.client_config` and ``url`` its
:attr:`~FakeBinance.url`.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

__all__ = ["point_at"]


def point_at(exchange: Any, base: str) -> Any:
    """Point every API URL of a ccxt binance client at ``base`` (``http://127.0.0.1:PORT``)."""

    def rewrite(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("http"):
            return base + urlsplit(value).path
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        return value

    urls = copy.deepcopy(exchange.urls)
    # 'api' is what requests use; 'test' and 'demo' replace it in sandbox/demo mode.
    for key in ("api", "test", "demo"):
        if key in urls:
            urls[key] = rewrite(urls[key])
    exchange.urls = urls
    # ccxt.binance consults its spot-only error map when a URL starts with
    # https://api.binance.com/, which a loopback URL never does. Put that map
    # first, as production does, so e.g. -1008 is OperationFailed there and here.
    errors = exchange.exceptions
    spot = errors.get("spot", {})
    spot_broad = spot.get("broad", {})
    exchange.exceptions = {
        **errors,
        "exact": {**errors.get("exact", {}), **spot.get("exact", {})},
        "broad": {
            **spot_broad,
            **{k: v for k, v in errors.get("broad", {}).items() if k not in spot_broad},
        },
    }
    return exchange
