"""HookRecorder: a plugin that records every observer hook call."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from .. import hookspecs
from .._hooks import hookimpl

__all__ = ["HookRecorder", "observer_hooks"]


def observer_hooks() -> dict[str, Callable[..., Any]]:
    """Every observer hookspec (the policy hooks, which return a value, excluded)."""
    found = {}
    for name, spec in vars(hookspecs).items():
        if not name.startswith("nija_guard_") or not callable(spec):
            continue
        opts = getattr(spec, "nija_guard_spec", {}) or {}
        if opts.get("firstresult") or name == "nija_guard_exit_amount":
            continue
        found[name] = spec
    return found


class HookRecorder:
    """Records ``(hook name without the prefix, arguments)`` for every observer hook.

    >>> recorder = HookRecorder()
    >>> exchange = nija_guard.guard(paper, plugins=[recorder])  # doctest: +SKIP
    >>> recorder.named("order_settled")[0]["exit"].outcome       # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()
        for name, spec in observer_hooks().items():
            setattr(self, name, self._implementation(name, spec))

    def _implementation(self, name: str, spec: Callable[..., Any]) -> Callable[..., Any]:
        argnames = list(inspect.signature(spec).parameters)
        short = name.removeprefix("nija_guard_")

        def record(*args: Any) -> None:
            with self._changed:
                self.calls.append((short, dict(zip(argnames, args, strict=True))))
                self._changed.notify_all()

        record.__wrapped__ = spec  # type: ignore[attr-defined]  # pluggy reads the spec's arguments
        record.__name__ = name
        return hookimpl(record)

    def named(self, hook: str) -> list[dict[str, Any]]:
        """The arguments of every call of ``hook`` (with or without the ``nija_guard_`` prefix)."""
        short = hook.removeprefix("nija_guard_")
        with self._changed:
            return [kwargs for name, kwargs in self.calls if name == short]

    def names(self) -> list[str]:
        """The hooks called, in order."""
        with self._changed:
            return [name for name, _ in self.calls]

    def wait_for(self, hook: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until ``hook`` was called ``count`` times (the guard's tracker works meanwhile)."""
        short = hook.removeprefix("nija_guard_")
        with self._changed:
            self._changed.wait_for(
                lambda: sum(1 for name, _ in self.calls if name == short) >= count, timeout
            )
        found = self.named(short)
        if len(found) < count:
            raise AssertionError(
                f"{short}: expected {count} call(s) within {timeout}s, got {len(found)}"
            )
        return found

    def clear(self) -> None:
        with self._changed:
            self.calls.clear()
