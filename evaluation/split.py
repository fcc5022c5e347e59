"""``make split``: a reproducible train/validation split by source image / patient.

The group of a case is what must never straddle the split: the patient for the IBSI sarcoma
cohort (its CT, PET and MR of one patient share ``STS_nnn``), the 8-slice block for the ISBI EM
stack, otherwise the source image (the file itself). A group goes to validation when the first
8 hex digits of sha256(group) fall below ``fraction`` of the range (plus the lowest-hash group of
any modality left without one): stable, independent of file order, no random state.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from pathlib import Path

from app.routing import modality

VAL_FRACTION = 0.3
_PATIENT = re.compile(r"(STS_\d+)")
_ISBI_SLICE = re.compile(r"ISBI2012EM_slice(\d+)")


def group_key(name: str) -> str:
    """Unit of the split for a case file name."""
    if m := _PATIENT.search(name):
        return f"patient:{m.group(1)}"
    if m := _ISBI_SLICE.search(name):
        return f"isbi_block:{int(m.group(1)) // 8}"
    return f"image:{Path(name).stem.split('_', 1)[-1]}"


def _hash01(group: str) -> float:
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def val_groups(cases: list[str], fraction: float = VAL_FRACTION) -> set[str]:
    """Groups in validation: hash below ``fraction``; every modality with two or more groups
    gets at least one (its lowest-hash group), so thin modalities are validated too."""
    by_modality: dict[str, set[str]] = {}
    for name in cases:
        by_modality.setdefault(modality(name) or "unknown", set()).add(group_key(name))
    chosen = {g for groups in by_modality.values() for g in groups if _hash01(g) < fraction}
    for groups in by_modality.values():
        if len(groups) >= 2 and not groups & chosen:
            chosen.add(min(groups, key=_hash01))
    return chosen


def read_split(path: Path) -> dict[str, str]:
    """case file name -> 'train' | 'val'."""
    with path.open() as fh:
        return {row["case"]: row["split"] for row in csv.DictReader(fh)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.split", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/public"))
    parser.add_argument("--out", type=Path, default=Path("splits/public.csv"))
    parser.add_argument("--fraction", type=float, default=VAL_FRACTION)
    args = parser.parse_args(argv)
    names = sorted(p.name for p in args.data.glob("*.npz"))
    val = val_groups(names, args.fraction)
    rows = [
        {
            "case": n,
            "modality": modality(n) or "unknown",
            "group": group_key(n),
            "split": "val" if group_key(n) in val else "train",
        }
        for n in names
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case", "modality", "group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[(r["modality"], r["split"])] = counts.get((r["modality"], r["split"]), 0) + 1
    for mod in sorted({r["modality"] for r in rows}):
        print(f"{mod:12s} train {counts.get((mod, 'train'), 0):3d}  val {counts.get((mod, 'val'), 0):3d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
