"""``make derived-slices``: 2D validation cases cut from 3D validation volumes.

A thin 2D route cannot be gated: CT 2D has 3 cases over both corpora, 2 of them validation, and
every gate needs at least 3 on a route (``train/gate.py``). A slice of a CT volume, its objects
boxed, is a CT 2D case of the volume's source (the challenge's CT 2D cases are such slices, from
other sources). So each validation volume of the modalities asked for gives a few 2D cases:

- which slices: the middle half of the slices holding an object (a 2D case shows its objects in
  cross-section, not their tips), ``per_volume`` of them evenly spread;
- the case: ``imgs`` the slice repeated to 3 channels (uint8, as the volume; the 2D cases are
  RGB), ``gts`` the objects present relabelled 1..n in label order (uint16), ``boxes`` their
  tight XYXY boxes (the public 2D cases' boxes are tight: checked on every CT 2D case);
- the name: ``2DBox_<modality>_<source>-slices_<rest of the volume's name>_z<slice>.npz``, so the
  source column says the cases are derived (``IBSISTS-slices``) and the split's unit (a patient,
  ``evaluation/split.py``) stays the volume's.

Only volumes in the validation split are cut (never a training volume: the specialists and the
student trained on those). ``derived.csv`` in the output folder names each case's volume and
slice; ``derived_val_cases`` checks a folder against the split before a gate uses it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from app.routing import case_dims, modality, source_tag
from common.paths import BUILD, SPLIT_CSV
from common.reports import write_csv
from evaluation.datasets import DEFAULT_DATA, case_files
from evaluation.split import read_split
from train.samples import evenly_spread

DERIVED_DIR = BUILD / "derived" / "slices"
INDEX_NAME = "derived.csv"
INDEX_COLUMNS = ["case", "volume", "slice", "objects"]
SOURCE_SUFFIX = "-slices"  # appended to the volume's source tag
DEFAULT_MODALITIES = ("CT",)  # the 3D modalities whose 2D route has too few cases of its own
PER_VOLUME = 3


def middle_slices(gts: np.ndarray, per_volume: int) -> list[int]:
    """(D, H, W) labels -> up to ``per_volume`` slice indices, evenly spread over the middle half
    of the slices holding any object (all of them when there are fewer than 4)."""
    occupied = np.flatnonzero(gts.reshape(gts.shape[0], -1).any(axis=1))
    quarter = len(occupied) // 4
    return evenly_spread(occupied[quarter : len(occupied) - quarter] if quarter else occupied, per_volume)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool, not empty -> (4,) int64 XYXY pixel box, inclusive, x = column."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.int64)


def slice_case(image: np.ndarray, gts: np.ndarray, z: int) -> dict[str, np.ndarray]:
    """Slice ``z`` of a (D, H, W) uint8 volume and its (D, H, W) labels -> a 2D case: ``imgs``
    (H, W, 3) uint8, ``gts`` (H, W) uint16 with the present objects relabelled 1..n in label
    order, ``boxes`` (n, 4) int64 tight XYXY (box i <-> label i + 1)."""
    labels = gts[z]
    present = [int(v) for v in np.unique(labels) if v != 0]
    out = np.zeros(labels.shape, dtype=np.uint16)
    boxes = np.zeros((len(present), 4), dtype=np.int64)
    for new, old in enumerate(present, start=1):
        mask = labels == old
        out[mask] = new
        boxes[new - 1] = tight_box(mask)
    return {"imgs": np.repeat(image[z][..., None], 3, axis=2), "gts": out, "boxes": boxes}


def derived_source(source: str) -> str:
    """The source tag of the slices cut from ``source``'s volumes: ``IBSISTS`` -> ``IBSISTS-slices``."""
    return source + SOURCE_SUFFIX


def derived_name(volume: str, z: int) -> str:
    """``3DBox_CT_IBSISTS_STS_003.npz``, 12 -> ``2DBox_CT_IBSISTS-slices_STS_003_z012.npz``."""
    stem = Path(volume).stem
    parts = stem.split("_")
    if len(parts) < 4 or case_dims(volume) != 3:
        msg = f"{volume}: not a 3DBox_<modality>_<source>_<id> case name"
        raise ValueError(msg)
    parts[0], parts[2] = "2DBox", derived_source(parts[2])
    return "_".join(parts) + f"_z{z:03d}.npz"


