"""``make split``: a reproducible train/validation split by source, then by image / patient.

Two kinds of validation, both needed to tell a real gain from a source-specific one:
- held-back cases of the sources a model trains on: the unit that must never straddle the
  split is the patient for the IBSI sarcoma cohort (its CT, PET and MR of one patient share
  ``STS_nnn``), the 8-slice block for the ISBI EM stack, otherwise the source image (the file).
  A unit goes to validation when the first 8 hex digits of sha256(unit) fall below ``fraction``
  of the range (plus the lowest-hash unit of any modality left without one): stable,
  independent of file order, no random state.
- whole sources held out (HELD_OUT_SOURCES): every case of such a source is validation, so
  each modality is also judged on data from a source no model was trained on.

Columns of ``splits/public.csv``: case, corpus (the data folder), modality, source, group
(the unit), split (train | val), held_out (yes: the whole source is validation).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from pathlib import Path

from app.routing import modality, source_tag
from common.paths import SPLIT_CSV
from common.reports import write_csv
from evaluation.datasets import DEFAULT_DATA, case_files

VAL_FRACTION = 0.3
_PATIENT = re.compile(r"(STS_\d+)")
_ISBI_SLICE = re.compile(r"ISBI2012EM_slice(\d+)")
_SPINE_SUBJECT = re.compile(r"SpineGeneric_(unf\d+)")

# Source tag -> why it is held out whole (never trained on; every case is validation). One row
# per source of ../shared/data/public2 that no specialist trains on: each modality with a second
# source keeps at least one unseen source.
HELD_OUT_SOURCES: dict[str, str] = {
    "HRF": "Fundus vessels from a third scanner: does a vessel specialist transfer?",
    "STARE": "Fundus vessels, fourth source",
    "IDRiD": "Fundus optic disc: a different task in the same modality",
    "PH2": "Dermoscopy, second source",
    "CVCClinicDB": "Endoscopy, second source (one video sequence)",
    "AxonDeepSegSEM": "Microscopy, SEM axons: another instrument and task",
    "EBHISeg": "Microscopy, H&E glands: another stain and task",
    "BUSI": "US breast tumours: a different organ and task from fetal heads",
    "DC1000": "X-Ray, dental caries",
    "UFBA425": "X-Ray, dental teeth",
    "MSDSpleen": "CT 3D, spleen",
    "SpineGeneric": "MR 3D, spinal cord",
}
COLUMNS = ["case", "corpus", "modality", "source", "group", "split", "held_out"]


def group_key(name: str) -> str:
    """Unit of the split for a case file name."""
    if m := _PATIENT.search(name):
        return f"patient:{m.group(1)}"
    if m := _ISBI_SLICE.search(name):
        return f"isbi_block:{int(m.group(1)) // 8}"
    if m := _SPINE_SUBJECT.search(name):
        return f"patient:spine_{m.group(1)}"
    return f"image:{Path(name).stem.split('_', 1)[-1]}"


def _hash01(group: str) -> float:
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def val_groups(cases: list[str], fraction: float = VAL_FRACTION) -> set[str]:
    """Units in held-back validation (cases of held-out sources are not passed here): hash below
    ``fraction``; every modality with two or more units gets at least one (its lowest-hash
    unit), so thin modalities are validated too."""
    by_modality: dict[str, set[str]] = {}
    for name in cases:
        by_modality.setdefault(modality(name) or "unknown", set()).add(group_key(name))
    chosen = {g for groups in by_modality.values() for g in groups if _hash01(g) < fraction}
    for groups in by_modality.values():
        if len(groups) >= 2 and not groups & chosen:
            chosen.add(min(groups, key=_hash01))
    return chosen


def split_rows(cases: dict[str, str], fraction: float = VAL_FRACTION) -> list[dict[str, str]]:
    """``cases``: file name -> corpus name. One row per case (COLUMNS), sorted by name."""
    names = sorted(cases)
    held = {n for n in names if source_tag(n) in HELD_OUT_SOURCES}
    val = val_groups([n for n in names if n not in held], fraction)
    return [
        {
            "case": n,
            "corpus": cases[n],
            "modality": modality(n) or "unknown",
            "source": source_tag(n),
            "group": group_key(n),
            "split": "val" if n in held or group_key(n) in val else "train",
            "held_out": "yes" if n in held else "no",
        }
        for n in names
    ]


def read_split(path: Path) -> dict[str, str]:
    """case file name -> 'train' | 'val'."""
    with path.open() as fh:
        return {row["case"]: row["split"] for row in csv.DictReader(fh)}


def read_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a split file (COLUMNS)."""
    with path.open() as fh:
        return list(csv.DictReader(fh))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.split", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA))
    parser.add_argument("--out", type=Path, default=SPLIT_CSV)
    parser.add_argument("--fraction", type=float, default=VAL_FRACTION)
    args = parser.parse_args(argv)
    cases = {name: path.parent.name for name, path in case_files(args.data).items()}
    rows = split_rows(cases, args.fraction)
    write_csv(args.out, rows, COLUMNS)
    counts: dict[tuple[str, str, str], int] = {}
    for r in rows:
        key = (r["modality"], r["source"], r["split"] + ("*" if r["held_out"] == "yes" else ""))
        counts[key] = counts.get(key, 0) + 1
    for (mod, source, part), n in sorted(counts.items()):
        print(f"{mod:12s} {source:28s} {part:6s} {n:3d}")
    print("(* = source held out whole)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
