"""The compatibility table of docs/compatibility.md: every ccxt exchange's order-entry methods.

``python -m nija_guard._compat > section.md`` prints it; tests/test_entry_points.py
checks the committed docs against it, so a ccxt upgrade that adds an order-entry
method the guard cannot read fails the build instead of shipping unguarded.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["rows", "table"]


def rows() -> list[dict[str, Any]]:
    import ccxt
    import ccxt.pro

    from ._adapter import CcxtAdapter
    from ._guard import proxy_class

    adapter = CcxtAdapter()
    found = []
    for exchange_id in sorted(ccxt.exchanges):
        cls = getattr(ccxt, exchange_id)
        pro = getattr(ccxt.pro, exchange_id, None)
        names: set[str] = set()
        kinds: set[str] = set()
        unguarded: list[str] = []
        for client_type in (cls, pro) if pro is not None else (cls,):
            entries = adapter.entry_points(client_type)
            guarded = vars(proxy_class(client_type))
            for attr, entry in entries.items():
                names.add(entry.name)
                kinds.add(entry.kind)
                if attr not in guarded or entry.kind == "unsupported":
                    unguarded.append(attr)
        found.append(
            {
                "exchange": exchange_id,
                "methods": len(names),
                "ws": sum(1 for n in names if n.endswith("_ws")),
                "kinds": sorted(kinds),
                "unguarded": sorted(set(unguarded)),
            }
        )
    return found


def table() -> str:
    import ccxt

    lines = [
        f"Generated from ccxt {ccxt.__version__} by `python -m nija_guard._compat`.",
        "",
        "| exchange | order-entry methods (ws) | kinds | all guarded |",
        "|---|---|---|---|",
    ]
    for row in rows():
        verdict = "yes" if not row["unguarded"] else "NO: " + ", ".join(row["unguarded"])
        kinds = ", ".join(row["kinds"])
        lines.append(
            f"| {row['exchange']} | {row['methods']} ({row['ws']}) | {kinds} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(table())
