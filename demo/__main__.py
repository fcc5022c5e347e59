"""``make demo``: generate demo cases, run the appliance on them, write overlays and scores.

Cases (nothing from ../shared):
- 2DBox_Fundus_skimage_retina: scikit-image's bundled fundus photograph (public domain), a box
  around the optic disc (no ground truth).
- 2DBox_US_synthetic_disks: two bright disks on noise, ground truth known.
- 3DBox_CT_synthetic_phantom: an ellipsoidal Shepp-Logan head volume built from scikit-image's
  phantom; boxes on the upper grey ellipse and the right dark ellipse, ground truth known.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from app.routing import case_dims
from demo.overlay import montage_3d, overlay_2d, write_png
from demo.synthetic import disks_2d, phantom_3d, save_case

# Optic disc of skimage.data.retina() (1411 x 1411), XYXY pixels, read off the picture.
RETINA_OPTIC_DISC_BOX = np.array([[120, 500, 340, 760]])


def skimage_file(name: str) -> Path:
    import skimage  # dev dependency; its data files ship inside the wheel

    return Path(skimage.__file__).parent / "data" / name


def make_cases(folder: Path) -> None:
    retina = cv2.cvtColor(cv2.imread(str(skimage_file("retina.jpg"))), cv2.COLOR_BGR2RGB)
    save_case(folder / "2DBox_Fundus_skimage_retina.npz", retina, RETINA_OPTIC_DISC_BOX)
    save_case(folder / "2DBox_US_synthetic_disks.npz", *disks_2d())
    phantom = cv2.imread(str(skimage_file("phantom.png")), cv2.IMREAD_GRAYSCALE)
    save_case(folder / "3DBox_CT_synthetic_phantom.npz", *phantom_3d(phantom), spacing=(2.0, 1.0, 1.0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def report(inputs: Path, outputs: Path, pictures: Path) -> list[str]:
    lines = []
    for case in sorted(inputs.glob("*.npz")):
        with np.load(case) as c, np.load(outputs / case.name) as o:
            imgs, boxes, segs = c["imgs"], c["boxes"], o["segs"]
            gts = c["gts"] if "gts" in c.files else None
        if case_dims(case.name) == 3:
            pic = montage_3d(imgs, segs, boxes, gts)
        else:
            pic = overlay_2d(imgs, segs, boxes, gts)
        png = pictures / f"{case.stem}.png"
        write_png(png, pic)
        score = "no ground truth"
        if gts is not None:
            per_label = [dice(segs == i, gts == i) for i in range(1, len(boxes) + 1)]
            score = "Dice per object " + ", ".join(f"{d:.3f}" for d in per_label)
        lines.append(f"{case.name}: {len(boxes)} box(es), {score} -> {png}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo/out"))
    args = parser.parse_args(argv)
    inputs, outputs, pictures = args.out / "inputs", args.out / "outputs", args.out / "pictures"
    make_cases(inputs)
    t0 = time.perf_counter()
    rc = subprocess.run(
        [sys.executable, "-m", "app", "-v", "-i", str(inputs), "-o", str(outputs)], check=False
    ).returncode
    print(f"demo: appliance finished in {time.perf_counter() - t0:.1f} s (exit {rc})")
    if rc != 0:
        return rc
    for line in report(inputs, outputs, pictures):
        print(f"demo: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
