"""Which build is running: pure Python, or the exit path compiled with Cython.

A wheel compiles ``COMPILED_MODULES`` (see ``hatch_build.py``; editable installs
, wheels built with ``NIJA_GUARD_COMPILE=0`` and wheels whose compile failed are
pure Python) and carries each
beside its ``.py`` source; Python imports the extension first. Standard library only: the build hook
reads this file on its own.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The modules an exit runs through: drivers, state machine, book, adapters, values,
# hooks, telemetry. Not the proxy (_guard.py): what a bot calls and gets back must be
# what Python makes, as the client's own are (a compiled ``async def`` returns
# Cython's coroutine type, which ``inspect.iscoroutine`` does not know). Not
# hookspecs.py: pluggy reads its functions' signatures.
COMPILED_MODULES = (
    "_engine",
    "_book",
    "_model",
    "_adapter",
    "_broker",
    "_sync",
    "_async",
    "_hooks",
    "_telemetry",
)


def compiled_modules() -> list[str]:
    """The modules of this installation that import from a compiled extension file."""
    package = Path(__file__).parent
    return [
        name
        for name in COMPILED_MODULES
        if any((package / f"{name}{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
    ]


def build_name() -> str:
    """``"compiled"`` (every module of the exit path), ``"pure Python"`` or ``"partly
    compiled"`` (a broken installation: some extension files missing)."""
    found = compiled_modules()
    if not found:
        return "pure Python"
    return "compiled" if len(found) == len(COMPILED_MODULES) else "partly compiled"
