"""The ``nija-guard`` command."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader that went away fails here, not at interpreter exit
    except BrokenPipeError:
        # `nija-guard demo | head`: stop quietly, as Unix tools do, without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _version() -> str:
    """The version and the build: pure Python, or the exit path compiled (hatch_build.py)."""
    from . import __version__
    from ._build import build_name

    return f"nija-guard {__version__} ({build_name()}, Python {platform.python_version()})"


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="nija-guard", description="Safe exit orders for trading bots."
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run a concurrent bot unguarded, then guarded, and compare"
    )
    demo.add_argument("--threads", type=int, default=8, help="stop-loss worker threads (default 8)")
    demo.add_argument(
        "--symbols", type=int, default=50, help="positions opened per round (default 50)"
    )
    demo.add_argument("--seconds", type=float, default=2.0, help="run time per mode (default 2)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    demo.add_argument(
        "--ghost-rate",
        type=float,
        default=0.05,
        help="share of orders whose reply is lost after execution (default 0.05)",
    )
    demo.add_argument(
        "--backend",
        default="memory",
        help="the guard's backend: memory (default), sqlite:////abs/path or redis://host:port/db",
    )
    demo.add_argument("--json", action="store_true", help="print JSON instead of a table")

    status = commands.add_parser(
        "status", help="exits in flight, leases and unknown outcomes in a backend"
    )
    status.add_argument(
        "--backend", required=True, help="sqlite:////abs/path or redis://host:port/db"
    )
    status.add_argument("--account", help="only this account (exchange:digest or exchange:alias)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    reconcile = commands.add_parser(
        "reconcile", help="resolve exits in flight (unknown outcomes) against the exchange"
    )
    reconcile.add_argument("--backend", required=True, help="the backend the bots use")
    reconcile.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. binance")
    reconcile.add_argument(
        "--config",
        help="JSON file of ccxt options (apiKey, secret, ...); NIJA_GUARD_API_KEY, "
        "NIJA_GUARD_SECRET and NIJA_GUARD_PASSWORD fill in what it leaves out",
    )
    reconcile.add_argument("--account", help="the account alias the bots use (guard(account=...))")
    reconcile.add_argument("--symbol", help="only this symbol")
    reconcile.add_argument("--json", action="store_true", help="print JSON instead of a table")

    resolve = commands.add_parser(
        "resolve",
        help="settle a journaled exit whose outcome the guard cannot learn, as you found it",
    )
    resolve.add_argument("--backend", required=True, help="the backend the bots use")
    resolve.add_argument("--exit-id", required=True, help="the exit, as `status` lists it")
    resolve.add_argument(
        "--as",
        dest="outcome",
        required=True,
        choices=("not_placed", "filled", "canceled"),
        help="what the broker shows: no such order, or a final one",
    )
    resolve.add_argument("--account", help="only look in this account")
    args = parser.parse_args(argv)

    if args.command == "status":
        return _status(args)
    if args.command == "reconcile":
        return _reconcile(args)
    if args.command == "resolve":
        return _resolve(args)

    if args.command == "demo":
        return _demo(demo, args)
    return 2  # pragma: no cover


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    for name in ("threads", "symbols"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.seconds < float("inf"):
        parser.error(f"--seconds must be a positive number, got {args.seconds:g}")
    if not 0 <= args.ghost_rate < 1:
        parser.error(f"--ghost-rate must be in [0, 1), got {args.ghost_rate:g}")
    problem = _backend_problem(args.backend)
    if problem:
        parser.error(f"--backend: {problem}")
    from ._backend import _safe
    from ._demo import format_table, run_demo

    if not args.json:
        shown = args.backend if args.backend == "memory" else _safe(args.backend)  # no secrets
        print(
            f"nija-guard demo: {args.threads} stop-loss threads, {args.symbols} positions per "
            f"round, {args.seconds:g}s per mode, ghost rate {args.ghost_rate:g}, "
            f"backend {shown}"
        )
    results = run_demo(
        args.threads,
        args.symbols,
        args.seconds,
        args.seed,
        ghost_rate=args.ghost_rate,
        show_progress=not args.json,
        backend=args.backend,
    )
    if args.json:
        print(json.dumps({r.mode: r.summary() for r in results}, indent=2))
    else:
        print()
        print(format_table(results))
    guarded = next(r for r in results if r.mode == "guarded")
    return 1 if guarded.double_sells or guarded.oversold else 0


def _backend_problem(url: str) -> str | None:
    """Why the demo cannot use backend ``url`` (unparsable, unreachable), or None."""
    from urllib.parse import urlsplit

    from ._backend import _safe, open_backend

    try:
        backend = open_backend(url)
    except Exception as exc:
        if url and not urlsplit(url).scheme:
            return (
                f"unknown backend {url!r}: use 'memory', 'sqlite:////absolute/path' "
                "or 'redis://host:port/db'"
            )
        return str(exc)
    try:
        backend.leases("nija-guard-demo-probe/")  # reachable?
    except Exception as exc:
        return f"{_safe(url)} is unavailable: {exc}"
    finally:
        backend.close()
    return None


def _open(url: str) -> Any:
    from ._backend import open_backend

    backend = open_backend(url)
    if not backend.durable:
        raise SystemExit("nija-guard: the memory backend lives inside its process: nothing to read")
    return backend


def _status(args: argparse.Namespace) -> int:
    import time

    backend = _open(args.backend)
    accounts = [args.account] if args.account else backend.accounts()
    now = time.time()
    exits = [e.__dict__ for account in accounts for e in backend.in_flight(account)]
    leases = [
        {
            "key": lease.key,
            "owner": lease.owner,
            "token": lease.token,
            "expires_in": None if lease.expires_at is None else round(lease.expires_at - now, 3),
        }
        for lease in backend.leases(f"{args.account}/" if args.account else "")
    ]
    unknown = [e for e in exits if e["state"] in ("unknown", "intent")]
    if args.json:
        print(
            json.dumps({"exits_in_flight": exits, "leases": leases, "unknown": unknown}, indent=2)
        )
        return 0
    print(f"backend {backend.url}")
    print(f"exits in flight: {len(exits)}")
    for e in exits:
        age = now - e["updated_at"]
        print(
            f"  {e['account']}  {e['symbol']:<12} {e['state']:<9} exit {e['exit_id']} "
            f"client id {e['client_order_id']} order {e['order_id']} ({age:.0f}s ago)"
        )
    print(f"leases: {len(leases)}")
    for lease in leases:
        print(
            f"  {lease['key']}  owner {lease['owner']} token {lease['token']} "
            f"expires in {lease['expires_in']}s"
        )
    print(f"outcomes to reconcile: {len(unknown)}")
    backend.close()
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    import os

    import ccxt

    from ._guard import guard

    config: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            config = json.load(handle)
    for key, env in (
        ("apiKey", "NIJA_GUARD_API_KEY"),
        ("secret", "NIJA_GUARD_SECRET"),
        ("password", "NIJA_GUARD_PASSWORD"),
    ):
        if key not in config and os.environ.get(env):
            config[key] = os.environ[env]
    urls = config.pop("urls", None)
    if not hasattr(ccxt, args.exchange):
        raise SystemExit(f"nija-guard: unknown ccxt exchange {args.exchange!r}")
    client = getattr(ccxt, args.exchange)(config)
    if urls:
        client.urls = urls
    options: dict[str, Any] = {"backend": args.backend, "load_entrypoints": False}
    if args.account:
        options["account"] = args.account
    exchange = guard(client, **options)
    try:
        report = exchange.nija_guard.recover(args.symbol)
    finally:
        exchange.nija_guard.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        if not report:
            print("nothing in flight: nothing to reconcile")
        for item in report:
            print(f"{item['symbol']:<12} exit {item['exit_id']}: {item['result']}")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    """The journal row of a stopped process's exit, settled by an operator (no exchange
    call: a running bot's own UNKNOWN exits are resolved with ``Guard.resolve``)."""
    backend = _open(args.backend)
    try:
        accounts = [args.account] if args.account else backend.accounts()
        for account in accounts:
            for entry in backend.in_flight(account):
                if entry.exit_id == args.exit_id:
                    backend.record(entry.with_state("settled"))
                    print(
                        f"exit {entry.exit_id} ({entry.account} {entry.symbol}) resolved as "
                        f"{args.outcome}; the next exit of {entry.symbol} goes on"
                    )
                    return 0
    finally:
        backend.close()
    print(f"nija-guard: no exit {args.exit_id} in flight in {backend.url}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
