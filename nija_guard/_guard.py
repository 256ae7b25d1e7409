"""``guard()``: the proxy in front of a broker client, and its controller.

The proxy stays thin: order-entry methods hand the call to the engine through
the driver, order-reading methods let the engine see the bot's own results,
everything else is wrapt's plain passthrough.
"""

from __future__ import annotations

import functools
import inspect
import logging
import operator
import threading
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import wrapt

from ._adapter import Adapter, CcxtAdapter, EntryPoint
from ._async import AsyncDriver
from ._backend import Backend, open_backend
from ._book import Book
from ._engine import Engine
from ._hooks import Hooks
from ._model import Outcome, to_decimal
from ._options import Options
from ._sync import SyncDriver
from ._telemetry import Telemetry

__all__ = ["Guard", "guard", "unguarded"]

log = logging.getLogger("nija_guard")

_ADAPTER = CcxtAdapter()
_registry_lock = threading.Lock()
_books: weakref.WeakValueDictionary[tuple[str, str], Book] = weakref.WeakValueDictionary()
_backends: dict[str, Backend] = {}
# Per adapter, per client class: the proxy classes (an adapter that goes away takes its own).
_proxy_classes: weakref.WeakKeyDictionary[Any, dict[type, type]] = weakref.WeakKeyDictionary()


def _version() -> str:
    from . import __version__

    return __version__


