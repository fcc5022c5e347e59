"""Boxes from the sidecar's space to voxel indices of the image (numpy only).

Frames: a NIfTI affine maps voxel indices (i, j, k) = (x, y, z) of the file's array to RAS+
millimetres; LPS is RAS with the first two axes negated. A world box (per-axis bounds through
the centres of its corner voxels) maps to the voxel box spanning its 8 mapped corners, so a
flipped or rotated axis needs no special case; the corners round to the nearest voxel centre.
"""

from __future__ import annotations

import itertools

import numpy as np

from clinical.sidecar import Sidecar, SidecarError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
ROUND_DECIMALS = 4  # 2.49999999 from float maths is 2.5: round half up, as a viewer would


def world_to_ras(points: np.ndarray, space: str) -> np.ndarray:
    """(K, 3) points in ``space`` (RAS or LPS) -> RAS."""
    return points @ LPS_TO_RAS.T if space == "LPS" else points


def ras_to_voxel(points_ras: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(K, 3) RAS mm -> (K, 3) continuous voxel indices (x, y, z) through ``inv(affine)``."""
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    return (homogeneous @ np.linalg.inv(affine).T)[:, :3]


def corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 2^d corners of the box [lo, hi] (d = 2 or 3), (2^d, d)."""
    return np.array(list(itertools.product(*zip(lo, hi, strict=True))), dtype=np.float64)


def _nearest(v: np.ndarray) -> np.ndarray:
    return np.floor(np.round(v, ROUND_DECIMALS) + 0.5)


def voxel_boxes(sidecar: Sidecar, affine: np.ndarray, shape_xyz: tuple[int, ...]) -> np.ndarray:
    """The sidecar's boxes as (N, 2d) voxel boxes [x0, y0, (z0,) x1, y1, (z1)], inclusive, clipped
    to the image; SidecarError names a box that misses the image or does not fit its dims."""
    dims = len(shape_xyz)
    if sidecar.dims != dims:
        msg = f"boxes have {sidecar.dims} coordinates, the image is {dims}D (shape x, y[, z] {shape_xyz})"
        raise SidecarError(msg)
    if sidecar.space != "voxel" and dims != 3:
        msg = f"{sidecar.space} boxes need a 3D image; give 2D boxes in voxel space"
        raise SidecarError(msg)
    size = np.array(shape_xyz, dtype=np.float64)
    rows = []
    for n, (lo, hi) in enumerate(zip(sidecar.mins, sidecar.maxs, strict=True)):
        if sidecar.space == "voxel":
            vox = np.stack([lo, hi])
        else:
            vox = ras_to_voxel(world_to_ras(corners(lo, hi), sidecar.space), affine)
        first, last = _nearest(vox.min(axis=0)), _nearest(vox.max(axis=0))
        if np.any(last < 0) or np.any(first > size - 1):
            msg = (
                f"boxes[{n}] (label {sidecar.labels[n]}) lies outside the image: voxel box "
                f"{first.astype(int).tolist()}..{last.astype(int).tolist()}, "
                f"image x, y[, z] {list(shape_xyz)}"
            )
            raise SidecarError(msg)
        rows.append(np.r_[np.clip(first, 0, size - 1), np.clip(last, 0, size - 1)])
    return np.array(rows, dtype=np.float64)
