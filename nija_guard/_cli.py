"""The ``nija-guard`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nija-guard", description="Safe exit orders for trading bots."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run a concurrent bot unguarded, then guarded, and compare"
    )
    demo.add_argument("--threads", type=int, default=8, help="bot worker threads (default 8)")
    demo.add_argument(
        "--symbols", type=int, default=50, help="positions to close per round (default 50)"
    )
    demo.add_argument("--seconds", type=float, default=2.0, help="run time per mode (default 2)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument(
        "--ghost-rate", type=float, default=0.05, help="share of sells whose reply is lost"
    )
    demo.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    if args.command == "demo":
        for name in ("threads", "symbols"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be at least 1")
        if args.seconds <= 0 or not 0 <= args.ghost_rate < 1:
            parser.error("--seconds must be positive and --ghost-rate in [0, 1)")
        from ._demo import format_table, run_demo

        if not args.json:
            print(
                f"nija-guard demo: {args.threads} threads closing {args.symbols} positions, "
                f"{args.seconds:g}s per mode, ghost rate {args.ghost_rate:g}"
            )
        results = run_demo(
            args.threads,
            args.symbols,
            args.seconds,
            args.seed,
            ghost_rate=args.ghost_rate,
            show_progress=not args.json,
        )
        if args.json:
            print(json.dumps({r.mode: r.summary() for r in results}, indent=2))
        else:
            print()
            print(format_table(results))
        guarded = next(r for r in results if r.mode == "guarded")
        return 1 if guarded.double_sells or guarded.oversold else 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
