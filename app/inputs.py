"""What an input folder holds: the cases the app reads, and every other entry with the reason it
is not read (never skipped silently).

A case is a challenge ``*.npz``, a NIfTI ``*.nii`` / ``*.nii.gz``, or a folder of one DICOM
series; NIfTI and DICOM cases take their boxes from a sidecar ``<case>.boxes.json``
(``clinical/``). Each case's output has a fixed name in the output folder (OUTPUT_NAME).
"""

from __future__ import annotations

from pathlib import Path

# Input kind -> file-name suffixes (lower case); "dicom" is a folder.
INPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "npz": (".npz",),
    "nifti": (".nii.gz", ".nii"),
}
SIDECAR_SUFFIX = ".boxes.json"
READ = "only .npz, .nii, .nii.gz files and DICOM series folders are cases"


def input_kind(path: Path) -> str | None:
    """``npz``, ``nifti``, ``dicom`` (a folder), or None when the entry is not a case."""
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for kind, suffixes in INPUT_SUFFIXES.items():
        if path.is_file() and name.endswith(suffixes):
            return kind
    return None


def output_name(path: Path) -> str:
    """The output file of a case: an npz or NIfTI keeps its name; a DICOM folder ``x`` gives
    ``x.nii.gz`` (and the DICOM-SEG ``x.seg.dcm`` beside it)."""
    return f"{path.name}.nii.gz" if input_kind(path) == "dicom" else path.name


def scan_inputs(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(cases sorted by name, [(name, why not read)] for every other visible entry). Sidecars are
    part of their case; hidden entries (``.x``) are not the user's cases."""
    cases, other = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        kind = input_kind(path)
        if kind is not None:
            cases.append(path)
        elif path.name.lower().endswith(SIDECAR_SUFFIX):
            continue
        else:
            other.append((path.name, "not a file" if not path.is_file() else READ))
    return cases, other
