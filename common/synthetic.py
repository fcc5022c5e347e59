"""Synthetic cases with known answers, in the challenge npz layout.

Every generator returns ``(imgs, boxes, gts)``: imgs uint8 (H, W, 3) or (D, H, W); boxes int64
(N, 4) XYXY or (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max], inclusive, the tight boxes of
gts labels 1..N.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np


def tight_boxes(gts: np.ndarray) -> np.ndarray:
    """(H, W) or (D, H, W) labels 1..N -> (N, 4) or (N, 6) inclusive tight boxes."""
    rows = []
    for label in range(1, int(gts.max()) + 1):
        idx = np.argwhere(gts == label)  # (K, ndim) in (z,) y, x order
        lo, hi = idx.min(0), idx.max(0)
        if gts.ndim == 2:
            rows.append([lo[1], lo[0], hi[1], hi[0]])
        else:
            rows.append([lo[2], lo[1], lo[0], hi[2], hi[1], hi[0]])
    return np.array(rows, dtype=np.int64).reshape(-1, 4 if gts.ndim == 2 else 6)


def disks_2d(hw: tuple[int, int] = (320, 400), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two bright disks of different size on a noisy darker background (RGB)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    gts = np.zeros(hw, dtype=np.uint16)
    for label, (cy, cx, r) in enumerate([(0.4 * h, 0.3 * w, 0.18 * h), (0.65 * h, 0.72 * w, 0.12 * h)], 1):
        gts[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = label
    base = rng.normal(60, 12, hw) + np.where(gts > 0, 140, 0)
    imgs = np.repeat(np.clip(base, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return imgs, tight_boxes(gts), gts


def sphere_3d(
    shape: tuple[int, int, int] = (24, 128, 128), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright ellipsoid (label 1) in a noisy volume, CT-like grey levels."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    zz, yy, xx = np.mgrid[0:d, 0:h, 0:w]
    inside = ((zz - d / 2) / (0.35 * d)) ** 2 + ((yy - 0.5 * h) / (0.25 * h)) ** 2 + (
        (xx - 0.45 * w) / (0.22 * w)
    ) ** 2 <= 1
    gts = inside.astype(np.uint16)
    vol = np.clip(rng.normal(50, 10, shape) + 150 * inside, 0, 255).astype(np.uint8)
    return vol, tight_boxes(gts), gts


def _phantom_slice(phantom: np.ndarray, scale: float) -> np.ndarray:
    """Shrink a (H, W) label/intensity image about its centre by ``scale`` (nearest)."""
    h, w = phantom.shape
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 0.0, scale)
    return cv2.warpAffine(phantom, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)


def _largest_components(mask: np.ndarray, count: int) -> list[np.ndarray]:
    """The ``count`` largest 8-connected components of a (H, W) bool mask, left to right."""
    n, comps, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    ids = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:count]
    return [comps == i for i in sorted(ids, key=lambda i: cents[i][0])]


def phantom_labels(phantom: np.ndarray) -> np.ndarray:
    """Shepp-Logan (H, W) uint8 -> (H, W) labels: 1 the upper grey ellipse, 2 the right dark one.

    The dark ellipses are found as the flat black regions inside the skull (the outside
    background is the largest black component).
    """
    labels = np.zeros(phantom.shape, dtype=np.uint16)
    labels[_largest_components(phantom == 76, 1)[0]] = 1
    black = _largest_components(phantom == 0, 3)  # background + two ellipses, left to right
    inner = [m for m in black if not (m[0, 0] or m[-1, -1])]
    labels[inner[-1]] = 2
    return labels


def phantom_3d(phantom: np.ndarray, depth: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ellipsoidal head volume from the 2D Shepp-Logan phantom: slice z is the phantom
    shrunk by sqrt(1 - ((z - c) / R)^2). Labels as in :func:`phantom_labels`."""
    labels_2d = phantom_labels(phantom)
    c, r = (depth - 1) / 2, depth / 2
    vol, gts = [], []
    for z in range(depth):
        scale = float(np.sqrt(max(1 - ((z - c) / r) ** 2, 0.05)))
        vol.append(_phantom_slice(phantom, scale))
        gts.append(_phantom_slice(labels_2d, scale))
    imgs, gts_vol = np.stack(vol).astype(np.uint8), np.stack(gts).astype(np.uint16)
    return imgs, tight_boxes(gts_vol), gts_vol


