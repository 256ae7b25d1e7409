"""The two builds: pure Python (the reference) and the exit path compiled with Cython.

CI runs the whole suite twice: on the editable install (pure Python) and on a
wheel built with ``NIJA_GUARD_REQUIRE_COMPILED=1``, with
``NIJA_GUARD_EXPECT_COMPILED=1`` set so that this file fails if the suite ran on
anything but that wheel's compiled modules (a source tree on ``sys.path`` would
shadow them silently).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

import pytest

import nija_guard
from nija_guard import _build

ROOT = Path(__file__).resolve().parent.parent
EXPECT_COMPILED = os.environ.get("NIJA_GUARD_EXPECT_COMPILED") == "1"


def _loaded_from_extension(name: str) -> bool:
    module = importlib.import_module(f"nija_guard.{name}")
    return str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES))


def test_the_modules_run_are_the_build_it_reports() -> None:
    loaded = [name for name in _build.COMPILED_MODULES if _loaded_from_extension(name)]
    assert loaded == _build.compiled_modules()
    if EXPECT_COMPILED:
        assert _build.build_name() == "compiled"
        assert loaded == list(_build.COMPILED_MODULES)
    elif "NIJA_GUARD_EXPECT_COMPILED" in os.environ:
        # "0": the editable install, where a stale extension would shadow a source edit.
        assert loaded == []
        assert _build.build_name() == "pure Python"


def test_every_compiled_module_exists_and_hookspecs_stays_python() -> None:
    package = ROOT / "nija_guard"
    for name in _build.COMPILED_MODULES:
        assert (package / f"{name}.py").is_file(), name
    # pluggy reads the hookspecs' signatures: that module must stay interpreted.
    assert "hookspecs" not in _build.COMPILED_MODULES


def test_version_names_the_build() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nija_guard._cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.startswith("nija-guard ")
    assert f"({_build.build_name()}, Python " in result.stdout


# -- the build hook (hatch_build.py), without compiling anything --------------------------
def _hook_module() -> Any:
    # hatchling is in the test extra: this never skips.
    spec = importlib.util.spec_from_file_location("_hatch_build_test", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_hook(module: Any, version: str = "standard") -> dict[str, Any]:
    hook = module.CompiledModulesHook(str(ROOT), {}, None, None, str(ROOT), "wheel")
    build_data: dict[str, Any] = {"force_include": {}, "pure_python": True, "infer_tag": False}
    hook.initialize(version, build_data)
    hook.finalize(version, build_data, "")
    return build_data


def test_the_hook_asks_for_cython_only_for_a_compiled_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _hook_module()
    hook = module.CompiledModulesHook(str(ROOT), {}, None, None, str(ROOT), "wheel")
    monkeypatch.delenv("NIJA_GUARD_COMPILE", raising=False)
    monkeypatch.delenv("NIJA_GUARD_REQUIRE_COMPILED", raising=False)
    assert any(dep.startswith("Cython") for dep in hook.dependencies())  # a wheel compiles
    monkeypatch.setenv("NIJA_GUARD_COMPILE", "0")
    assert hook.dependencies() == []
    monkeypatch.setenv("NIJA_GUARD_REQUIRE_COMPILED", "1")
    assert any(dep.startswith("Cython") for dep in hook.dependencies())


def test_an_editable_install_does_not_download_cython(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip asks hatchling.build.get_requires_for_build_editable; the hook is asked inside it."""
    module = _hook_module()
    monkeypatch.delenv("NIJA_GUARD_COMPILE", raising=False)
    monkeypatch.delenv("NIJA_GUARD_REQUIRE_COMPILED", raising=False)
    monkeypatch.chdir(ROOT)
    from hatchling import build as hatchling_build

    assert module._compile_requested()  # what a standard wheel build does
    editable = hatchling_build.get_requires_for_build_editable()
    assert not any(dep.startswith("Cython") for dep in editable)
    wheel = hatchling_build.get_requires_for_build_wheel()
    assert any(dep.startswith("Cython") for dep in wheel)


def test_the_hook_reads_the_module_list_from_the_package() -> None:
    module = _hook_module()
    assert module._compiled_modules(ROOT) == _build.COMPILED_MODULES


