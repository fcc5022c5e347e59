"""``make demo``: generate demo cases, run the appliance on them, write overlays and scores.

Cases (nothing from ../shared):
- 2DBox_Fundus_skimage_retina: scikit-image's bundled fundus photograph (public domain), a box
  around the optic disc (no ground truth).
- 2DBox_US_synthetic_disks: two bright disks on noise, ground truth known.
- 3DBox_CT_synthetic_phantom: an ellipsoidal Shepp-Logan head volume built from scikit-image's
  phantom; boxes on the upper grey ellipse and the right dark ellipse, ground truth known.
- phantom_mm.nii.gz: the same phantom as a NIfTI volume on a flipped, anisotropic grid
  (PHANTOM_AFFINE) with its boxes in LPS millimetres (``phantom_mm.boxes.json``, labels 10 and
  20): the clinical path (README: Clinical formats); its label map must equal the npz case's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from app.routing import case_dims
from common.overlay import montage_3d, overlay_2d, write_png
from common.synthetic import box_sidecar, disks_2d, phantom_3d, save_case, write_nifti

# NIfTI demo grid: voxel (x, y, z) -> RAS mm, x and y flipped, 1 x 1 x 2 mm, off origin.
PHANTOM_AFFINE = np.array([[-1.0, 0, 0, 90.0], [0, -1.0, 0, 110.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
PHANTOM_LABELS = [10, 20]

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
    imgs, boxes, gts = phantom_3d(phantom)
    save_case(folder / "3DBox_CT_synthetic_phantom.npz", imgs, boxes, gts, spacing=(2.0, 1.0, 1.0))
    write_nifti(folder / "phantom_mm.nii.gz", imgs, PHANTOM_AFFINE)
    sidecar = box_sidecar(boxes, PHANTOM_LABELS, "LPS", PHANTOM_AFFINE, modality="CT")
    (folder / "phantom_mm.boxes.json").write_text(json.dumps(sidecar, indent=1))


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
    return lines + [nifti_report(inputs, outputs, pictures)]


def nifti_report(inputs: Path, outputs: Path, pictures: Path) -> str:
    """The NIfTI phantom: its label map back in the app's order, pictured, and compared with
    the npz phantom's (the same voxels and boxes, given in LPS mm on a flipped grid)."""
    import nibabel as nib  # the clinical formats' dependency (requirements/clinical.txt)

    out = nib.load(outputs / "phantom_mm.nii.gz")
    labels = np.asanyarray(out.dataobj).T  # file (X, Y, Z) -> app (Z, Y, X)
    with (
        np.load(inputs / "3DBox_CT_synthetic_phantom.npz") as c,
        np.load(outputs / "3DBox_CT_synthetic_phantom.npz") as o,
    ):
        imgs, boxes, gts, segs = c["imgs"], c["boxes"], c["gts"], o["segs"]
    twin = np.array([0, *PHANTOM_LABELS], dtype=np.uint16)[segs]
    png = pictures / "phantom_mm.png"
    lut = {label: i for i, label in enumerate([0, *PHANTOM_LABELS])}
    write_png(png, montage_3d(imgs, np.vectorize(lut.get)(labels).astype(np.uint16), boxes, gts))
    same = bool(np.array_equal(labels, twin))
    grid = bool(np.array_equal(out.affine, PHANTOM_AFFINE))
    return (
        f"phantom_mm.nii.gz: boxes in LPS mm, labels {PHANTOM_LABELS}; label map equals the npz "
        f"phantom's: {same}; output on the input grid: {grid} -> {png}"
    )


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
