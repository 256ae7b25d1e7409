"""Plugins: discovery, policy hooks, isolation, the pytest plugin, and documented hooks."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, assert_no_leaks

import nija_guard
from nija_guard import _hooks, hookspecs
from nija_guard.testing import AsyncPaperExchange, PaperExchange

ROOT = Path(__file__).resolve().parent.parent


# -- discovery through the nija_guard entry-point group -----------------------------------
@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution on sys.path publishing a plugin in the ``nija_guard`` group."""
    (tmp_path / "demo_nija_plugin.py").write_text(
        textwrap.dedent(
            """
            import nija_guard

            SEEN = []

            @nija_guard.hookimpl
            def nija_guard_exit_requested(exit):
                SEEN.append(exit.symbol)
            """
        )
    )
    dist = tmp_path / "demo_nija_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-nija-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nija_guard]\ndemo = demo_nija_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(_hooks.ENV_DISABLE, raising=False)
    monkeypatch.delenv(_hooks.ENV_BLOCK, raising=False)
    monkeypatch.setattr(_hooks, "_entrypoint_plugins", None)  # a fresh process, as it were
    yield tmp_path
    sys.modules.pop("demo_nija_plugin", None)


def _guard(**options: Any) -> Any:
    return nija_guard.guard(PaperExchange(balances={"BTC": 1}), **{**FAST, **options})


def test_entry_point_plugins_are_loaded(installed_plugin: Path) -> None:
    ex = _guard(load_entrypoints=True)
    ex.create_market_sell_order("BTC/USDT", 0.1)
    assert sys.modules["demo_nija_plugin"].SEEN == ["BTC/USDT"]
    assert "demo" in dict(ex.nija_guard.hooks.pm.list_name_plugin())


