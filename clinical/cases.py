"""A clinical case (NIfTI, DICOM series) with its box sidecar -> the app's Case and the writer
of its outputs. Called by ``app.pipeline.open_case`` for inputs that are not npz."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.errors import CaseError
from app.inputs import input_kind
from app.npz_io import Case
from app.npz_safe import max_image_bytes
from app.routing import modality
from clinical.geometry import voxel_boxes
from clinical.intensity import to_uint8
from clinical.nifti import read_nifti, to_app_order, write_labels
from clinical.sidecar import Sidecar, SidecarError, read_sidecar, sidecar_path

# DICOM Modality tag values the name-based table does not spell.
DICOM_MODALITIES: dict[str, str] = {"PT": "PET", "MG": "Mammography", "DX": "XRay", "CR": "XRay"}


def case_modality(sidecar: Sidecar, path: Path, tag: str | None = None) -> str | None:
    """The sidecar's modality, else the DICOM tag, else the file name's; canonical spelling."""
    for value in (sidecar.modality, tag):
        if value:
            return DICOM_MODALITIES.get(value.upper()) or modality(value) or value
    return modality(path.name)


def label_table(sidecar: Sidecar) -> np.ndarray:
    """Box order (app labels 1..N) -> the sidecar's labels; 0 stays 0."""
    return np.array([0, *sidecar.labels], dtype=np.uint16)


def open_nifti(path: Path, out: Path, budget: int) -> tuple[Case, Callable[[np.ndarray], None]]:
    try:
        sidecar = read_sidecar(sidecar_path(path))
    except SidecarError as exc:
        raise CaseError(path.name, str(exc)) from None
    volume = read_nifti(path, budget)
    mod = case_modality(sidecar, path)
    try:
        boxes = voxel_boxes(sidecar, volume.affine, volume.data.shape)
    except SidecarError as exc:
        raise CaseError(path.name, f"{sidecar_path(path).name}: {exc}") from None
    image = to_app_order(to_uint8(volume.data, mod, sidecar.window))
    case = Case(name=path.name, image=image, boxes=boxes, spacing=None, modality=mod)
    lut = label_table(sidecar)
    return case, lambda segs: write_labels(out, lut[segs], volume, path.name)


def open_clinical_case(
    path: Path, out: Path, max_bytes: int | None
) -> tuple[Case, Callable[[np.ndarray], None]]:
    """(Case in the app's frame, writer of its label map to ``out``); CaseError names the problem."""
    budget = max_image_bytes(max_bytes)
    kind = input_kind(path)
    if kind == "nifti":
        return open_nifti(path, out, budget)
    if kind == "dicom":
        from clinical.dicom import open_dicom

        return open_dicom(path, out, budget)
    raise CaseError(path.name, "is not a case the app reads")
