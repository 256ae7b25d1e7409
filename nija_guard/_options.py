"""The options of :func:`nija_guard.guard`, validated once, immutable after."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from ._model import to_decimal

__all__ = ["Options"]

OWNERSHIP = ("account", "ledger")
ON_CONFLICT = ("reject", "wait", "replace")


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} finite number, got {value!r}")
    return number


def _adapter_methods() -> tuple[str, ...]:
    from ._adapter import Adapter

    return tuple(name for name in vars(Adapter) if not name.startswith("_"))


@dataclass(frozen=True)
class Options:
    """Every option of :func:`nija_guard.guard`; see docs/options.md."""

    ownership: str = "account"
    on_conflict: str = "reject"
    wait_timeout: float = 30.0
    plugins: tuple[Any, ...] = ()
    tracer_provider: Any = None
    meter_provider: Any = None
    backend: str = "memory"
    account: str | None = None
    ledger_seed: Mapping[str, Decimal] = field(default_factory=dict)
    load_entrypoints: bool = True
    adopt: bool = True
    reconcile_timeout: float = 10.0
    absent_after: float = 3.0
    poll_interval: float = 0.5
    poll_max_interval: float = 10.0
    max_polls_per_second: float = 10.0
    confirm_timeout: float = 10.0
    retry_window: float = 120.0
    lease_ttl: float = 30.0
    backend_timeout: float = 2.0
    on_backend_failure: str = "fail"
    adapter: Any = None  # None: chosen from the client (ccxt, alpaca-py); else an Adapter

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Options:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"guard() got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"known options: {', '.join(sorted(known))}"
            )
        values = dict(kwargs)
        if values.get("ownership", "account") not in OWNERSHIP:
            raise ValueError(f"ownership must be one of {OWNERSHIP}, got {values['ownership']!r}")
        if values.get("on_conflict", "reject") not in ON_CONFLICT:
            raise ValueError(
                f"on_conflict must be one of {ON_CONFLICT}, got {values['on_conflict']!r}"
            )
        if values.get("on_backend_failure", "fail") not in ("fail", "local"):
            raise ValueError(
                "on_backend_failure must be 'fail' (refuse exits: the default) or 'local' "
                f"(degraded: in-process locks only), got {values['on_backend_failure']!r}"
            )
        for name in (
            "lease_ttl",
            "backend_timeout",
            "wait_timeout",
            "reconcile_timeout",
            "confirm_timeout",
            "poll_interval",
            "poll_max_interval",
            "max_polls_per_second",
            "retry_window",
        ):
            if name in values:
                values[name] = _positive(name, values[name])
        if "absent_after" in values:
            values["absent_after"] = _positive(
                "absent_after", values["absent_after"], allow_zero=True
            )
        plugins = values.get("plugins", ())
        if plugins is None:
            plugins = ()
        if not isinstance(plugins, Sequence) or isinstance(plugins, (str, bytes)):
            raise TypeError("plugins must be a list of plugin objects or modules")
        values["plugins"] = tuple(plugins)
        account = values.get("account")
        if account is not None and (not isinstance(account, str) or not account.strip()):
            raise ValueError(f"account must be a non-empty string, got {account!r}")
        seed = values.get("ledger_seed") or {}
        if not isinstance(seed, Mapping):
            raise TypeError("ledger_seed must map assets to amounts, e.g. {'BTC': 0.5}")
        clean: dict[str, Decimal] = {}
        for asset, amount in seed.items():
            number = to_decimal(amount)
            if not isinstance(asset, str) or number is None or number < 0:
                raise ValueError(
                    f"ledger_seed[{asset!r}] must be a non-negative number, got {amount!r}"
                )
            clean[asset] = number
        values["ledger_seed"] = clean
        if clean and values.get("ownership", "account") != "ledger":
            raise ValueError("ledger_seed only applies with ownership='ledger'")
        adapter = values.get("adapter")
        if adapter is not None and not all(
            callable(getattr(adapter, name, None)) for name in _adapter_methods()
        ):
            raise TypeError(
                "adapter must be a broker adapter such as nija_guard.Broker(...), "
                f"got {type(adapter).__name__}"
            )
        if not isinstance(values.get("backend", "memory"), str):
            raise TypeError(f"backend must be a URL string, got {values['backend']!r}")
        return cls(**values)

    def differs_from(self, kwargs: Mapping[str, Any]) -> list[str]:
        """The options in ``kwargs`` that disagree with these (guarding twice)."""
        other = Options.from_kwargs(kwargs)
        return [name for name in kwargs if getattr(other, name) != getattr(self, name)]