@pytest.mark.parametrize(
    "variable", [None, "NIJA_GUARD_COMPILE", "NIJA_GUARD_REQUIRE_COMPILED", "required over 0"]
)
def test_a_wheel_carries_the_compiled_modules_by_default(
    variable: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = _hook_module()
    monkeypatch.delenv("NIJA_GUARD_COMPILE", raising=False)
    monkeypatch.delenv("NIJA_GUARD_REQUIRE_COMPILED", raising=False)
    if variable == "required over 0":  # REQUIRE_COMPILED=1 wins over COMPILE=0
        monkeypatch.setenv("NIJA_GUARD_COMPILE", "0")
        monkeypatch.setenv("NIJA_GUARD_REQUIRE_COMPILED", "1")
    elif variable is not None:
        monkeypatch.setenv(variable, "1")
    built = [tmp_path / f"{name}.so" for name in _build.COMPILED_MODULES]
    monkeypatch.setattr(module, "compile_modules", lambda root, build_dir: built)
    data = _run_hook(module)
    assert data["force_include"] == {str(p): f"nija_guard/{p.name}" for p in built}
    assert data["pure_python"] is False
    assert data["infer_tag"] is True


@pytest.mark.parametrize(
    "how", ["editable", "editable, asked to compile", "set to 0", " 0 ", "false", "Off", "no"]
)
def test_the_hook_compiles_nothing_when_told_not_to_and_never_for_editable_installs(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _hook_module()

    def never(root: Path, build_dir: Path) -> list[Path]:
        raise AssertionError("compiled")

    monkeypatch.setattr(module, "compile_modules", never)
    monkeypatch.delenv("NIJA_GUARD_COMPILE", raising=False)
    monkeypatch.delenv("NIJA_GUARD_REQUIRE_COMPILED", raising=False)
    if how == "editable, asked to compile":
        monkeypatch.setenv("NIJA_GUARD_REQUIRE_COMPILED", "1")
    if how == "set to 0":
        monkeypatch.setenv("NIJA_GUARD_COMPILE", "0")
    elif not how.startswith("editable"):
        monkeypatch.setenv("NIJA_GUARD_COMPILE", how)
    data = _run_hook(module, "editable" if how.startswith("editable") else "standard")
    assert data == {"force_include": {}, "pure_python": True, "infer_tag": False}


def test_a_failed_compile_falls_back_to_a_pure_wheel_unless_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _hook_module()
    monkeypatch.delenv("NIJA_GUARD_COMPILE", raising=False)  # the default: compile

    def no_compiler(root: Path, build_dir: Path) -> list[Path]:
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(module, "compile_modules", no_compiler)
    monkeypatch.delenv("NIJA_GUARD_REQUIRE_COMPILED", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _run_hook(module)
    assert data == {"force_include": {}, "pure_python": True, "infer_tag": False}
    assert any("no C compiler" in str(w.message) for w in caught)

    monkeypatch.setenv("NIJA_GUARD_REQUIRE_COMPILED", "1")
    with pytest.raises(RuntimeError, match="no C compiler"):
        _run_hook(module)


# -- what a bot touches is what Python makes, in either build --------------------------
def test_a_bots_calls_return_what_python_makes() -> None:
    """The proxy stays interpreted: a compiled ``async def`` would hand the bot Cython's
    coroutine type, which ``inspect.iscoroutine`` (and code that awaits only what it
    says is a coroutine) does not know."""
    import asyncio

    from nija_guard.testing import AsyncPaperExchange, PaperExchange

    sync = nija_guard.guard(PaperExchange(balances={"BTC": 1}), load_entrypoints=False)
    assert inspect.ismethod(sync.create_order)
    assert inspect.isfunction(type(sync).create_order)
    sync.nija_guard.close()

    async def main() -> None:
        client = AsyncPaperExchange(balances={"BTC": 1, "USDT": 0})
        exchange = nija_guard.guard(client, load_entrypoints=False)
        assert inspect.iscoroutinefunction(exchange.create_market_sell_order)
        assert inspect.isfunction(type(exchange).create_order)
        await exchange.load_markets()
        sell = exchange.create_market_sell_order("BTC/USDT", 0.25)  # guarded
        assert inspect.iscoroutine(sell)
        assert (await sell)["filled"] == 0.25
        lookup = exchange.fetch_order("no-such-order", "BTC/USDT")  # observed
        assert inspect.iscoroutine(lookup)
        lookup.close()
        closing = exchange.nija_guard.aclose()
        assert inspect.iscoroutine(closing)
        await closing

    asyncio.run(main())