class Guard:
    """The controller of one guarded client: ``exchange.nija_guard``."""

    def __init__(self, client: Any, options: Options) -> None:
        self.raw = client
        self.options = options
        self.adapter: Adapter = adapter_for(client, options.adapter)
        self.account = self.adapter.account_id(client, options.account)
        self.book, self.backend = self._shared_book(options.backend)
        self.hooks = Hooks(options.plugins, options.load_entrypoints)
        self.telemetry = Telemetry(
            options.tracer_provider,
            options.meter_provider,
            _version(),
            exchange=self.adapter.venue_name(client),
        )
        self.hooks.on_error = lambda hook: self.telemetry.count("hook_errors", hook=hook)
        self.engine = Engine(
            client=client,
            adapter=self.adapter,
            book=self.book,
            options=options,
            hooks=self.hooks,
            telemetry=self.telemetry,
            account=self.account,
            durable=self.backend.durable,
        )
        self.is_async = self.adapter.is_async(type(client))
        driver_type = AsyncDriver if self.is_async else SyncDriver
        self.driver: Any = driver_type(self.engine, client, self.backend, self.hooks, self.book)
        self.engine.wake = self.driver.tracker.wake
        self.book.engines.add(self.engine)
        self.closed = False

    def _shared_book(self, url: str) -> tuple[Book, Backend]:
        """One book per account: every guard of that account shares its locks.

        An in-memory backend lives and dies with its book (its leases mean
        nothing beyond this process's exits of the account); durable backends
        are shared per URL.
        """
        key = (url, self.account)
        with _registry_lock:
            book = _books.get(key)
            fresh = book is None
            if book is None:
                if url == "memory":
                    backend = open_backend(url)
                else:
                    backend = _backends.get(url) or _backends.setdefault(
                        url, open_backend(url, timeout=self.options.backend_timeout)
                    )
                book = Book(self.account)
                book.backend = backend
                _books[key] = book
            if book.ownership not in (None, self.options.ownership):
                raise ValueError(
                    f"account {self.account} is already guarded with ownership={book.ownership!r}; "
                    "every guard of one account must use the same ownership"
                )
            book.ownership = self.options.ownership
            # Kept as long as any guard of the account answers retries; each guard
            # answers within its own retry_window (Engine._retry_of).
            book.resolved.ttl = max(book.resolved.ttl, self.options.retry_window)
        if fresh:
            for asset, amount in self.options.ledger_seed.items():
                book.ledger_add(asset, amount)
        return book, book.backend

    # -- the documented controls -----------------------------------------------------
    def seed(self, asset: str, amount: float | str | Decimal) -> Decimal:
        """Ledger mode: declare that the bot owns ``amount`` more of ``asset``."""
        number = to_decimal(amount)
        if self.options.ownership != "ledger":
            raise ValueError("seed() applies to ownership='ledger' only")
        if not isinstance(asset, str) or not asset or number is None or number < 0:
            raise ValueError(
                f"seed needs an asset code and a non-negative amount, got {asset!r}, {amount!r}"
            )
        return self.book.ledger_add(asset, number)

    def owned(self, asset: str) -> Decimal:
        """Ledger mode: what the bot owns of ``asset`` (in-flight sells already deducted)."""
        return self.book.ledger_available(asset)

    def locked_symbols(self) -> list[str]:
        """Symbols whose close lock is held right now."""
        return self.book.locked_keys()

    def status(self) -> dict[str, Any]:
        """Exits in flight, unknown outcomes and table sizes, for operators and tests."""
        records = self.book.tracked_records()
        return {
            "account": self.account,
            "ownership": self.options.ownership,
            "locked": self.book.locked_keys(),
            "in_flight": [
                {
                    "exit_id": r.exit.exit_id,
                    "symbol": r.exit.symbol,
                    "phase": r.phase.value,
                    "order_id": r.order_id,
                    "client_order_id": r.client_order_id,
                    "amount": r.exit.amount,
                    "filled": float(r.filled),
                }
                for r in records
                if r.kind == "exit"
            ],
            "unknown": [r.exit.symbol for r in records if r.phase.value == "unknown"],
            "tables": self.book.table_sizes(),
            "counters": dict(self.book.counters),
            "hook_errors": self.hooks.errors,
            "broker_calls": dict(self.driver.calls),
        }

    def recover(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Reconcile exits the journal shows in flight (all symbols, or one) with the exchange.

        What a restarted process does by itself at its first exit of a symbol,
        on demand: for operators (``nija-guard reconcile``) and tests.
        """
        symbols = (
            [symbol] if symbol else sorted({e.symbol for e in self.backend.in_flight(self.account)})
        )
        report: list[dict[str, Any]] = []
        for name in symbols:
            report.extend(self.driver.run(self.engine.recover(name)))
        return report

    async def arecover(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """:meth:`recover` for an async guard."""
        symbols = (
            [symbol] if symbol else sorted({e.symbol for e in self.backend.in_flight(self.account)})
        )
        report: list[dict[str, Any]] = []
        for name in symbols:
            report.extend(await self.driver.run(self.engine.recover(name)))
        return report

    def resolve(self, exit_id: str, outcome: Outcome | str) -> dict[str, Any]:
        """Operators: settle an exit whose outcome the guard cannot learn, by exit id.

        ``outcome`` is what the broker shows: ``"not_placed"`` (no such order),
        ``"filled"`` or ``"canceled"`` (final). For an UNKNOWN exit of this
        process, or a journaled exit of a stopped one (``nija-guard status``
        lists them). Its symbol is free again; a wrong answer is the operator's.
        """
        return dict(self.driver.run(self.engine.resolve(exit_id, Outcome(outcome))))

    async def aresolve(self, exit_id: str, outcome: Outcome | str) -> dict[str, Any]:
        """:meth:`resolve` for an async guard."""
        return dict(await self.driver.run(self.engine.resolve(exit_id, Outcome(outcome))))

    def journal(self) -> list[dict[str, Any]]:
        """The backend's exits in flight for this account, and its leases."""
        return [entry.__dict__ for entry in self.backend.in_flight(self.account)]

    def poll(self) -> int:
        """Poll every due order now, on this thread (the tracker does this by itself)."""
        return int(self.driver.tracker.poll_once())

    async def apoll(self) -> int:
        """Async guards: poll every due order now, on this task."""
        return int(await self.driver.tracker.apoll_once())

    def register(self, plugin: Any, name: str | None = None) -> None:
        self.hooks.register(plugin, name)

    def close(self) -> None:
        """Stop tracking in the background. Locks of resting orders stay held."""
        if self.closed:
            return
        self.closed = True
        self.driver.tracker.close()
        self.driver.keeper.close()
        self._warn_in_flight()
        self._closed_hook()

    async def aclose(self) -> None:
        """Async guards: cancel the tracker tasks and wait for them to end."""
        if self.closed:
            return
        self.closed = True
        await self.driver.tracker.aclose()
        await self.driver.keeper.aclose()
        self._warn_in_flight()
        for hook, plugin, awaitable in self._closed_hook():
            try:
                await awaitable
            except Exception as exc:
                self.hooks._failed(hook, plugin, exc)

    def _closed_hook(self) -> list[Any]:
        """Tell plugins; returns awaitables an async guard awaits."""
        pending = self.hooks.notify("nija_guard_guard_closed", {"account": self.account})
        if not self.is_async:
            for _, _, awaitable in pending:
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()
            return []
        return pending

    def _hand_over(self) -> None:
        """Orders this guard tracked go to another guard of the account, if one is open."""
        self.book.engines.discard(self.engine)
        heirs = [e for e in list(self.book.engines) if e is not self.engine]
        if not heirs:
            return
        heir = heirs[0]
        moved = False
        for rec in self.book.tracked_records():
            if rec.owner is self.engine:
                rec.owner = heir
                moved = True
        if moved:
            heir.wake()

    def _warn_in_flight(self) -> None:
        # An exit still running now is tracked after the close: hand it over then too.
        self.driver.tracker.orphaned = self._hand_over
        self._hand_over()
        if any(r.owner is self.engine for r in self.book.tracked_records()):
            log.warning(
                "guard closed with exits in flight; their symbols stay locked",
                extra={"nija_guard": {"event": "closed_in_flight", "account": self.account}},
            )

    def __repr__(self) -> str:
        return f"<nija_guard.Guard account={self.account!r} ownership={self.options.ownership!r}>"


if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy


class GuardedClient(_Proxy):
    """The proxy ``guard()`` returns; ``isinstance`` sees the client's class."""

    def __init__(self, wrapped: Any, controller: Guard) -> None:
        super().__init__(wrapped)
        self._self_guard = controller

    @property
    def nija_guard(self) -> Guard:
        return self._self_guard

    def __repr__(self) -> str:
        g = self._self_guard
        return (
            f"<nija_guard.guard({type(self.__wrapped__).__name__}) account={g.account!r} "
            f"ownership={g.options.ownership!r} on_conflict={g.options.on_conflict!r}>"
        )

    def __enter__(self) -> GuardedClient:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        self._self_guard.close()
        leave = getattr(self.__wrapped__, "__exit__", None)
        if leave is not None:
            return leave(*exc_info)
        close = getattr(self.__wrapped__, "close", None)
        if callable(close):
            close()
        return None

    async def __aenter__(self) -> GuardedClient:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        """Stops the guard's tasks, then closes the client (its sessions too)."""
        await self._self_guard.aclose()
        leave = getattr(self.__wrapped__, "__aexit__", None)
        if leave is not None:
            return await leave(*exc_info)
        close = getattr(self.__wrapped__, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
        return None

    def __getattr__(self, name: str) -> Any:
        """Not on the proxy's class: added to the client's class after guard(), or an
        instance attribute. A bot's helper runs on the proxy; order entry is guarded."""
        wrapped = self.__wrapped__
        # The client's own instance attributes (set in its __init__) go straight through.
        if not name.startswith("__") and name not in getattr(wrapped, "__dict__", ()):
            client_type = type(wrapped)
            helper = _bot_helper(client_type, name)
            if helper is not None:
                return helper.__get__(self, type(self))
            func = getattr(client_type, name, None)
            target = getattr(func, "__name__", None)
            if (
                callable(func)
                and isinstance(target, str)
                and target != name
                and (target in type(self).__dict__)
            ):
                return getattr(self, target)  # a late alias of a guarded method
        return getattr(wrapped, name)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a guarded client cannot be pickled: its locks live in this process")

    def __copy__(self) -> Any:
        raise TypeError(
            "a guarded client cannot be copied: share the one guard (a copy of the client "
            "would be a second client with its own locks)"
        )

    def __deepcopy__(self, memo: Any) -> Any:
        return self.__copy__()


def _passthrough(attr: str) -> property:
    """Everything else the client's class has: read straight from the client, in C.

    ``property`` and ``attrgetter`` are both C, so reading ``proxy.fetch_ticker``
    costs one descriptor call instead of wrapt's failed lookup and ``__getattr__``.
    Instance attributes of the same name (ccxt sets ``markets``, ``apiKey``...)
    are found the same way; writes and deletes go to the client.
    """

    def write(proxy: Any, value: Any) -> None:
        setattr(proxy.__wrapped__, attr, value)

    def delete(proxy: Any) -> None:
        delattr(proxy.__wrapped__, attr)

    return property(operator.attrgetter(f"__wrapped__.{attr}"), write, delete)


# Library code runs on the client itself; a bot's own subclass methods run on the proxy.
_LIBRARY_MODULES = ("ccxt.", "nija_guard.", "alpaca.")
_LIBRARIES = frozenset({"ccxt", "nija_guard", "alpaca"})


def _bot_helper(client_type: type, attr: str) -> Callable[..., Any] | None:
    """The plain function ``attr`` when the bot's own code defines it on its client class."""
    for klass in client_type.__mro__:
        if attr in vars(klass):
            value = vars(klass)[attr]
            module = getattr(klass, "__module__", "") or ""
            library = module in _LIBRARIES or module.startswith(_LIBRARY_MODULES)
            if inspect.isfunction(value) and not library:
                return value
            return None
    return None


def _bot_partialmethod(client_type: type, attr: str, namespace: dict[str, Any]) -> Any:
    """A bot's ``functools.partialmethod`` helper, rebuilt on what the proxy calls."""
    for klass in client_type.__mro__:
        if attr in vars(klass):
            value = vars(klass)[attr]
            module = getattr(klass, "__module__", "") or ""
            if module in _LIBRARIES or module.startswith(_LIBRARY_MODULES):
                return None
            if not isinstance(value, functools.partialmethod):
                return None
            target = getattr(value.func, "__name__", "")
            if target in namespace:  # a guarded (or observed) method: through the proxy
                func = namespace[target]
            elif inspect.isfunction(value.func) and not str(value.func.__module__).startswith(
                _LIBRARY_MODULES
            ):
                func = value.func  # the bot's own function: runs with the proxy as self
            else:
                return None
            return functools.partialmethod(func, *value.args, **value.keywords)
    return None


def _guarded_method(attr: str, entry: EntryPoint) -> Callable[..., Any]:
    def method(self: GuardedClient, *args: Any, **kwargs: Any) -> Any:
        g = self._self_guard
        return g.driver.run(g.engine.call(entry, args, kwargs))

    method.__name__ = attr
    method.__qualname__ = f"GuardedClient.{attr}"
    method.__doc__ = f"{entry.name}, guarded by nija_guard (kind {entry.kind!r})."
    return method


def _async_guarded_method(attr: str, entry: EntryPoint) -> Callable[..., Any]:
    async def method(self: GuardedClient, *args: Any, **kwargs: Any) -> Any:
        g = self._self_guard
        return await g.driver.run(g.engine.call(entry, args, kwargs))

    method.__name__ = attr
    method.__qualname__ = f"GuardedClient.{attr}"
    method.__doc__ = f"{entry.name}, guarded by nija_guard (kind {entry.kind!r})."
    return method


def _async_observed_method(attr: str, name: str) -> Callable[..., Any]:
    async def method(self: GuardedClient, *args: Any, **kwargs: Any) -> Any:
        result = await getattr(self.__wrapped__, attr)(*args, **kwargs)
        g = self._self_guard
        if g.book.tracked:
            try:
                seen = g.adapter.observed_reply(name, result)
                await g.driver.run(g.engine.observe(name, args, seen, kwargs))
            except Exception:
                log.exception(
                    "could not learn from %s",
                    name,
                    extra={"nija_guard": {"event": "observe_failed"}},
                )
        return result

    method.__name__ = attr
    method.__qualname__ = f"GuardedClient.{attr}"
    return method


def _observed_method(attr: str, name: str) -> Callable[..., Any]:
    def method(self: GuardedClient, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.__wrapped__, attr)(*args, **kwargs)
        g = self._self_guard
        if g.book.tracked:
            try:
                seen = g.adapter.observed_reply(name, result)
                g.driver.run(g.engine.observe(name, args, seen, kwargs))
            except Exception:
                log.exception(
                    "could not learn from %s",
                    name,
                    extra={"nija_guard": {"event": "observe_failed"}},
                )
        return result

    method.__name__ = attr
    method.__qualname__ = f"GuardedClient.{attr}"
    return method


def proxy_class(client_type: type, adapter: Adapter | None = None) -> type:
    """The proxy class for a client class: its order-entry methods guarded."""
    adapter = adapter or _ADAPTER
    with _registry_lock:
        cls = _proxy_classes.get(adapter, {}).get(client_type)
        if cls is not None:
            return cls
    namespace: dict[str, Any] = {"__slots__": (), "__module__": __name__}
    is_async = adapter.is_async(client_type)
    guarded = _async_guarded_method if is_async else _guarded_method
    observed = _async_observed_method if is_async else _observed_method
    for attr, entry in adapter.entry_points(client_type).items():
        namespace[attr] = guarded(attr, entry)
    for attr, name in adapter.observed(client_type).items():
        if attr not in namespace:
            namespace[attr] = observed(attr, name)
    reserved = {name for klass in GuardedClient.__mro__ for name in vars(klass)}
    for attr in dir(client_type):
        if attr.startswith("__") or attr in namespace or attr in reserved:
            continue
        helper = _bot_helper(client_type, attr) or _bot_partialmethod(client_type, attr, namespace)
        # A bot's own helper (def market_sell(self, ...): self.create_order(...)) runs
        # with the proxy as self, so the orders it places inside are guarded too.
        namespace[attr] = helper if helper is not None else _passthrough(attr)
    cls = type(f"Guarded{client_type.__name__}", (GuardedClient,), namespace)
    with _registry_lock:
        return _proxy_classes.setdefault(adapter, {}).setdefault(client_type, cls)


def adapter_for(client: Any, chosen: Adapter | None = None) -> Adapter:
    """The adapter the bot chose, or the one that knows this client."""
    if chosen is not None:
        return chosen
    if CcxtAdapter.handles(client):
        return _ADAPTER
    from ._alpaca import AlpacaAdapter

    if AlpacaAdapter.handles(client):
        return AlpacaAdapter.shared()
    raise TypeError(
        f"guard() does not know how to read the order methods of {type(client).__name__}: "
        "ccxt clients and alpaca-py's TradingClient are recognized; for another broker "
        "describe it with nija_guard.Broker(...) and pass adapter= (see docs/adapters.md)"
    )


def guard(client: Any, **options: Any) -> Any:
    """Put nija-guard in front of a broker client; use what it returns instead.

    See docs/options.md for ``options``. Guarding a guarded client, or the
    same client again, returns the same guard; giving it different options
    then is an error.
    """
    existing = (
        client
        if isinstance(type(client), type) and issubclass(type(client), GuardedClient)
        else None
    )
    if existing is None:
        existing = getattr(client, "__dict__", {}).get("_nija_guard_proxy")
    if existing is not None:
        controller: Guard = existing.nija_guard
        differs = controller.options.differs_from(options) if options else []
        if differs:
            raise ValueError(
                f"this client is already guarded with other {', '.join(differs)}; "
                "guard it once and share the returned object"
            )
        return existing
    controller = Guard(client, Options.from_kwargs(options))
    proxy = proxy_class(type(client), controller.adapter)(client, controller)
    client.__dict__["_nija_guard_proxy"] = proxy
    return proxy


def unguarded(client: Any) -> Any:
    """The raw client behind a guard: the escape hatch. Exits through it are unprotected."""
    if isinstance(type(client), type) and issubclass(type(client), GuardedClient):
        return client.__wrapped__
    return client
