"""DICOM series in (pydicom + highdicom), DICOM-SEG and NIfTI out.

A case is a folder holding the single-frame slices of one series. highdicom builds the volume
(``get_volume_from_series``: slices sorted along their normal, modality rescale applied) with an
affine from (slice, row, column) indices to LPS millimetres. The sidecar's voxel coordinates are
(x, y, z) = (column, row, slice), slices counted along the normal of the slices' orientation
(row direction x column direction). Outputs: ``<case>.nii.gz`` (labels on the
same grid, RAS affine) and ``<case>.seg.dcm``, a DICOM-SEG whose frames reference the source
slices, one segment per sidecar box (segment label ``label <n>``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from math import prod
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from app.errors import CaseError
from app.npz_io import Case, write_file
from app.npz_safe import human, processed_image_bytes
from clinical.geometry import LPS_TO_RAS
from clinical.intensity import to_uint8
from clinical.nifti import NiftiVolume, write_labels
from clinical.sidecar import Sidecar, SidecarError, read_sidecar, sidecar_path

SEG_SUFFIX = ".seg.dcm"
SOFTWARE = ("medseg-appliance", "0.1.0")
# (x, y, z) = (column, row, slice) -> highdicom's (slice, row, column)
XYZ_TO_VOLUME = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def read_headers(folder: Path, budget: int) -> list[Path]:
    """The series' files; CaseError when the folder holds none, several series, or more voxels
    than the image budget admits (checked from the headers, before any pixel is read)."""
    case = folder.name
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise CaseError(case, f"{path.name} is not a readable DICOM file ({exc})") from None
    if not headers:
        raise CaseError(case, "the folder holds no DICOM files")
    series = {str(getattr(h, "SeriesInstanceUID", "?")) for h in headers}
    if len(series) > 1:
        raise CaseError(case, f"the folder holds {len(series)} series; give one series per folder")
    shape = (len(headers), int(getattr(headers[0], "Rows", 0)), int(getattr(headers[0], "Columns", 0)))
    used = max(prod(shape) * 4, processed_image_bytes(shape, 3))
    if used > budget:
        raise CaseError(
            case,
            f"DICOM series {shape} needs {human(used)} to process, over the image budget of {human(budget)}",
        )
    return files


def read_series(folder: Path, budget: int) -> tuple[list[pydicom.Dataset], hd.Volume]:
    files = read_headers(folder, budget)
    datasets = [pydicom.dcmread(p) for p in files]
    try:
        volume = hd.get_volume_from_series(datasets, dtype=np.float32)
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise CaseError(folder.name, f"the slices do not form one volume ({exc})") from None
    # Slice z grows along the normal (row direction x column direction), as the slices' own
    # frame reads: in highdicom's (slice, row, column) axes that is a left-handed system.
    return datasets, volume.ensure_handedness(hd.AxisHandedness.LEFT_HANDED, flip_axis=0)


def affine_xyz_ras(volume: hd.Volume) -> np.ndarray:
    """Voxel (x, y, z) = (column, row, slice) -> RAS mm, the frame clinical/geometry.py uses."""
    lps_to_ras = np.eye(4)
    lps_to_ras[:3, :3] = LPS_TO_RAS
    return lps_to_ras @ volume.affine @ XYZ_TO_VOLUME


def segmentation(
    datasets: list[pydicom.Dataset], volume: hd.Volume, labels: np.ndarray, sidecar: Sidecar
) -> hd.seg.Segmentation:
    """The DICOM-SEG of ``labels`` (box order 1..N, the volume's (slice, row, column) grid)."""
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # not its per-module copy notes
    algorithm = hd.AlgorithmIdentificationSequence(
        name=SOFTWARE[0], version=SOFTWARE[1], family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"label {label}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=f"label {label}",
            tracking_uid=hd.UID(),
        )
        for n, label in enumerate(sidecar.labels, 1)
    ]
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=volume.with_array(labels.astype(np.uint16)),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE[0],
        manufacturer_model_name="LiteMedSAM appliance",
        software_versions=SOFTWARE[1],
        device_serial_number="none",
        omit_empty_frames=False,
    )


def nifti_grid(affine: np.ndarray, shape_xyz: tuple[int, ...]) -> NiftiVolume:
    """A NIfTI grid (no voxels) with this affine and shape, scanner-coordinate codes, for the
    label map written beside the DICOM-SEG."""
    image = nib.Nifti1Image(np.broadcast_to(np.uint8(0), shape_xyz), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return NiftiVolume(np.empty((0,), np.uint8), affine, image)


def open_dicom(folder: Path, out: Path, budget: int) -> tuple[Case, Callable[[np.ndarray], None]]:
    """A DICOM series folder -> (Case, writer of ``out`` (NIfTI) and the DICOM-SEG beside it)."""
    from clinical.cases import case_modality, label_table
    from clinical.geometry import voxel_boxes

    case_name = folder.name
    try:
        sidecar = read_sidecar(sidecar_path(folder))
    except SidecarError as exc:
        raise CaseError(case_name, str(exc)) from None
    datasets, volume = read_series(folder, budget)
    affine = affine_xyz_ras(volume)
    data_zyx = volume.array  # (slices, rows, columns) = the app's (Z, Y, X)
    try:
        boxes = voxel_boxes(sidecar, affine, tuple(reversed(data_zyx.shape)))
    except SidecarError as exc:
        raise CaseError(case_name, f"{sidecar_path(folder).name}: {exc}") from None
    mod = case_modality(sidecar, folder, str(getattr(datasets[0], "Modality", "")) or None)
    image = np.ascontiguousarray(to_uint8(data_zyx, mod, sidecar.window))
    case = Case(name=case_name, image=image, boxes=boxes, spacing=None, modality=mod)
    grid = nifti_grid(affine, tuple(reversed(data_zyx.shape)))
    lut = label_table(sidecar)

    def write(segs: np.ndarray) -> None:
        seg = segmentation(datasets, volume, segs, sidecar)
        write_file(out.with_name(folder.name + SEG_SUFFIX), seg.save_as, case_name)
        write_labels(out, lut[segs], grid, case_name)

    return case, write
