"""``make memcheck``: peak memory of the appliance on the largest realistic cases.

Generates (documented as synthetic, for memory/timing only):
- ``3DBox_CT_memcheck``: 287 x 512 x 512 uint8 volume, 6 ellipsoids with long z extents
  (the challenge's heaviest 3D shape), 6 boxes;
- ``2DBox_Microscopy_memcheck``: 1024 x 1024 RGB with 1000 small blobs and 1000 boxes.
Each runs in a fresh ``python -m app`` process; the peak RSS of that process (the kernel's
high-water mark, ``ru_maxrss`` of the child) is reported against the 8 GB container limit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from demo.synthetic import save_case, tight_boxes
from evaluation.machine import describe, write_report

LIMIT_GB = 8.0


def big_volume(shape: tuple[int, int, int] = (287, 512, 512), seed: int = 0):
    rng = np.random.default_rng(seed)
    d, h, w = shape
    gts = np.zeros(shape, np.uint16)
    zz, yy, xx = np.ogrid[0:d, 0:h, 0:w]
    centres = [
        (0.5, 0.3, 0.3),
        (0.45, 0.3, 0.7),
        (0.55, 0.7, 0.3),
        (0.5, 0.7, 0.7),
        (0.4, 0.5, 0.5),
        (0.6, 0.5, 0.15),
    ]
    for label, (cz, cy, cx) in enumerate(centres, start=1):
        dz, dy, dx = (zz - cz * d) / (0.35 * d), (yy - cy * h) / (0.08 * h), (xx - cx * w) / (0.08 * w)
        inside = dz**2 + dy**2 + dx**2 <= 1
        gts[inside] = label
    vol = np.clip(rng.normal(60, 15, shape) + 120 * (gts > 0), 0, 255).astype(np.uint8)
    return vol, tight_boxes(gts), None


def many_boxes_2d(n: int = 1000, size: int = 1024, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(40, 10, (size, size)), 0, 255).astype(np.uint8)
    gts = np.zeros((size, size), np.uint16)
    side = int(np.ceil(np.sqrt(n)))
    step = size // side
    for i in range(n):
        cy, cx = (i // side) * step + step // 2, (i % side) * step + step // 2
        r = step // 4
        gts[cy - r : cy + r, cx - r : cx + r] = i + 1
    img[gts > 0] = 200
    return np.repeat(img[:, :, None], 3, axis=2), tight_boxes(gts), None


# Runs the command as its child and writes that child's peak RSS (KiB) to argv[1]. Started from
# this (large) harness, its own high-water mark inherits ours, but its child's starts from the
# small wrapper, so the figure is the app's alone.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


def run_case(folder: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GB) of one fresh app process on ``folder``."""
    peak_file = out.parent / "peak_kib.txt"
    cmd = [sys.executable, "-m", "app", "-v", "-i", str(folder), "-o", str(out)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(peak_file), *cmd], check=True)
    wall = time.perf_counter() - t0
    return wall, int(peak_file.read_text()) / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.memcheck", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("reports/memcheck.md"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, make in [("2DBox_Microscopy_memcheck", many_boxes_2d), ("3DBox_CT_memcheck", big_volume)]:
            imgs, boxes, _ = make()
            save_case(root / name / f"{name}.npz", imgs, boxes)
            wall, peak = run_case(root / name, root / "out")
            row = f"| {name} | {imgs.shape} | {len(boxes)} | {wall:.0f} | {peak:.2f} | {peak < LIMIT_GB} |"
            rows.append(row)
            print(rows[-1], flush=True)
    lines = [
        "# Memory check: largest realistic cases",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make memcheck`, {time.strftime('%Y-%m-%d')}. Synthetic cases (for memory and timing "
        "only). Peak RSS = high-water mark of the app process alone (`ru_maxrss` read by a small "
        "wrapper process, so the harness's own memory is not inherited).",
        "",
        "| case | image shape | boxes | wall s | peak RSS GB | under 8 GB |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "The 3D embedding cache holds at most 256 embeddings of 4 MiB (1 GiB); see README, Conventions #11.",
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
