"""Run the appliance or the baseline oracle over a folder of cases, resumably.

Outputs go to ``WORK/<system>/``; a system is run only on the cases whose output is missing,
so an interrupted corpus run resumes, and ``make eval`` and ``make agreement`` share one set of
runs (default ``build/runs``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DEFAULT_WORK = Path("build/runs")
# Flags per system for accuracy runs. The oracle reuses slice embeddings across the boxes of a
# 3D case (identical masks, a fraction of the time); `make bench` times the original instead.
SYSTEM_ARGS: dict[str, list[str]] = {"app": [], "baseline": ["--reuse-embeddings"]}


def run_cli(module: str, data: Path, out: Path, log: Path, extra: list[str] | None = None) -> float:
    """``python -m <module> -i data -o out [extra]``; stdout+stderr appended to ``log``; wall s."""
    out.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as fh:
        subprocess.run(
            [sys.executable, "-m", module, "-i", str(data), "-o", str(out), *(extra or [])],
            stderr=fh,
            stdout=fh,
            check=False,
        )
    return time.perf_counter() - t0


def link_cases(names: list[str], data: Path, folder: Path) -> Path:
    """A folder of symlinks to the chosen cases (so a CLI can run on a subset)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npz"):
        old.unlink()
    for name in names:
        (folder / name).symlink_to((data / name).resolve())
    return folder


def run_missing(
    system: str, names: list[str], data: Path, work: Path, extra: list[str] | None = None
) -> tuple[int, float]:
    """Run ``system`` on the cases of ``names`` without an output yet: (cases run, seconds).
    ``extra``: more CLI flags (e.g. ``--models`` for candidate models)."""
    out = work / system
    todo = [n for n in names if not (out / n).is_file()]
    if not todo:
        return 0, 0.0
    inputs = link_cases(todo, data, work / f"{system}_inputs")
    log = work / f"{system}.log"
    return len(todo), run_cli(system, inputs, out, log, [*SYSTEM_ARGS.get(system, []), *(extra or [])])
