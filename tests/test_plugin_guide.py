"""docs/plugins.md's "write your own plugin" example runs, as written."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
MODULE = next(b for b in BLOCKS if b.startswith("# my_bot_guard/__init__.py"))
TESTS = next(b for b in BLOCKS if "def test_" in b)
TEST_NAMES = re.findall(r"^def (test_\w+)", TESTS, re.M)


@pytest.mark.parametrize("name", TEST_NAMES)
def test_guide_example(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    guarded_exchange: Any,
    paper_exchange: Any,
    hook_recorder: Any,
) -> None:
    package = tmp_path / "my_bot_guard"
    package.mkdir()
    (package / "__init__.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_bot_guard", raising=False)
    namespace: dict[str, Any] = {}
    exec(compile(TESTS, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own documentation
    fixtures = {
        "guarded_exchange": guarded_exchange,
        "paper_exchange": paper_exchange,
        "hook_recorder": hook_recorder,
    }
    test = namespace[name]
    test(**{arg: fixtures[arg] for arg in inspect.signature(test).parameters})


def test_the_guide_has_its_example() -> None:
    assert TEST_NAMES == ["test_frozen_symbols_are_never_sold", "test_a_spike_halves_exits"]