def test_entry_points_are_loaded_once_per_process(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []
    original = _hooks.entry_points

    def counting(**kwargs: Any) -> Any:
        loads.append(kwargs["group"])
        return original(**kwargs)

    monkeypatch.setattr(_hooks, "entry_points", counting)
    _guard(load_entrypoints=True)
    _guard(load_entrypoints=True)
    assert loads == ["nija_guard"]


def test_a_broken_entry_point_does_not_stop_the_others(
    installed_plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (installed_plugin / "broken_nija_plugin.py").write_text("raise ImportError('broken plugin')\n")
    dist = installed_plugin / "broken_nija_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-nija-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text("[nija_guard]\naaa-broken = broken_nija_plugin\n")
    ex = _guard(load_entrypoints=True)
    ex.create_market_sell_order("BTC/USDT", 0.1)
    assert sys.modules["demo_nija_plugin"].SEEN == ["BTC/USDT"]
    assert any("aaa-broken" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", ["option", "env-disable", "env-block"])
def test_entry_point_loading_can_be_switched_off(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env-disable":
        monkeypatch.setenv(_hooks.ENV_DISABLE, "1")
    if how == "env-block":
        monkeypatch.setenv(_hooks.ENV_BLOCK, "other, demo")
    ex = _guard(load_entrypoints=how != "option")
    ex.create_market_sell_order("BTC/USDT", 0.1)
    module = sys.modules.get("demo_nija_plugin")
    assert module is None or module.SEEN == []


# -- policy: the amount hook may only lower ------------------------------------------------
class AmountPolicy:
    def __init__(self, result: Any) -> None:
        self.result = result

    @nija_guard.hookimpl
    def nija_guard_exit_amount(self, exit: Any, amount: float) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result(amount) if callable(self.result) else self.result


def test_amount_hook_lowers_the_sell(make_guard: Any, recorder: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    ex = make_guard(
        paper, plugins=[recorder, AmountPolicy(lambda a: a / 2), AmountPolicy(lambda a: a * 0.8)]
    )
    order = ex.create_market_sell_order("BTC/USDT", 1)
    assert order["amount"] == pytest.approx(0.5)  # the lowest wins
    clamp = recorder.named("quantity_clamped")[-1]
    assert clamp["reason"] == "policy" and clamp["amount"] == pytest.approx(0.5)


def test_amount_hook_cannot_raise_the_sell(make_guard: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    ex = make_guard(paper, plugins=[AmountPolicy(5.0)])
    assert ex.create_market_sell_order("BTC/USDT", 0.3)["amount"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "result",
    [0, -1, "lots", float("nan"), RuntimeError("policy bug"), 0.00001],
    ids=["zero", "negative", "text", "nan", "raises", "below-minimum"],
)
def test_amount_hook_bad_answers_veto(make_guard: Any, recorder: Any, result: Any) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    ex = make_guard(paper, plugins=[recorder, AmountPolicy(result)])
    with pytest.raises(nija_guard.ExitVetoed):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert "create_order" not in paper.calls
    assert recorder.named("exit_vetoed")
    assert_no_leaks(ex)


def test_async_amount_hook_is_awaited() -> None:
    class Halve:
        @nija_guard.hookimpl
        async def nija_guard_exit_amount(self, amount: float) -> float:
            await asyncio.sleep(0)
            return amount / 2

    async def main() -> None:
        async with nija_guard.guard(
            AsyncPaperExchange(balances={"BTC": 1}), **FAST, plugins=[Halve()]
        ) as ex:
            order = await ex.create_market_sell_order("BTC/USDT", 1)
            assert order["amount"] == pytest.approx(0.5)

    asyncio.run(main())


def test_veto_fires_the_vetoed_hook_with_the_reason(make_guard: Any, recorder: Any) -> None:
    class Closed:
        @nija_guard.hookimpl
        def nija_guard_exit_veto(self) -> str:
            return "weekend"

    ex = make_guard(PaperExchange(balances={"BTC": 1}), plugins=[recorder, Closed()])
    with pytest.raises(nija_guard.ExitVetoed, match="weekend"):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert recorder.named("exit_vetoed")[0]["reason"] == "weekend"


def test_backend_failure_fails_closed_and_fires_its_hook(
    make_guard: Any, recorder: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    paper = PaperExchange(balances={"BTC": 1})
    ex = make_guard(paper, plugins=[recorder], backend=f"sqlite:///{tmp_path}/guard.db")

    def down(*args: Any) -> Any:
        raise ConnectionError("backend unreachable")

    monkeypatch.setattr(ex.nija_guard.backend, "acquire", down)
    with pytest.raises(nija_guard.BackendUnavailable):
        ex.create_market_sell_order("BTC/USDT", 0.5)
    assert "create_order" not in paper.calls
    assert isinstance(recorder.named("backend_failed")[0]["error"], nija_guard.BackendUnavailable)
    assert ex.nija_guard.locked_symbols() == []


def test_hookimpls_may_take_any_subset_of_arguments(make_guard: Any) -> None:
    seen: list[Any] = []

    class Subset:
        @nija_guard.hookimpl
        def nija_guard_order_settled(self, order: Any) -> None:
            seen.append(order["status"])

        @nija_guard.hookimpl
        def nija_guard_exit_blocked(self) -> None:
            seen.append("blocked")

    ex = make_guard(PaperExchange(balances={"BTC": 1}), plugins=[Subset()])
    ex.create_limit_sell_order("BTC/USDT", 0.2, 90_000)
    with pytest.raises(nija_guard.ExitInProgress):
        ex.create_market_sell_order("BTC/USDT", 0.2)
    assert seen == ["blocked"]


def test_register_a_plugin_later(ex: Any) -> None:
    seen: list[str] = []

    class Late:
        @nija_guard.hookimpl
        def nija_guard_order_settled(self, exit: Any) -> None:
            seen.append(exit.symbol)

    ex.nija_guard.register(Late())
    ex.create_market_sell_order("BTC/USDT", 0.1)
    assert seen == ["BTC/USDT"]


# -- the pytest plugin -----------------------------------------------------------------------
def test_pytest_plugin_fixtures(
    guarded_exchange: Any, hook_recorder: Any, paper_exchange: Any
) -> None:
    guarded_exchange.create_market_sell_order("BTC/USDT", 0.4)
    guarded_exchange.create_market_sell_order("BTC/USDT", 5)  # clamped to the 0.6 left
    with pytest.raises(nija_guard.NothingToSell):
        guarded_exchange.create_market_sell_order("BTC/USDT", 5)
    assert paper_exchange.holdings("BTC") == 0
    assert hook_recorder.names()[0] == "exit_requested"
    assert len(hook_recorder.named("order_settled")) == 2


def test_pytest_plugin_is_registered_and_import_light() -> None:
    code = (
        "import sys, pytest_nija_guard; "
        "heavy = [m for m in ('ccxt', 'nija_guard', 'aiohttp', 'requests') if m in sys.modules]; "
        "assert heavy == [], heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 - our own interpreter
    from importlib.metadata import entry_points

    assert "pytest_nija_guard" in [ep.value for ep in entry_points(group="pytest11")]


# -- every hook documented, with its signature ----------------------------------------------
def _hookspecs() -> dict[str, str]:
    specs = {}
    for name, func in vars(hookspecs).items():
        if name.startswith("nija_guard_") and callable(func):
            specs[name] = f"{name}({', '.join(inspect.signature(func).parameters)})"
    return specs


def test_every_hook_is_documented_with_its_signature() -> None:
    docs = (ROOT / "docs" / "hooks.md").read_text()
    documented = set(re.findall(r"`(nija_guard_\w+\([^)]*\))`", docs))
    specs = set(_hookspecs().values())
    assert specs - documented == set(), (
        "hooks missing from docs/hooks.md (or with another signature)"
    )
    stale = {sig for sig in documented if sig.split("(")[0] not in _hookspecs()}
    assert stale == set(), "docs/hooks.md documents hooks that do not exist"


def test_every_hookspec_says_when_it_fires_and_whether_it_may_raise() -> None:
    for name, func in vars(hookspecs).items():
        if name.startswith("nija_guard_") and callable(func):
            doc = inspect.getdoc(func) or ""
            assert len(doc) > 40, name
            assert "raise" in doc.lower(), f"{name}: say whether it may raise"


def test_outcome_resolved_is_the_all_clear(make_guard: Any, recorder: Any) -> None:
    import ccxt

    paper = PaperExchange(balances={"BTC": 1})
    ex = make_guard(paper, plugins=[recorder])
    paper.ghost_next_order()
    ex.create_market_sell_order("BTC/USDT", 0.2)
    paper.inject("create_order", ccxt.NetworkError("never arrived"))
    with pytest.raises(ccxt.NetworkError):
        ex.create_market_sell_order("BTC/USDT", 0.2)
    resolved = recorder.named("outcome_resolved")
    assert [r["order"] is not None for r in resolved] == [True, False]
    assert resolved[1]["exit"].outcome == nija_guard.Outcome.NOT_PLACED
    assert len(recorder.named("outcome_unknown")) == 2


def test_guard_closed_tells_plugins_sync_and_async() -> None:
    closed: list[str] = []

    class Flusher:
        @nija_guard.hookimpl
        def nija_guard_guard_closed(self, account: str) -> None:
            closed.append(account)

    class AsyncFlusher:
        @nija_guard.hookimpl
        async def nija_guard_guard_closed(self, account: str) -> None:
            await asyncio.sleep(0)
            closed.append("async " + account)

    with nija_guard.guard(PaperExchange(), **FAST, plugins=[Flusher()]) as ex:
        account = ex.nija_guard.account
    assert closed == [account]

    async def main() -> str:
        async with nija_guard.guard(AsyncPaperExchange(), **FAST, plugins=[AsyncFlusher()]) as aex:
            return str(aex.nija_guard.account)

    async_account = asyncio.run(main())
    assert closed == [account, "async " + async_account]
