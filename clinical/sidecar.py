"""The box sidecar ``<case>.boxes.json``: parsed and checked field by field (numpy + stdlib).

    {"modality": "CT", "space": "voxel" | "LPS" | "RAS", "window": [-160, 240],
     "boxes": [{"label": 1, "min": [x, y, z], "max": [x, y, z]}, ...]}

``min``/``max`` are per-axis bounds, inclusive, through the centres of the box's corner voxels:
voxel indices (x = first array axis of the file, i.e. NIfTI i / DICOM column) or world
millimetres. 2D images give ``[x, y]``. ``modality`` and ``window`` (CT: HU bounds) are optional.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.inputs import SIDECAR_SUFFIX

SPACES = ("voxel", "LPS", "RAS")
MAX_LABEL = 65535  # uint16 label maps


class SidecarError(ValueError):
    """A sidecar problem, worded for the user (the caller adds the case name)."""


@dataclass(frozen=True)
class Sidecar:
    space: str
    labels: tuple[int, ...]
    mins: np.ndarray  # (N, dims) float64, in ``space``
    maxs: np.ndarray  # (N, dims) float64
    modality: str | None = None
    window: tuple[float, float] | None = None

    @property
    def dims(self) -> int:
        return int(self.mins.shape[1])


def sidecar_path(case: Path) -> Path:
    """``x.nii.gz`` -> ``x.boxes.json``; a DICOM folder ``x/`` -> ``x.boxes.json`` beside it."""
    name = case.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return case.with_name(name + SIDECAR_SUFFIX)


def _point(value: Any, where: str, dims: int | None) -> list[float]:
    if not isinstance(value, list) or len(value) not in (2, 3):
        msg = f"{where} must be a list of 2 (2D) or 3 (3D) numbers, got {value!r}"
        raise SidecarError(msg)
    if dims is not None and len(value) != dims:
        msg = f"{where} has {len(value)} numbers, the other boxes have {dims}"
        raise SidecarError(msg)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        msg = f"{where} must hold finite numbers, got {value!r}"
        raise SidecarError(msg)
    return [float(v) for v in value]


def _box(raw: Any, index: int, dims: int | None) -> tuple[int, list[float], list[float]]:
    where = f"boxes[{index}]"
    if not isinstance(raw, dict):
        msg = f"{where} must be an object with label, min and max"
        raise SidecarError(msg)
    missing = [k for k in ("label", "min", "max") if k not in raw]
    if missing:
        msg = f"{where} lacks {', '.join(missing)}"
        raise SidecarError(msg)
    label = raw["label"]
    if not isinstance(label, int) or isinstance(label, bool) or not 1 <= label <= MAX_LABEL:
        msg = f"{where}.label must be a whole number 1..{MAX_LABEL}, got {label!r}"
        raise SidecarError(msg)
    lo = _point(raw["min"], f"{where}.min", dims)
    hi = _point(raw["max"], f"{where}.max", len(lo))
    if any(a > b for a, b in zip(lo, hi, strict=True)):
        msg = f"{where}: min {lo} is above max {hi} on some axis"
        raise SidecarError(msg)
    return label, lo, hi


def _window(raw: Any) -> tuple[float, float] | None:
    if raw is None:
        return None
    ok = isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, (int, float)) for v in raw)
    if not ok or not raw[0] < raw[1]:
        msg = f"window must be [low, high] with low < high, got {raw!r}"
        raise SidecarError(msg)
    return float(raw[0]), float(raw[1])


def parse_sidecar(data: Any) -> Sidecar:
    """A decoded sidecar -> :class:`Sidecar`; SidecarError names the first bad field."""
    if not isinstance(data, dict):
        msg = "the sidecar must be a JSON object"
        raise SidecarError(msg)
    unknown = sorted(set(data) - {"modality", "space", "window", "boxes"})
    if unknown:
        msg = f"unknown field(s) {unknown}; known: modality, space, window, boxes"
        raise SidecarError(msg)
    space = data.get("space", "voxel")
    if space not in SPACES:
        msg = f"space must be one of {list(SPACES)}, got {space!r}"
        raise SidecarError(msg)
    modality = data.get("modality")
    if modality is not None and (not isinstance(modality, str) or not modality.strip()):
        msg = f"modality must be a name such as CT, MR or PET, got {modality!r}"
        raise SidecarError(msg)
    raw_boxes = data.get("boxes")
    if not isinstance(raw_boxes, list) or not raw_boxes:
        msg = "boxes must be a non-empty list"
        raise SidecarError(msg)
    boxes: list[tuple[int, list[float], list[float]]] = []
    for i, raw in enumerate(raw_boxes):
        boxes.append(_box(raw, i, len(boxes[0][1]) if boxes else None))
    labels = [b[0] for b in boxes]
    if len(set(labels)) != len(labels):
        msg = f"labels repeat: {labels} (one box per label)"
        raise SidecarError(msg)
    return Sidecar(
        space=space,
        labels=tuple(labels),
        mins=np.array([b[1] for b in boxes], dtype=np.float64),
        maxs=np.array([b[2] for b in boxes], dtype=np.float64),
        modality=modality.strip() if modality else None,
        window=_window(data.get("window")),
    )


def read_sidecar(path: Path) -> Sidecar:
    if not path.is_file():
        msg = f"no box sidecar {path.name} next to it (see README: Clinical formats)"
        raise SidecarError(msg)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path.name} is not readable JSON: {exc}"
        raise SidecarError(msg) from None
    return parse_sidecar(data)
