"""The data roots, in one place: which folders hold the corpus and how several are used as one.

``../shared/data/public`` (one source per modality, mostly) and ``../shared/data/public2``
(further sources, for validation by source) are the two corpora. Commands that take ``--data``
accept one or more folders; several are presented to the tools as one folder of symlinks
(:func:`as_one_folder`), since case names never repeat across the corpora (checked).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.paths import PUBLIC, PUBLIC2

# Corpus name -> folder (relative to the project root, where every make target runs).
DATA_ROOTS: dict[str, Path] = {"public": PUBLIC, "public2": PUBLIC2}
DEFAULT_DATA: tuple[Path, ...] = tuple(DATA_ROOTS.values())
UNION_DIR = Path("build/data")


def case_files(folders: list[Path] | tuple[Path, ...]) -> dict[str, Path]:
    """Case file name -> path over ``folders`` (missing folders are skipped); a name found in
    two folders is an error."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.npz")):
            if path.name in found:
                msg = f"case {path.name} is in both {found[path.name].parent} and {folder}"
                raise ValueError(msg)
            found[path.name] = path
    return found


def as_one_folder(folders: list[Path] | tuple[Path, ...], union_dir: Path = UNION_DIR) -> Path:
    """One folder holding every case of ``folders``: the folder itself when there is one, else
    a folder of symlinks under ``union_dir`` named by a hash of the folders."""
    present = [Path(f) for f in folders if Path(f).is_dir()]
    if len(present) == 1:
        return present[0]
    tag = hashlib.sha256("|".join(str(p.resolve()) for p in present).encode()).hexdigest()[:8]
    dest = union_dir / f"union-{tag}"
    dest.mkdir(parents=True, exist_ok=True)
    files = case_files(present)
    for stale in dest.glob("*.npz"):
        if stale.name not in files:
            stale.unlink()
    for name, path in files.items():
        link = dest / name
        if not link.is_symlink():
            link.symlink_to(path.resolve())
    return dest


def corpus_of(path: Path) -> str:
    """The corpus name of a case path (its folder's name)."""
    return Path(path).resolve().parent.name
