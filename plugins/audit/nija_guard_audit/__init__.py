"""An append-only, fsync'd audit log of every exit decision.

One JSON object per line, written with ``O_APPEND`` and flushed to disk with
``fsync`` before the hook returns, so a crash never loses a decision the guard
acted on. The file is created with mode 0600 (and set to it if it existed),
rotated by size (``audit.log`` -> ``audit.log.1`` -> ... ``audit.log.N``).

Entries carry what an operator needs to explain an exit (account, symbol,
exit id, client order id, order id, amounts, outcome, reason) and never its
parameters or credentials: errors are recorded by type only.

::

    from nija_guard_audit import AuditLog

    exchange = nija_guard.guard(client, plugins=[AuditLog("/var/log/bot/exits.log")])

Installed, the plugin also registers itself through the ``nija_guard``
entry-point group; it writes to ``$NIJA_GUARD_AUDIT_PATH`` and is inert when
that is unset.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from nija_guard import Exit, hookimpl

__all__ = ["ENV_PATH", "AuditLog", "plugin"]

ENV_PATH = "NIJA_GUARD_AUDIT_PATH"
MODE = 0o600
log = logging.getLogger("nija_guard.audit")

# The fields of an Exit worth recording; params (and anything secret) never are.
EXIT_FIELDS = (
    "exit_id",
    "account",
    "symbol",
    "side",
    "type",
    "method",
    "requested_amount",
    "amount",
    "price",
    "client_order_id",
    "order_id",
    "filled",
    "reason",
)


class AuditLog:
    """The audit-log plugin. ``path=None`` makes it inert."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        fsync: bool = True,
    ) -> None:
        if max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1024")
        if backups < 0:
            raise ValueError("backups must be >= 0")
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    @classmethod
    def from_env(cls) -> AuditLog:
        return cls(os.environ.get(ENV_PATH) or None)

    # -- the file --------------------------------------------------------------------
    def _open(self) -> int:
        assert self.path is not None  # noqa: S101 - callers check
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, MODE)
        os.fchmod(fd, MODE)  # also when the file existed with looser permissions
        self._size = os.fstat(fd).st_size
        return fd

    def _rotate(self) -> None:
        assert self.path is not None  # noqa: S101
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def write(self, event: str, exit: Exit | None, **details: Any) -> None:
        """Append one entry; it is on disk when this returns."""
        if self.path is None:
            return
        entry: dict[str, Any] = {"ts": time.time(), "event": event}
        if exit is not None:
            entry.update({name: getattr(exit, name) for name in EXIT_FIELDS})
            entry["outcome"] = exit.outcome.value if exit.outcome is not None else None
        entry.update(details)
        line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self._fd = self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                self._fd = self._open()
            os.write(self._fd, line)
            self._size += len(line)
            if self.fsync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- the decisions -----------------------------------------------------------------
    @hookimpl
    def nija_guard_exit_requested(self, exit: Exit) -> None:
        self.write("requested", exit)

    @hookimpl
    def nija_guard_quantity_clamped(
        self, exit: Exit, requested_amount: float, amount: float, sellable: float, reason: str
    ) -> None:
        self.write(
            "clamped",
            exit,
            clamped_from=requested_amount,
            clamped_to=amount,
            sellable=sellable,
            clamp_reason=reason,
        )

    @hookimpl
    def nija_guard_order_submitted(self, exit: Exit) -> None:
        self.write("submitted", exit)

    @hookimpl
    def nija_guard_exit_blocked(self, exit: Exit, holder: Exit | None, reason: str) -> None:
        self.write(
            "blocked",
            exit,
            block_reason=reason,
            holder_exit_id=holder.exit_id if holder is not None else None,
        )

    @hookimpl
    def nija_guard_dust_detected(self, exit: Exit, amount: float, reason: str) -> None:
        self.write("dust", exit, held=amount, dust_reason=reason)

    @hookimpl
    def nija_guard_exit_vetoed(self, exit: Exit, reason: str) -> None:
        self.write("vetoed", exit, veto_reason=reason)

    @hookimpl
    def nija_guard_backend_failed(self, exit: Exit, error: BaseException) -> None:
        self.write("backend_failed", exit, error=type(error).__name__)

    @hookimpl
    def nija_guard_outcome_unknown(self, exit: Exit, error: BaseException) -> None:
        self.write("unknown", exit, error=type(error).__name__)

    @hookimpl
    def nija_guard_order_settled(self, exit: Exit) -> None:
        self.write("settled", exit)

    @hookimpl
    def nija_guard_position_flushed(self, exit: Exit, symbol: str) -> None:
        self.write("flushed", exit)


plugin = AuditLog.from_env()
