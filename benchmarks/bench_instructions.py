"""Row 1 in machine instructions: what an exit executes, the same on every machine.

Times depend on the CPU (docs/performance.md: one build ran a third faster on one
machine and a fifth slower on another), instructions executed barely do. This
benchmark runs the zero-cost stub rows of ``bench_core`` once more, in a child
process under valgrind's callgrind, and counts the instructions of each system's
sells only: collection is switched on around each system's loop
(``callgrind_control``) and off for imports, set-up and warm-up. The guard's own
count is the same subtraction as the timed rows: guarded sell minus the raw sell
minus one ``fetch_balance``. It measures whichever build this process imports.

Needs valgrind (``apt install valgrind``); without it the row says so. About a
minute: valgrind runs Python some fifty times slower.
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

# The child: set up every system, warm each, then count each system's sells alone.
_CHILD = """
import json, os, subprocess, sys
from _common import close, stub_clients
from nija_guard._build import build_name

runs, out, callgrind_control = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def control(*args):
    subprocess.run([callgrind_control, *args, str(os.getpid())], check=True,
                   capture_output=True)

clients = stub_clients()
for name, client in clients.items():
    if name != "fetch_balance":
        client.load_markets()
sells = {
    name: (lambda c=c: c.create_market_sell_order("S0/USDT", 0.01))
    for name, c in clients.items() if name != "fetch_balance"
}
sells["fetch_balance"] = clients["fetch_balance"]
for sell in sells.values():
    for _ in range(300):
        sell()
for name, sell in sells.items():
    control("--zero")
    control("--instr=on")
    for _ in range(runs):
        sell()
    control("--instr=off")
    control("--dump=" + name)
close("guard", clients["guard"])
with open(out, "w") as f:
    json.dump({"build": build_name()}, f)
"""


def _totals(directory: Path) -> dict[str, int]:
    """Instructions per dump, by the name given to ``--dump`` ("desc: Trigger: dump NAME")."""
    totals: dict[str, int] = {}
    for path in directory.glob("callgrind.out*"):
        name, total = None, None
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("desc: Trigger: dump "):
                    name = line.removeprefix("desc: Trigger: dump ").strip()
                elif line.startswith("totals:"):
                    total = int(line.split()[1])
        if name is not None and total is not None:
            totals[name] = total
    return totals


def instructions(quick: bool = False) -> dict[str, Any]:
    """Row 1's stub row in machine instructions per exit (callgrind): the same on any machine."""
    runs = 200 if quick else 1000
    title = "Machine instructions per exit"
    tools = {tool: shutil.which(tool) for tool in ("valgrind", "callgrind_control")}
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        row = {
            "measure": "the wrapper's own instructions per exit, sync, zero-cost exchange",
            "conditions": "",
            "raw": "",
            "baseline": "",
            "guard": "not measured",
            "note": f"needs valgrind ({', '.join(missing)} not found)",
        }
        return {"title": title, "rows": [row], "data": {}}
    with tempfile.TemporaryDirectory(prefix="nija-guard-callgrind-") as work:
        out = Path(work) / "child.json"
        import nija_guard  # the child imports the same copy of the package as this process

        package_root = Path(nija_guard.__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(package_root)]))
        done = subprocess.run(  # noqa: S603 - valgrind running our own interpreter and script
            [
                str(tools["valgrind"]),
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={work}/callgrind.out",
                sys.executable,
                "-c",
                _CHILD,
                str(runs),
                str(out),
                str(tools["callgrind_control"]),
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the callgrind run failed: {done.stderr[-2000:]}")
        build = json.loads(out.read_text())["build"]
        totals = _totals(Path(work))
    per_exit = {name: totals[name] / runs for name in ("raw", "baseline", "guard", "fetch_balance")}
    own = {
        name: per_exit[name] - per_exit["raw"] - per_exit["fetch_balance"]
        for name in ("baseline", "guard")
    }
    row = {
        "measure": "the wrapper's own instructions per exit, sync, zero-cost exchange",
        "conditions": f"as row 1's stub row, {runs} sells per system counted by callgrind "
        f"(valgrind), {build} build; the same subtraction as the timed rows",
        "raw": "0",
        "baseline": f"{own['baseline']:,.0f}",
        "guard": f"{own['guard']:,.0f}",
        "note": f"per sell: raw {per_exit['raw']:,.0f}, fetch_balance "
        f"{per_exit['fetch_balance']:,.0f}, baseline {per_exit['baseline']:,.0f}, guard "
        f"{per_exit['guard']:,.0f}; instructions, not time: the same on every machine, "
        "so comparable across runs of different machines",
    }
    return {
        "title": title,
        "rows": [row],
        "data": {"runs": runs, "build": build, "per_sell": per_exit, "own": own},
    }
