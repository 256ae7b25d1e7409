"""Wheel build hook: the exit path's modules compiled with Cython.

The compiled modules are the same ``.py`` files, nothing hand-written in C or
Cython: one source, two builds. A wheel (``pip install .``, ``pip wheel .``)
carries the compiled build unless told not to; editable installs run the
pure-Python source, the reference that the suite runs first. Compiled, an exit
executes about as many machine instructions as interpreted (callgrind: 350k
against 361k), so the gain depends on how well a CPU runs them: the guard's own
work per exit took a third less time on two of the three machines measured
(27 µs against 42 µs) and a fifth more on the third (docs/performance.md).
Python imports an extension module before a ``.py`` of the same name, so a
compiled wheel carries both and the compiled one wins.

Environment, read when a wheel is built:

- nothing set: compile the exit path; if compiling fails (no C compiler or
  Python headers; no Cython in a ``--no-build-isolation`` build), warn and build
  the pure-Python wheel, which works the same. An isolated build (pip's default)
  asks for Cython first: where it cannot be downloaded, set
  ``NIJA_GUARD_COMPILE=0``.
- ``NIJA_GUARD_COMPILE=0`` (or ``false``, ``no``, ``off``): build the pure-Python
  wheel (to step through the guard in a debugger, offline, or on a CPU where
  the compiled build measured slower).
- ``NIJA_GUARD_REQUIRE_COMPILED=1``: compile, and fail the build if compiling
  fails (CI sets it).

Editable installs are never compiled (an extension module left beside a source
file would shadow every later edit of it), and do not ask for Cython.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _compiled_modules(source_root: Path) -> tuple[str, ...]:
    """``nija_guard._build.COMPILED_MODULES``, read without importing the package
    (whose dependencies the build environment does not have)."""
    path = source_root / "nija_guard" / "_build.py"
    spec = importlib.util.spec_from_file_location("_nija_guard_build", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot read {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.COMPILED_MODULES)


# Python semantics, exactly: annotations are documentation (Cython would otherwise
# turn a ``float`` argument into a C double, and check ``dict`` arguments' types).
DIRECTIVES = {"language_level": 3, "binding": True, "annotation_typing": False}


def compile_modules(source_root: Path, build_dir: Path, *, jobs: int | None = None) -> list[Path]:
    """Compile the exit path's modules (``nija_guard/_build.py``) into ``build_dir``.

    Returns the extension files, laid out as ``build_dir/nija_guard/<name><suffix>``.
    Nothing is written into ``source_root``. Raises if Cython or a C compiler fails.
    """
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    package = source_root / "nija_guard"
    names = _compiled_modules(source_root)
    # No debug symbols (gcc and clang): they made the wheel ten times its size.
    flags = [] if sys.platform == "win32" else ["-g0"]
    extensions = [
        Extension(f"nija_guard.{name}", [str(package / f"{name}.py")], extra_compile_args=flags)
        for name in names
    ]
    jobs = jobs or os.cpu_count() or 1
    modules = cythonize(
        extensions,
        build_dir=str(build_dir / "c"),
        compiler_directives=DIRECTIVES,
        nthreads=jobs,
        quiet=True,
    )
    dist = Distribution({"ext_modules": modules, "script_name": "hatch_build.py"})
    command: Any = dist.get_command_obj("build_ext")
    command.build_lib = str(build_dir / "lib")
    command.build_temp = str(build_dir / "temp")
    command.parallel = jobs
    command.ensure_finalized()
    command.run()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = [build_dir / "lib" / "nija_guard" / f"{name}{suffix}" for name in names]
    missing = [str(path) for path in built if not path.exists()]
    if missing:
        raise RuntimeError(f"compiled modules missing after the build: {missing}")
    return built


_NO = frozenset({"0", "false", "no", "off"})


def _compile_requested() -> bool:
    """Compile unless ``NIJA_GUARD_COMPILE`` says no; ``NIJA_GUARD_REQUIRE_COMPILED=1`` wins."""
    if os.environ.get("NIJA_GUARD_REQUIRE_COMPILED") == "1":
        return True
    return os.environ.get("NIJA_GUARD_COMPILE", "").strip().lower() not in _NO


def _asked_for_an_editable_build() -> bool:
    """Whether hatchling is answering PEP 660's ``get_requires_for_build_editable``.

    Build hooks are asked for their dependencies without being told which build
    they are for; an editable install compiles nothing, so it must not download
    Cython. The question comes from that one function of ``hatchling.build``.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "get_requires_for_build_editable" and "hatchling" in code.co_filename:
            return True
        frame = frame.f_back
    return False


class CompiledModulesHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        # Only a compiled build needs Cython: a pure or editable one downloads nothing more.
        if not _compile_requested() or _asked_for_an_editable_build():
            return []
        return ["Cython>=3.1", "setuptools>=70"]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        if not _compile_requested():
            return  # NIJA_GUARD_COMPILE=0: a pure-Python wheel
        required = os.environ.get("NIJA_GUARD_REQUIRE_COMPILED") == "1"
        self._build_dir = Path(tempfile.mkdtemp(prefix="nija-guard-build-"))
        try:
            built = compile_modules(Path(self.root), self._build_dir)
        except Exception as error:
            if required:
                raise
            warnings.warn(
                f"nija-guard: compiling the exit path failed ({error!r}); "
                "building the pure-Python wheel, which works the same",
                stacklevel=1,
            )
            print(f"nija-guard: pure-Python wheel ({error!r})", file=sys.stderr)
            return
        for path in built:
            build_data["force_include"][str(path)] = f"nija_guard/{path.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        build_dir = getattr(self, "_build_dir", None)
        if build_dir is not None:
            shutil.rmtree(build_dir, ignore_errors=True)
