"""Rows 1 and 2 on a zero-cost stub, once per build: pure Python and compiled.

The same source, two builds (``hatch_build.py``): this benchmark compiles the
exit path's modules with Cython into a temporary copy of the package, then runs
the stub rows of ``bench_core`` and ``bench_async`` in a fresh process per
build, each importing its own copy, whichever build this process runs. It
needs Cython, setuptools, hatchling and a C compiler (``pip install -e
'.[dev]'``); without them the row says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = """
import asyncio, json, sys
import bench_async, bench_core
from nija_guard._build import build_name
runs = int(sys.argv[1])
print(json.dumps({
    "build": build_name(),
    "sync": bench_core._stub_exit_sync(runs),
    "async": asyncio.run(bench_async._stub_exit_async(runs)),
}))
"""


def _measure(tree: Path, runs: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(HERE)]))
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _CHILD, str(runs)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _trees(work: Path) -> dict[str, Path]:
    """Two copies of the package: as it is, and with its compiled modules beside it."""
    sys.path.insert(0, str(ROOT))
    try:
        import hatch_build
    finally:
        sys.path.remove(str(ROOT))
    trees = {}
    for name in ("pure Python", "compiled"):
        tree = work / name.replace(" ", "_")
        shutil.copytree(ROOT / "nija_guard", tree / "nija_guard")
        trees[name] = tree
    for path in hatch_build.compile_modules(ROOT, work / "build"):
        shutil.copy2(path, trees["compiled"] / "nija_guard" / path.name)
    return trees


def builds(quick: bool = False) -> dict[str, Any]:
    runs = 300 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="nija-guard-builds-") as work:
        try:
            trees = _trees(Path(work))
        except Exception as error:  # no Cython, no compiler: say so, measure nothing
            reason = f"cannot compile here: {error!r}"
            row = {"measure": "the wrapper's own CPU per exit, compiled build", "conditions": ""}
            row.update(guard="not measured", note=reason)
            return {"title": "Pure Python and compiled builds", "rows": [row], "data": {}}
        data = {name: _measure(tree, runs) for name, tree in trees.items()}
    for name, result in data.items():
        if result["build"] != name:  # the copy imported is not the build it should be
            raise RuntimeError(f"the {name} run imported a {result['build']} build")
    rows = []
    for mode in ("sync", "async"):
        pure, compiled = (data[name][mode] for name in ("pure Python", "compiled"))
        change = compiled["guard_only_us"] / pure["guard_only_us"] - 1
        verdict = f"{-change:.0%} less" if change < 0 else f"{change:.0%} more"
        rows.append(
            {
                "measure": f"the wrapper's own CPU per exit, {mode}, zero-cost exchange, "
                "pure Python build / compiled build",
                "conditions": f"as rows 1 and 2 (the stub exchange, {pure['runs_per_system']} "
                "sells per system, interleaved), one fresh process per build",
                "raw": "0 / 0",
                "baseline": f"{pure['baseline_only_us']:.1f} µs / "
                f"{compiled['baseline_only_us']:.1f} µs",
                "guard": f"{pure['guard_only_us']:.1f} µs / {compiled['guard_only_us']:.1f} µs",
                "note": f"compiled: {verdict} of the guard's own CPU; the same source "
                "compiled with Cython (hatch_build.py), what a wheel installs (editable "
                "installs run pure Python); the gain depends on the CPU",
            }
        )
    return {"title": "Pure Python and compiled builds", "rows": rows, "data": data}
