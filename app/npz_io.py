"""Case I/O: load and validate a challenge npz, write ``segs`` atomically.

Input contract (REFERENCE.md section 1): ``imgs`` (H, W, 3) uint8 for 2D or (D, H, W) uint8 for
3D; ``boxes`` (N, 4) XYXY or (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max], pixel indices,
inclusive; ``spacing`` optional. Odd but meaningful variants are normalised here (see the README
table "What happens with odd inputs"); anything else raises :class:`CaseError`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import BinaryIO

import numpy as np

from app.errors import CaseError
from app.npz_safe import max_image_bytes as budget_bytes
from app.npz_safe import read_arrays
from app.routing import case_dims

MAX_OBJECTS = 65535  # labels are uint16; 0 is background


@dataclass(frozen=True)
class Case:
    """One validated case.

    image: 2D (H, W) grey or (H, W, 3) uint8, or 3D (D, H, W) uint8 / (D, H, W, 3) uint8
    (grey stays one channel: it is repeated to RGB only after the resize to the model input).
    boxes: (N, 4) or (N, 6) float64, order as in the file, pixel indices, inclusive.
    """

    name: str
    image: np.ndarray
    boxes: np.ndarray
    spacing: tuple[float, ...] | None
    modality: str | None = None  # routes the case when given (clinical inputs), else the name

    @property
    def is_3d(self) -> bool:
        return self.boxes.shape[1] == 6

    @property
    def seg_shape(self) -> tuple[int, ...]:
        """Shape of the output label map: the image without its channel axis."""
        return self.image.shape[:3] if self.is_3d else self.image.shape[:2]


def _to_uint8(image: np.ndarray, case: str) -> np.ndarray:
    """uint8 as is; other real dtypes rescaled min-max to 0..255 (the model min-max normalises).

    Converted one slice (first axis) at a time, so the only full-size copy is the uint8 result
    (a float64 copy of a large volume would be 8x the image)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise CaseError(case, f"imgs has unsupported dtype {image.dtype}; expected uint8")
    slices = [image] if image.ndim < 2 else image  # one slice (first axis) at a time
    if np.issubdtype(image.dtype, np.floating) and not all(np.isfinite(part).all() for part in slices):
        raise CaseError(case, "imgs contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())

    def scaled(part: np.ndarray) -> np.ndarray:
        values = part.astype(np.float64)
        return np.rint((values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values))

    out = np.empty(image.shape, dtype=np.uint8)
    if image.ndim < 2:
        out[...] = scaled(image)
    else:
        for i, part in enumerate(image):
            out[i] = scaled(part)
    return out


def _channels_last(image: np.ndarray, case: str, spatial: int) -> np.ndarray:
    """Normalise the channel axis: none, 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped)."""
    if image.ndim == spatial:
        return image
    if image.ndim == spatial + 1 and image.shape[-1] in (1, 3, 4):
        if image.shape[-1] == 1:
            return image[..., 0]
        return image[..., :3]
    raise CaseError(
        case,
        f"imgs has shape {image.shape}; expected {spatial} spatial axes "
        "plus an optional channel axis of 1, 3 or 4",
    )


def _boxes(raw: np.ndarray, case: str, width: int) -> np.ndarray:
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
        raise CaseError(case, f"boxes has unsupported dtype {raw.dtype}")
    boxes = raw.astype(np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, width)
    if boxes.ndim == 1 and boxes.shape[0] == width:
        boxes = boxes[None]  # a single box given as a flat array
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise CaseError(case, f"boxes has shape {raw.shape}; expected (N, {width})")
    if not np.isfinite(boxes).all():
        raise CaseError(case, "boxes contains NaN or infinite values")
    if boxes.shape[0] > MAX_OBJECTS:
        raise CaseError(case, f"{boxes.shape[0]} boxes exceed the limit of {MAX_OBJECTS} (uint16 labels)")
    return boxes


def infer_dims(name: str, image_shape: tuple[int, ...], boxes_shape: tuple[int, ...]) -> int:
    """2 or 3: from the file name prefix, else the box width, else the image shape."""
    dims = case_dims(name)
    if dims is not None:
        return dims
    if len(boxes_shape) >= 1 and boxes_shape[-1] in (4, 6) and prod(boxes_shape) > 0:
        return 2 if boxes_shape[-1] == 4 else 3
    ndim = len(image_shape)
    return 2 if ndim == 2 or (ndim == 3 and image_shape[-1] in (1, 3, 4)) else 3


def load_case(path: Path, max_image_bytes: int | None = None) -> Case:
    """Read and validate one npz. Raises CaseError naming the case and the problem. Sizes are
    checked against the image budget (:func:`app.npz_safe.max_image_bytes`) before any array
    is decompressed."""
    name = path.name
    arrays, dims = read_arrays(
        path,
        name,
        budget_bytes(max_image_bytes),
        lambda m: infer_dims(name, m["imgs"].shape, m["boxes"].shape),
    )
    if arrays["imgs"].size == 0:
        raise CaseError(name, f"imgs is empty: shape {arrays['imgs'].shape}")
    image = _channels_last(_to_uint8(arrays["imgs"], name), name, dims)
    if min(image.shape[:dims]) < 1:
        raise CaseError(name, f"imgs has an empty axis: shape {image.shape}")
    boxes = _boxes(arrays["boxes"], name, 4 if dims == 2 else 6)
    return Case(name=name, image=image, boxes=boxes, spacing=_spacing(arrays.get("spacing")))


def _spacing(raw: np.ndarray | None) -> tuple[float, ...] | None:
    """Three finite positive numbers, else None: spacing is informational (inference never
    uses it), so a malformed one is ignored rather than failing the case."""
    if raw is None or not np.issubdtype(raw.dtype, np.number) or raw.size != 3:
        return None
    values = np.ravel(raw).astype(np.float64)
    return tuple(float(v) for v in values) if np.all(np.isfinite(values) & (values > 0)) else None


TEMP_SUFFIX = ".tmp"


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files a killed earlier run left in ``folder`` (``.<output name>.*.tmp``)."""
    stale = [p for p in folder.glob(".*.*" + TEMP_SUFFIX) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# errno -> what a user can do about an output that cannot be written.
OUTPUT_PROBLEMS: dict[int, str] = {
    errno.EISDIR: "is a directory: remove or rename it",
    errno.ENOSPC: "cannot be written: no space left on device",
    errno.EDQUOT: "cannot be written: disk quota exceeded",
    errno.EACCES: "cannot be written: permission denied",
    errno.EPERM: "cannot be written: operation not permitted",
    errno.EROFS: "cannot be written: read-only file system",
    errno.ENOENT: "cannot be written: its folder no longer exists",
}


def check_output_path(path: Path, case: str) -> None:
    """Refuse early (before any work) an output path that is a directory."""
    if path.is_dir():
        raise CaseError(case, f"output path {path} {OUTPUT_PROBLEMS[errno.EISDIR]}")


def write_output(path: Path, segs: np.ndarray, case: str) -> None:
    """:func:`save_segmentation`, with an OS failure turned into a CaseError that names the
    case, the output path and the problem (never the temp file)."""
    if segs.dtype != np.uint16:
        msg = f"segs must be uint16, got {segs.dtype}"
        raise RuntimeError(msg)
    write_file(path, lambda fh: np.savez_compressed(fh, segs=segs), case)


def write_file(path: Path, write: Callable[[BinaryIO], object], case: str) -> None:
    """:func:`write_atomic`, with an OS failure turned into a CaseError naming the case, the
    output path and what to do about it."""
    try:
        write_atomic(path, write)
    except OSError as exc:
        problem = OUTPUT_PROBLEMS.get(exc.errno or -1, f"cannot be written ({exc.strerror or exc})")
        raise CaseError(case, f"output path {path} {problem}") from None


def save_segmentation(path: Path, segs: np.ndarray) -> None:
    """Write ``segs`` (uint16) with np.savez_compressed via :func:`write_atomic`."""
    if segs.dtype != np.uint16:
        msg = f"segs must be uint16, got {segs.dtype}"
        raise RuntimeError(msg)
    write_atomic(path, lambda fh: np.savez_compressed(fh, segs=segs))


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temp file beside ``path``, then an atomic rename.

    A crash or kill mid-write leaves at most a hidden ``.<name>.*.tmp`` file (removed by the
    next run, see :func:`remove_stale_temps`), never a partial output; an existing output is
    replaced, never appended to.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