def write_case(path: Path, case: dict[str, np.ndarray]) -> None:
    """``case`` as an npz at ``path``, atomically (a temp file renamed)."""
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **case)
    tmp.replace(path)


def derive_volume(path: Path, out: Path, per_volume: int) -> list[dict[str, object]]:
    """Write the 2D cases of one volume into ``out``: their index rows (INDEX_COLUMNS)."""
    with np.load(path) as data:
        image, gts = data["imgs"], data["gts"]
    if image.ndim != 3 or gts.shape != image.shape:
        shapes = f"imgs {image.shape}, gts {gts.shape}"
        msg = f"{path.name}: expected a grey (D, H, W) volume and labels of its shape, got {shapes}"
        raise ValueError(msg)
    rows = []
    for z in middle_slices(gts, per_volume):
        case = slice_case(image, gts, z)
        name = derived_name(path.name, z)
        write_case(out / name, case)
        rows.append({"case": name, "volume": path.name, "slice": z, "objects": len(case["boxes"])})
    return rows


def volumes_to_cut(files: dict[str, Path], split: dict[str, str], modalities: tuple[str, ...]) -> list[Path]:
    """The validation 3D cases of ``modalities`` among ``files``, by name."""
    return [
        path
        for name, path in sorted(files.items())
        if case_dims(name) == 3 and modality(name) in modalities and split.get(name) == "val"
    ]


def derived_val_cases(folder: Path, split: dict[str, str]) -> list[str]:
    """The cases of ``folder``'s index whose volume is validation in ``split`` and whose file is
    there. A case cut from a training volume (an index from another split) is an error: it
    would gate a route on what a model trained on."""
    with (folder / INDEX_NAME).open() as fh:
        rows = list(csv.DictReader(fh))
    leaked = sorted(r["case"] for r in rows if split.get(r["volume"]) != "val")
    if leaked:
        msg = f"{folder / INDEX_NAME}: cut from volumes not in validation: {leaked[:5]}"
        raise ValueError(msg)
    return sorted(r["case"] for r in rows if (folder / r["case"]).is_file())


def derived_paths(folders: list[Path], split_csv: Path, data: Path) -> list[Path]:
    """The validation cases of each derived folder (``derived_val_cases``) as paths in ``data``
    (the folder a tool presents every corpus in, ``evaluation.datasets.as_one_folder``). A folder
    without its index is a ValueError that says how to make it."""
    unmade = [str(f) for f in folders if not (f / INDEX_NAME).is_file()]
    if unmade:
        msg = f"--derived {' '.join(unmade)}: no {INDEX_NAME} there; run make derived-slices first"
        raise ValueError(msg)
    split = read_split(split_csv)
    return [data / name for folder in folders for name in derived_val_cases(folder, split)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.derived_slices", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=SPLIT_CSV)
    parser.add_argument("--modality", nargs="+", default=list(DEFAULT_MODALITIES), help="3D modalities")
    parser.add_argument("--per-volume", type=int, default=PER_VOLUME, help="slices per volume")
    parser.add_argument("--out", type=Path, default=DERIVED_DIR)
    args = parser.parse_args(argv)
    if args.per_volume < 1:
        parser.error("--per-volume must be at least 1")
    volumes = volumes_to_cut(case_files(args.data), read_split(args.split), tuple(args.modality))
    if not volumes:
        parser.error(f"no validation volume of {args.modality} in {args.data}")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.npz"):
        stale.unlink()
    rows: list[dict[str, object]] = []
    for i, path in enumerate(volumes, start=1):
        rows += derive_volume(path, args.out, args.per_volume)
        print(f"derived slices: {i}/{len(volumes)} {path.name}", file=sys.stderr)
    write_csv(args.out / INDEX_NAME, rows, INDEX_COLUMNS)
    sources = sorted({source_tag(str(r["case"])) for r in rows})
    cut = f"{len(rows)} 2D cases from {len(volumes)} volumes ({', '.join(sources)})"
    print(f"derived slices: {cut} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
