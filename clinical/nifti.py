"""NIfTI in and out (nibabel): the image's voxels with their affine, sizes checked against the
image budget from the header before any voxel is read, and a uint16 label map written on the
input's exact grid (same shape, affine, qform/sform codes)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from math import prod
from pathlib import Path

import nibabel as nib
import numpy as np

from app.errors import CaseError
from app.npz_io import write_file
from app.npz_safe import human, processed_image_bytes

NIFTI_ERRORS = (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, gzip.BadGzipFile)


@dataclass(frozen=True)
class NiftiVolume:
    data: np.ndarray  # (X, Y[, Z]) as stored: uint8, else float32 with the header's scaling applied
    affine: np.ndarray  # (4, 4): voxel (x, y, z) -> RAS+ mm
    image: nib.Nifti1Image  # header and class for writing the labels back

    @property
    def dims(self) -> int:
        return self.data.ndim


def spatial_shape(shape: tuple[int, ...], case: str) -> tuple[int, ...]:
    """(X, Y) or (X, Y, Z) of a stored shape: trailing size-1 axes dropped; a 2D image may be
    stored as (X, Y, 1); more than one volume (4D) is refused."""
    core = list(shape)
    while len(core) > 2 and core[-1] == 1:
        core.pop()
    if len(core) > 3:
        raise CaseError(case, f"NIfTI holds {shape[3]} volumes (shape {shape}): give one 3D volume")
    return tuple(core)


def read_nifti(path: Path, budget: int) -> NiftiVolume:
    """Load ``path``; CaseError when it is unreadable, 4D, or over the image budget (checked
    from the header: the float32 working copy counts, as the app's uint8 image does)."""
    case = path.name
    try:
        image = nib.load(path)
        shape = spatial_shape(tuple(int(n) for n in image.shape), case)
        stored = np.dtype(image.get_data_dtype())
    except NIFTI_ERRORS as exc:
        raise CaseError(case, f"is not a readable NIfTI file ({exc})") from None
    slope, inter = image.header.get_slope_inter()
    raw = stored == np.uint8 and slope in (None, 1.0) and inter in (None, 0.0)
    dims = len(shape)
    app_shape = tuple(reversed(shape))  # the app's (Z, Y, X) / (Y, X)
    used = max(prod(shape) * (1 if raw else 4), processed_image_bytes(app_shape, dims))
    if used > budget:
        raise CaseError(
            case,
            f"NIfTI image {shape} {stored} needs {human(used)} to process, over the image budget of "
            f"{human(budget)}; refused before reading (raise it with --max-image-bytes)",
        )
    try:
        data = np.asanyarray(image.dataobj) if raw else image.get_fdata(dtype=np.float32)
    except NIFTI_ERRORS as exc:
        raise CaseError(case, f"NIfTI voxels are unreadable ({exc})") from None
    return NiftiVolume(data.reshape(shape), image.affine.astype(np.float64), image)


def to_app_order(data_xyz: np.ndarray) -> np.ndarray:
    """(X, Y[, Z]) file order -> the app's (Y, X) / (Z, Y, X), contiguous."""
    return np.ascontiguousarray(data_xyz.T)


def labels_like(labels_app: np.ndarray, volume: NiftiVolume) -> nib.Nifti1Image:
    """The app's (Y, X) / (Z, Y, X) uint16 labels as an image on ``volume``'s grid."""
    labels_xyz = labels_app.T.reshape(volume.image.shape[: max(volume.image.ndim, 2)][:3])
    header = volume.image.header.copy()
    header.set_data_dtype(np.uint16)
    header.set_slope_inter(1.0, 0.0)
    out = type(volume.image)(labels_xyz.astype(np.uint16), volume.image.affine, header=header)
    out.set_qform(volume.image.get_qform(), code=int(volume.image.header["qform_code"]))
    out.set_sform(volume.image.get_sform(), code=int(volume.image.header["sform_code"]))
    return out


def write_labels(path: Path, labels_app: np.ndarray, volume: NiftiVolume, case: str) -> None:
    """``path`` (.nii or .nii.gz) atomically: the labels on the input's grid."""
    payload = labels_like(labels_app, volume).to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    write_file(path, lambda fh: fh.write(payload), case)