def save_case(
    path: Path,
    imgs: np.ndarray,
    boxes: np.ndarray,
    gts: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Write a case in challenge layout (gts/spacing only if given)."""
    arrays: dict[str, np.ndarray] = {"imgs": imgs, "boxes": boxes}
    if gts is not None:
        arrays["gts"] = gts
    if spacing is not None:
        arrays["spacing"] = np.asarray(spacing, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


# --- hostile files: npz archives written member by member, so a test can make a file that
# lies. Each writes ``path`` and returns it; nothing is held in memory beyond one chunk.


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """The npy header (format 1.0, magic included) of a C-order array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_members(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A zip (deflated) of the given (member name, bytes), duplicates allowed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": that is the point
        for name, data in members:
            zf.writestr(name, data)
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of an .npy file."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_lying_npy(path: Path, shape: tuple[int, ...], dtype: str, data: bytes, boxes: np.ndarray) -> Path:
    """An npz whose ``imgs.npy`` header claims ``shape`` but holds ``data`` (header lies)."""
    return write_members(
        path, [("imgs.npy", _npy_header(shape, dtype) + data), ("boxes.npy", npy_bytes(boxes))]
    )


def write_bomb(
    path: Path, shape: tuple[int, ...] = (60000, 60000, 3), boxes: np.ndarray | None = None
) -> Path:
    """A decompression bomb made honestly: a uint8 ``imgs`` of zeros of ``shape`` streamed into
    the zip (deflate level 1, 64 MiB at a time), as ``np.savez_compressed(imgs=zeros)`` would
    store it: 60000 x 60000 x 3 is 10.8 GB inflated, ~47 MB on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boxes = np.array([[0, 0, 10, 10]]) if boxes is None else boxes
    chunk = bytes(64 << 20)
    total = int(np.prod(shape))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("imgs.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header(shape, "|u1"))
            for start in range(0, total, len(chunk)):
                fh.write(chunk[: min(len(chunk), total - start)])
        zf.writestr("boxes.npy", npy_bytes(boxes))
    return path


# --- clinical formats: a NIfTI file and a DICOM series of the same volume, with known geometry.


def write_nifti(path: Path, volume_zyx: np.ndarray, affine: np.ndarray) -> Path:
    """``volume_zyx`` (the app's (Z, Y, X) order) as NIfTI (file order (X, Y, Z)) with ``affine``
    (voxel (x, y, z) -> RAS mm)."""
    import nibabel as nib  # the clinical formats' dependency, only when asked for

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume_zyx.T), affine), path)
    return path


def write_dicom_series(
    folder: Path,
    volume_zyx: np.ndarray,
    spacing_xyz: tuple[float, float, float] = (0.8, 0.7, 2.5),
    origin_lps: tuple[float, float, float] = (-40.0, 30.0, 12.0),
    rows_dir: tuple[float, float, float] = (0.0, 1.0, 0.0),
    cols_dir: tuple[float, float, float] = (1.0, 0.0, 0.0),
    modality: str = "CT",
) -> list[Path]:
    """One single-frame CT/MR slice file per z of ``volume_zyx`` (int16 stored values), a
    series with the given LPS geometry: column direction ``cols_dir`` (x), row direction
    ``rows_dir`` (y), slices along their cross product, spaced ``spacing_xyz``; files written in
    reverse slice order (a reader must sort them)."""
    import pydicom  # the clinical formats' dependency, only when asked for
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    normal = np.cross(cols_dir, rows_dir)
    paths = []
    for z in reversed(range(volume_zyx.shape[0])):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "Phantom^Synthetic", "SYN1"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261202", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "medseg synthetic"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, z + 1
        position = np.asarray(origin_lps) + z * spacing_xyz[2] * normal
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*cols_dir, *rows_dir)]
        ds.PixelSpacing = [spacing_xyz[1], spacing_xyz[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing_xyz[2]
        ds.Rows, ds.Columns = volume_zyx.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "HU" if modality == "CT" else "US"
        ds.PixelData = np.ascontiguousarray(volume_zyx[z], dtype=np.int16).tobytes()
        path = folder / f"slice{z:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def world_bounds(box_xyz: np.ndarray, affine: np.ndarray, space: str = "LPS") -> tuple[list, list]:
    """A voxel box [x0, y0, z0, x1, y1, z1] as world per-axis bounds (mm, ``space`` LPS or RAS)
    through the centres of its corner voxels, for ``affine`` (voxel (x, y, z) -> RAS)."""
    lo, hi = box_xyz[:3], box_xyz[3:]
    pts = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ras = (np.c_[pts, np.ones(len(pts))] @ affine.T)[:, :3]
    world = ras * np.array([-1.0, -1.0, 1.0]) if space == "LPS" else ras
    return world.min(axis=0).round(6).tolist(), world.max(axis=0).round(6).tolist()


def box_sidecar(boxes: np.ndarray, labels: list[int], space: str = "voxel", affine=None, **extra) -> dict:  # noqa: ANN001
    """A ``<case>.boxes.json`` document for voxel ``boxes`` (N, 6), in voxel or world space."""
    rows = []
    for label, box in zip(labels, np.asarray(boxes, dtype=np.float64), strict=True):
        lo, hi = (
            world_bounds(box, affine, space) if space != "voxel" else (box[:3].tolist(), box[3:].tolist())
        )
        rows.append({"label": label, "min": lo, "max": hi})
    return {"space": space, "boxes": rows, **extra}
