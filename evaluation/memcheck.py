"""``make memcheck``: peak memory of the appliance on the largest cases, and on a bomb.

Generates (documented as synthetic, for memory/timing only):
- ``3DBox_CT_memcheck``: 287 x 512 x 512 uint8 volume, 6 ellipsoids with long z extents
  (the challenge's heaviest 3D shape), 6 boxes;
- ``2DBox_Microscopy_memcheck``: 1024 x 1024 RGB with 1000 small blobs and 1000 boxes;
- the largest images the image budget admits (``app/npz_safe.py``): a 2D picture of
  18900 x 18900 and a 1024 x 1024 x 1024 volume, one box each;
- a folder holding a decompression bomb (``imgs`` of zeros claiming 60000 x 60000 x 3, 10.8 GB
  inflated, ~47 MB on disk) between two good cases: the bomb must be refused by name, the good
  cases written, exit code 1.
Each folder runs in a fresh ``python -m app`` process; the peak RSS of that process (the
kernel's high-water mark, ``ru_maxrss`` of the child) is reported against the 8 GB limit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app.npz_safe import DEFAULT_MAX_IMAGE_BYTES, human, processed_image_bytes
from app.routing import case_dims
from common.machine import describe
from common.process import cli_command
from common.reports import write_report
from common.synthetic import disks_2d, save_case, tight_boxes, write_bomb

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


def largest_2d(budget: int = DEFAULT_MAX_IMAGE_BYTES):
    """A grey square picture at the image budget (3 bytes a pixel), one box over a bright disc."""
    side = int((budget // 3) ** 0.5)
    img = np.full((side, side), 40, np.uint8)
    lo, hi = side // 4, 3 * side // 4
    img[lo:hi, lo:hi] = 200
    return img, np.array([[lo, lo, hi - 1, hi - 1]]), None


def largest_3d(budget: int = DEFAULT_MAX_IMAGE_BYTES):
    """A cubic uint8 volume at the image budget, one box over 5 middle slices."""
    side = round(budget ** (1 / 3))
    vol = np.full((side, side, side), 40, np.uint8)
    z, lo, hi = side // 2, side // 4, 3 * side // 4
    vol[z - 2 : z + 3, lo:hi, lo:hi] = 200
    return vol, np.array([[lo, lo, z - 2, hi - 1, hi - 1, z + 2]]), None


def run_case(folder: Path, out: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS GB, exit code) of one fresh app process on ``folder``."""
    peak_file = out.parent / "peak_kib.txt"
    cmd = cli_command("app", folder, out, "-v")
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(peak_file), *cmd], check=False).returncode
    wall = time.perf_counter() - t0
    return wall, int(peak_file.read_text()) / 1024**2, rc


def bomb_run(root: Path) -> str:
    """The bomb between two good cases: one table row (exit code, outputs, peak)."""
    folder, out = root / "bomb" / "in", root / "bomb" / "out"
    imgs, boxes, _ = disks_2d()
    save_case(folder / "2DBox_US_a_good.npz", imgs, boxes)
    write_bomb(folder / "2DBox_US_b_bomb.npz", (60000, 60000, 3))
    save_case(folder / "2DBox_US_c_good.npz", imgs, boxes)
    wall, peak, rc = run_case(folder, out)
    written = sorted(p.name for p in out.glob("*.npz"))
    return (
        f"| bomb `imgs` (60000, 60000, 3) uint8 = 10.8 GB inflated, between 2 good cases | exit {rc}; "
        f"written: {', '.join(written)} | {wall:.0f} | {peak:.2f} | {peak < LIMIT_GB} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.memcheck", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("reports/memcheck.md"))
    args = parser.parse_args(argv)
    rows = []
    cases = [
        ("2DBox_Microscopy_memcheck", many_boxes_2d),
        ("3DBox_CT_memcheck", big_volume),
        ("2DBox_Mammography_largest", largest_2d),
        ("3DBox_CT_largest", largest_3d),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, make in cases:
            imgs, boxes, _ = make()
            save_case(root / name / f"{name}.npz", imgs, boxes)
            cost = human(processed_image_bytes(imgs.shape, case_dims(name) or 2))
            del imgs
            wall, peak, rc = run_case(root / name, root / "out")
            ok = peak < LIMIT_GB
            rows.append(f"| {name} {cost} | {len(boxes)} boxes, exit {rc} | {wall:.0f} | {peak:.2f} | {ok} |")
            print(rows[-1], flush=True)
            shutil.rmtree(root / "out", ignore_errors=True)
        rows.append(bomb_run(root))
        print(rows[-1], flush=True)
    lines = [
        "# Memory check: largest realistic cases",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make memcheck`, {time.strftime('%Y-%m-%d')}. Synthetic cases (for memory and timing "
        "only). Peak RSS = high-water mark of the app process alone (`ru_maxrss` read by a small "
        "wrapper process, so the harness's own memory is not inherited).",
        "",
        f"Image budget: {human(DEFAULT_MAX_IMAGE_BYTES)} (`--max-image-bytes`, `SEG_MAX_IMAGE_BYTES`): an "
        "image bigger than that, as stored or as the app counts it (2D at 3 bytes a pixel), is refused "
        "from its npy header before anything is decompressed. `*_largest` are the largest images it admits.",
        "",
        "| case (image as the app counts it) | boxes, exit code | wall s | peak RSS GB | under 8 GB |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "The 3D embedding cache holds at most 256 embeddings of 4 MiB (1 GiB); see README, Conventions #11.",
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
