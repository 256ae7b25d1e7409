"""pluggy plumbing: one plugin manager per guard, observer hooks safely invoked."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs

__all__ = ["Hooks", "hookimpl"]

PROJECT = "nija_guard"
hookimpl = pluggy.HookimplMarker(PROJECT)
log = logging.getLogger("nija_guard")

# NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD=1 switches entry-point loading off;
# NIJA_GUARD_BLOCK_PLUGINS=name1,name2 blocks named entry points.
ENV_DISABLE = "NIJA_GUARD_DISABLE_PLUGIN_AUTOLOAD"
ENV_BLOCK = "NIJA_GUARD_BLOCK_PLUGINS"

_entrypoint_lock = threading.Lock()
_entrypoint_plugins: list[tuple[str, Any]] | None = None


def _entrypoint_plugins_once() -> list[tuple[str, Any]]:
    """Plugins published in the ``nija_guard`` entry-point group, loaded once per process.

    Each is loaded on its own: one that fails to import is logged and skipped,
    and never keeps the others from loading. Blocked names are not imported.
    """
    global _entrypoint_plugins
    with _entrypoint_lock:
        if _entrypoint_plugins is None:
            blocked = set(_blocked())
            loaded: list[tuple[str, Any]] = []
            for entry in entry_points(group=PROJECT):
                if entry.name in blocked or any(name == entry.name for name, _ in loaded):
                    continue
                try:
                    loaded.append((entry.name, entry.load()))
                except Exception:
                    log.exception(
                        "nija_guard plugin %s failed to load; the others load on",
                        entry.name,
                        extra={"nija_guard": {"event": "plugin_load_failed", "plugin": entry.name}},
                    )
            _entrypoint_plugins = loaded
        return list(_entrypoint_plugins)


def _blocked() -> list[str]:
    return [n.strip() for n in os.environ.get(ENV_BLOCK, "").split(",") if n.strip()]


class Hooks:
    """The hooks of one guard."""

    def __init__(self, plugins: Iterable[Any], load_entrypoints: bool) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.errors = 0
        self.on_error: Any = None  # called with the hook's name (metrics)
        blocked = _blocked()
        for name in blocked:
            self.pm.set_blocked(name)
        if load_entrypoints and os.environ.get(ENV_DISABLE, "").lower() not in ("1", "true", "yes"):
            for name, plugin in _entrypoint_plugins_once():
                if name not in blocked and not self.pm.is_registered(plugin):
                    self.pm.register(plugin, name=name)
        for plugin in plugins:
            if not self.pm.is_registered(plugin):
                self.pm.register(plugin)
        self._cache: dict[str, bool] = {}
        self._cache_lock = threading.Lock()
        self._generation = 0  # bumped by every (un)register: an older answer is not kept

    def wants(self, name: str) -> bool:
        """Whether any plugin implements ``name`` (so building its arguments is worth it)."""
        try:
            return self._cache[name]
        except KeyError:
            generation = self._generation
            found = bool(getattr(self.pm.hook, name).get_hookimpls())
            with self._cache_lock:
                if generation == self._generation:  # no register() since the read
                    self._cache[name] = found
            return found

    def _forget(self) -> None:
        with self._cache_lock:
            self._generation += 1
            self._cache.clear()

    def register(self, plugin: Any, name: str | None = None) -> None:
        self.pm.register(plugin, name=name)
        self._forget()

    def unregister(self, plugin: Any) -> None:
        self.pm.unregister(plugin)
        self._forget()

    def notify(self, name: str, kwargs: dict[str, Any]) -> list[Any]:
        """Call every implementation of an observer hook, each isolated.

        Returns the awaitables implementations returned (async plugins), for an
        async driver to await; a sync driver closes them unawaited.
        """
        pending: list[Any] = []
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                self._failed(name, impl.plugin_name, exc)
                continue
            if inspect.isawaitable(result):
                pending.append((name, impl.plugin_name, result))
        return pending

    def _failed(self, name: str, plugin: str, exc: BaseException) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error(name)
        log.error(
            "hook %s of plugin %s raised %s; the exit goes on",
            name,
            plugin,
            type(exc).__name__,
            exc_info=exc,
            extra={"nija_guard": {"event": "hook_error", "hook": name, "plugin": plugin}},
        )

    def ask(self, name: str, kwargs: dict[str, Any]) -> Any:
        """Call a firstresult policy hook; its exceptions propagate."""
        return getattr(self.pm.hook, name)(**kwargs)

    def collect(self, name: str, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        """Every implementation's result (or exception), for a policy hook; never raises.

        A coroutine result is closed and reported as an error: a sync guard cannot await it.
        """
        results: list[tuple[str, Any]] = []
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                result = exc
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                result = TypeError("an async hook on a sync guard")
            results.append((impl.plugin_name, result))
        return results

    async def collect_async(self, name: str, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        results: list[tuple[str, Any]] = []
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                result = exc
            results.append((impl.plugin_name, result))
        return results

    async def ask_async(self, name: str, kwargs: dict[str, Any]) -> Any:
        """A firstresult hook whose implementations may be coroutines.

        pluggy would stop at the first coroutine object (it is not None); here
        each result is awaited and the first non-None *value* wins.
        """
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        return None
