"""``make startup``: process start-up and one small 2D case, cold vs warm compiled-model cache.

Each run is a fresh ``python -m app`` process on one generated 2D case (as the challenge runs
one container per case), timed from outside. Modes, interleaved run by run so that machine
drift hits all of them: ``cold`` (empty cache folder: compile and write blobs), ``warm`` (the
blobs from an earlier run), ``none`` (no cache). Reports medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo.synthetic import disks_2d, save_case
from evaluation.machine import describe, write_report


def run_once(inputs: Path, outputs: Path, cache: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "app", "-q", "-i", str(inputs), "-o", str(outputs), "--cache-dir", cache],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def measure(repeats: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_case(root / "in" / "2DBox_US_startup.npz", *disks_2d())
        warm = root / "warm_cache"
        run_once(root / "in", root / "out", str(warm))  # populate
        times: dict[str, list[float]] = {"cold": [], "warm": [], "none": []}
        for i in range(repeats):
            times["cold"].append(run_once(root / "in", root / "out", str(root / f"cold{i}")))
            times["warm"].append(run_once(root / "in", root / "out", str(warm)))
            times["none"].append(run_once(root / "in", root / "out", "none"))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.startup", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("reports/startup.md"))
    args = parser.parse_args(argv)
    times = measure(args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "# Start-up: one 2D case as a fresh process",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make startup` (`python -m evaluation.startup --repeats {args.repeats}`), "
        f"{time.strftime('%Y-%m-%d')}. Case: generated 320x400 RGB, 2 boxes. Wall seconds per process.",
        "",
        "| compiled-model cache | median s | min | max |",
        "|---|---|---|---|",
        *(f"| {k} | {med[k]:.2f} | {min(v):.2f} | {max(v):.2f} |" for k, v in times.items()),
        "",
        f"Warm cache saves {med['cold'] - med['warm']:.2f} s per case against a cold one "
        f"({med['none'] - med['warm']:.2f} s against no cache).",
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
