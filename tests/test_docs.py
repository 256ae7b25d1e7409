"""The docs name the tests that prove each guarantee: those tests must exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEFINED = {
    match.group(1)
    for path in (ROOT / "tests").rglob("test_*.py")
    for match in re.finditer(r"^\s*(?:async )?def (test_\w+)", path.read_text(), re.M)
}


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_test_the_docs_cite_exists(doc: Path) -> None:
    # test names, not module names (test_faults.py), outside example code blocks
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    cited = {m.group(1) + m.group(2) for m in re.finditer(r"\b(test_\w+)(\*?)(?!\w|\.py)", text)}
    missing = []
    for name in cited:
        if name.endswith("*") or name.endswith("_"):
            if not any(d.startswith(name.rstrip("*")) for d in DEFINED):
                missing.append(name)
        elif name not in DEFINED:
            missing.append(name)
    assert missing == [], f"{doc.name} cites tests that do not exist: {sorted(missing)}"


def test_readme_holds_the_ci_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'TEST_COMMAND="(.+)"', ci)
    assert command is not None
    assert command.group(1) in (ROOT / "README.md").read_text()


def test_every_guard_option_is_documented() -> None:
    from dataclasses import fields

    from nija_guard._options import Options

    table = (ROOT / "docs" / "options.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert {f.name for f in fields(Options)} <= documented
