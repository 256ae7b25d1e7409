"""Run freqtrade with nija-guard in front of its ccxt client.

    python nija_freqtrade.py trade --config config.json --strategy MyStrategy

Takes the same arguments as the ``freqtrade`` command. See docs/recipes/freqtrade.md.
"""

from freqtrade.main import main
from freqtrade.resolvers import ExchangeResolver

import nija_guard

GUARD_OPTIONS = {"on_conflict": "replace"}

_load_exchange = ExchangeResolver.load_exchange


def load_guarded_exchange(config, **kwargs):
    exchange = _load_exchange(config, **kwargs)
    if not config.get("dry_run"):  # dry-run orders never reach ccxt
        # freqtrade sends every order and cancel through exchange._api, its sync ccxt client
        exchange._api = nija_guard.guard(exchange._api, **GUARD_OPTIONS)
    return exchange


ExchangeResolver.load_exchange = staticmethod(load_guarded_exchange)

if __name__ == "__main__":
    main()
