"""Point a ccxt client at a loopback fake: light enough for bot processes to import.

Every fake's ``client()`` uses :func:`point_at`; a bot in another process than
the fake needs only this module (not the fake, whose imports pull in the async
clients): ``point_at(ccxt.binance(config), url)`` with ``config`` from the
fake's ``client_config()`` and ``url`` its ``url``.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

__all__ = ["point_at"]


def point_at(exchange: Any, base: str) -> Any:
    """Point the API URLs of a ccxt client at ``base`` (``http://127.0.0.1:PORT``).

    Each URL keeps its path (``https://api.binance.com/api/v3`` becomes
    ``BASE/api/v3``; OKX's ``https://{hostname}`` becomes ``BASE``).
    """

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
    errors = exchange.exceptions
    if "spot" in errors:
        # ccxt.binance consults its spot-only error map when a URL starts with
        # https://api.binance.com/, which a loopback URL never does. Put that map
        # first, as production does, so e.g. -1008 is OperationFailed there and here.
        spot = errors["spot"]
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
