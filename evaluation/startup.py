"""``make startup``: process start-up and one small 2D case, cold vs warm compiled-model cache.

Each run is a fresh ``python -m app`` process on one generated 2D case (as the challenge runs
one container per case), timed from outside. Modes, interleaved run by run so that machine
drift hits all of them: ``cold`` (empty cache folder: compile and write blobs), ``warm`` (the
blobs from an earlier run), ``none`` (no cache), and ``warm, no bytecode``: the warm run with
no compiled ``.pyc`` to read (an empty ``-X pycache_prefix`` and ``PYTHONDONTWRITEBYTECODE``),
which is what every container run paid while the image was built with ``pip --no-compile`` and
no ``compileall``; ``warm, full teardown``: the warm run ending through the interpreter's normal
exit instead of ``app/__main__.py``'s flush-and-exit (what every run paid before it).
``--against DIR`` adds ``warm, DIR``: the same warm run from another checkout (e.g. ``git
worktree add /tmp/old REV``, with its models), so a change's effect on the per-case start-up is
measured side by side. Where the warm run's time goes: the same case through
``evaluation.startup_phases`` (the app's steps, timed one by one in a fresh process; the
interpreter's start and exit are the wall time less their sum). Reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.machine import describe
from common.process import cli_command, timed_process
from common.reports import write_report
from common.synthetic import disks_2d, save_case
from evaluation.startup_phases import PHASES

NO_PYC = "warm, no bytecode"
TEARDOWN = "warm, full teardown"
# ``python -m app`` as it was before app/__main__.py skipped the interpreter's teardown.
WITH_TEARDOWN = (
    "import sys; from app.__main__ import leave_out_model_converter; leave_out_model_converter(); "
    "from app.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
START = "interpreter start and exit"  # wall time of the phases child less the sum of its phases


def run_once(
    inputs: Path,
    outputs: Path,
    cache: str,
    tree: Path | None = None,
    pycache: Path | None = None,
    teardown: bool = False,
) -> float:
    """Wall seconds of one ``python -m app`` process (from the checkout ``tree``, default this one;
    ``pycache``: read and write no bytecode but in that, empty, folder; ``teardown``: end through
    the interpreter's normal exit)."""
    cmd = cli_command("app", inputs, outputs, "-q", "--cache-dir", cache)
    if teardown:
        cmd[1:3] = ["-c", WITH_TEARDOWN]
    env = None
    if pycache is not None:
        shutil.rmtree(pycache, ignore_errors=True)
        cmd[1:1] = ["-X", f"pycache_prefix={pycache}"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = timed_process(cmd, env=env, cwd=tree)
    if not run.ok:
        msg = f"python -m app exited {run.returncode} (checkout {tree or '.'})"
        raise RuntimeError(msg)
    return run.seconds


def phases_once(case: Path, outputs: Path, cache: Path) -> dict[str, float]:
    """Seconds per phase of one fresh process (``evaluation.startup_phases``), the interpreter's
    start first."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "evaluation.startup_phases", str(case), str(outputs), str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    phases = json.loads(done.stdout)
    return {START: wall - sum(phases.values()), **phases}


Seconds = dict[str, list[float]]  # name -> one value per repeat


def folder_mb(folder: Path) -> float:
    """Size of the files in ``folder`` and below (the compiled-model cache: blobs in the app's
    settings folder, and those ``startup_phases`` writes at the top), MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def measure(repeats: int, against: Path | None = None) -> tuple[Seconds, Seconds, dict[str, float]]:
    """(wall seconds per mode, seconds per phase of the warm run), ``repeats`` of each, and the
    warm cache's size in MB per checkout (``this``, and ``against``'s when given)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_case(root / "in" / "2DBox_US_startup.npz", *disks_2d())
        plain = save_case(root / "phases" / "2DBox_XRay_startup.npz", *disks_2d())  # no specialist
        warm, other = root / "warm_cache", root / "other_cache"
        run_once(root / "in", root / "out", str(warm))  # populate
        times: dict[str, list[float]] = {"cold": [], "warm": [], "none": [], NO_PYC: [], TEARDOWN: []}
        phases: dict[str, list[float]] = {START: [], **{name: [] for name in PHASES}}
        if against is not None:
            run_once(root / "in", root / "out", str(other), against)
            times[f"warm, {against}"] = []
        for i in range(repeats):
            times["cold"].append(run_once(root / "in", root / "out", str(root / f"cold{i}")))
            times["warm"].append(run_once(root / "in", root / "out", str(warm)))
            times["none"].append(run_once(root / "in", root / "out", "none"))
            times[NO_PYC].append(run_once(root / "in", root / "out", str(warm), pycache=root / "pyc"))
            times[TEARDOWN].append(run_once(root / "in", root / "out", str(warm), teardown=True))
            if against is not None:
                times[f"warm, {against}"].append(run_once(root / "in", root / "out", str(other), against))
            for name, seconds in phases_once(plain, root / "out", warm).items():
                phases[name].append(seconds)
        sizes = {"this": folder_mb(warm), **({str(against): folder_mb(other)} if against is not None else {})}
    return times, phases, sizes


def phase_lines(phases: dict[str, list[float]]) -> list[str]:
    """Markdown table: median seconds and share of each phase of the warm run."""
    med = {name: statistics.median(v) for name, v in phases.items()}
    total = sum(med.values())
    what = {START: "python's own start and exit: the wall time less the phases", **PHASES}
    return [
        "| phase | what | median s | share |",
        "|---|---|---|---|",
        *(f"| {n} | {what[n]} | {m:.3f} | {100 * m / total:.0f}% |" for n, m in med.items()),
        f"| all | sum of the medians | {total:.3f} | |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.startup", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("reports/startup.md"))
    parser.add_argument("--against", type=Path, default=None, help="another checkout, timed warm alongside")
    args = parser.parse_args(argv)
    times, phases, sizes = measure(args.repeats, args.against)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# Start-up: one 2D case as a fresh process",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make startup` (`python -m evaluation.startup --repeats {args.repeats}"
        f"{f' --against {args.against}' if args.against else ''}`), "
        f"{time.strftime('%Y-%m-%d')}. Case: generated 320x400 RGB, 2 boxes. Wall seconds per process.",
        "",
        "| compiled-model cache | median s | min | max |",
        "|---|---|---|---|",
        *(f"| {k} | {med[k]:.2f} | {min(v):.2f} | {max(v):.2f} |" for k, v in times.items()),
        "",
        f"Warm cache saves {med['cold'] - med['warm']:.2f} s per case against a cold one "
        f"({med['none'] - med['warm']:.2f} s against no cache). Compiled bytecode saves "
        f"{med[NO_PYC] - med['warm']:.2f} s per process (the Dockerfile runs `compileall` for this). "
        f"Skipping the interpreter's teardown saves {med[TEARDOWN] - med['warm']:.2f} s per process.",
        "",
        "## Where the warm run's time goes",
        "",
        "The same image and boxes named as an X-ray (a route with no specialist), warm cache, through "
        "`evaluation.startup_phases` (the app's steps for a 2D case on LiteMedSAM, timed one by one "
        "inside a fresh process), interleaved with the runs above:",
        "",
        *phase_lines(phases),
    ]
    if args.against is not None:
        other = med[f"warm, {args.against}"]
        lines += [
            "",
            f"This checkout vs `{args.against}` (warm, same case, interleaved): {med['warm']:.3f} s vs "
            f"{other:.3f} s per process ({med['warm'] - other:+.3f} s). The warm cache folders after "
            f"the runs (the blobs of every graph the case loaded): {sizes['this']:.1f} MB vs "
            f"{sizes[str(args.against)]:.1f} MB.",
        ]
    else:
        lines += ["", f"The warm cache folder after the runs: {sizes['this']:.1f} MB."]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
