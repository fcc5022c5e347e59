"""``python -m baseline -i INPUT_DIR -o OUTPUT_DIR``: the challenge baseline on every npz."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from baseline.litemedsam import load_baseline, segment_2d, segment_3d
from modeling.architectures.sam import BoxSAM


def predict_file(model: BoxSAM, path: Path, out_dir: Path, reuse_embeddings: bool = False) -> None:
    with np.load(path, allow_pickle=False) as data:
        image, boxes = data["imgs"], data["boxes"]
    # The baseline routes on the file name only: 3D iff it starts with "3D".
    if path.name.startswith("3D"):
        segs = segment_3d(model, image, boxes, reuse_embeddings)
    else:
        segs = segment_2d(model, image, boxes)
    tmp = out_dir / f".{path.name}.tmp.npz"  # atomic: resumable runs trust any file present
    np.savez_compressed(tmp, segs=segs)
    tmp.replace(out_dir / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m baseline", description=__doc__)
    parser.add_argument("-i", "--input", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument(
        "--reuse-embeddings",
        action="store_true",
        help="3D: encode each slice once per case instead of once per box (same masks, faster)",
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    model = load_baseline()
    failed = 0
    for path in sorted(args.input.glob("*.npz")):
        t0 = time.perf_counter()
        try:
            predict_file(model, path, args.output, args.reuse_embeddings)
        except (ValueError, KeyError, IndexError) as exc:
            failed += 1
            print(f"baseline: {path.name} failed: {exc}", file=sys.stderr)
            continue
        print(f"baseline: {path.name} {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
