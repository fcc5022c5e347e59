"""Run the appliance or the baseline oracle over a folder, as one process each."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_cli(module: str, data: Path, out: Path, log: Path) -> float:
    """``python -m <module> -i data -o out``; stdout+stderr to ``log``; returns wall seconds."""
    out.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        subprocess.run(
            [sys.executable, "-m", module, "-i", str(data), "-o", str(out)], stderr=fh, stdout=fh, check=False
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
