"""Cached training samples: frozen-encoder embeddings (fp16) + ground truth in the model frame.

One file per case, ``<cache>/<case>.npz``:
    embeddings (S, 256, 64, 64) float16   image embeddings of the chosen slices (2D: S = 1)
    labels     (S, size, size)  uint16    ground truth resized (nearest) to (newh, neww), zero pad
    hw         (S, 2)           int32     (newh, neww) of each slice in the model frame
    slices     (S,)             int32     slice indices (2D: [0])
    prompts    (S, L + 1, 4)    float32   3D only: per slice and label, the box the app would
                                          prompt with (see :func:`app_prompts`); NaN where absent
Only slices holding objects are cached, evenly spread, at most ``per_case`` per volume. The
encoder is the exported OpenVINO IR (the same frozen weights as torch, parity-checked), which
is several times faster than torch on this CPU.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from app.postprocessing import propagation_box
from app.preprocessing import box_to_model, clip_box_2d, clip_z_range, encoder_input, resized_hw
from app.routing import case_dims
from app.sessions import SamSession
from evaluation.split import read_split


def evenly_spread(indices: np.ndarray, count: int) -> list[int]:
    """(N,) sorted indices -> up to ``count`` of them, evenly spread, first and last included
    (all of them when there are no more than ``count``)."""
    if len(indices) <= count:
        return indices.tolist()
    picks = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return indices[np.unique(picks)].tolist()


def choose_slices(gts: np.ndarray, per_case: int) -> list[int]:
    """(D, H, W) labels -> up to ``per_case`` indices of slices with objects, evenly spread."""
    return evenly_spread(np.flatnonzero(gts.reshape(gts.shape[0], -1).any(axis=1)), per_case)


def labels_to_model(labels: np.ndarray, size: int) -> np.ndarray:
    """(H, W) labels -> (size, size) uint16: nearest resize to (newh, neww), zero padding."""
    newh, neww = resized_hw(labels.shape[:2], size)
    small = cv2.resize(labels.astype(np.uint16), (neww, newh), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((size, size), dtype=np.uint16)
    out[:newh, :neww] = small
    return out


def app_prompts(gts: np.ndarray, boxes: np.ndarray, slices: list[int], size: int) -> np.ndarray:
    """(D, H, W) labels, (N, 6) boxes (label i + 1 <-> box i), chosen slices -> (S, N + 1, 4)
    model-frame prompts the app would give each object on each slice with a perfect previous
    mask: the 3D box's 2D extent on its key slice (the middle of its z range, as
    app/infer_3d.py), else the propagation box of the neighbouring slice towards the key slice.
    NaN where the object is absent from the slice or the prompt does not exist."""
    depth, h, w = gts.shape[:3]
    out = np.full((len(slices), len(boxes) + 1, 4), np.nan, dtype=np.float32)
    for label, box in enumerate(boxes, start=1):
        z_range = clip_z_range(box[2], box[5], depth)
        box_2d = clip_box_2d(box[[0, 1, 3, 4]], (h, w))
        if z_range is None or box_2d is None:
            continue
        z_key = (z_range[0] + z_range[1]) // 2
        for i, z in enumerate(slices):
            if not (gts[z] == label).any():
                continue
            if z == z_key:
                out[i, label] = box_to_model(box_2d, (h, w), size)
                continue
            prompt = propagation_box(gts[z - 1 if z > z_key else z + 1] == label, label, size)
            if prompt is not None:
                out[i, label] = prompt
    return out


def case_samples(path: Path, session: SamSession, per_case: int) -> dict[str, np.ndarray]:
    """Embeddings and model-frame labels of one case (see module docstring)."""
    size = session.input_size
    with np.load(path, allow_pickle=False) as data:
        imgs, gts = data["imgs"], data["gts"]
        boxes = data["boxes"] if case_dims(path.name) == 3 else None
    extra = {}
    if case_dims(path.name) == 3:
        slices = choose_slices(gts, per_case)
        images, label_maps = [imgs[z] for z in slices], [gts[z] for z in slices]
        extra["prompts"] = app_prompts(gts, boxes, slices, size)
    else:
        slices, images, label_maps = [0], [imgs], [gts]
    embeddings, labels, hw = [], [], []
    for image, label_map in zip(images, label_maps, strict=True):
        x, new_hw = encoder_input(image.astype(np.uint8), size)
        embeddings.append(session.encode(x)[0].astype(np.float16))
        labels.append(labels_to_model(label_map, size))
        hw.append(new_hw)
    return {
        "embeddings": np.stack(embeddings) if embeddings else np.zeros((0, 256, 64, 64), np.float16),
        "labels": np.stack(labels) if labels else np.zeros((0, size, size), np.uint16),
        "hw": np.asarray(hw, dtype=np.int32).reshape(-1, 2),
        "slices": np.asarray(slices, dtype=np.int32),
        **extra,
    }


def split_paths(split_csv: Path, data: Path) -> dict[str, list[Path]]:
    """{'train': [...], 'val': [...]}: the cases of ``split_csv`` present in ``data``, in its order."""
    out: dict[str, list[Path]] = {"train": [], "val": []}
    for case, part in read_split(split_csv).items():
        if (data / case).is_file():
            out[part].append(data / case)
    return out


def cache_cases(
    cases: list[Path], folder: Path, make: Callable[[Path], dict[str, np.ndarray]], label: str = "train"
) -> list[Path]:
    """Write the missing ``folder/<case>.npz`` = ``make(case)`` (resumable, atomic: a temp file
    renamed); all paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    out, t0 = [], time.perf_counter()
    for i, case in enumerate(cases, start=1):
        target = folder / case.name
        if not target.is_file():
            tmp = folder / f".{case.name}.tmp.npz"
            np.savez(tmp, **make(case))
            tmp.replace(target)
            secs = time.perf_counter() - t0
            print(f"{label}: cached {i}/{len(cases)} {case.name} ({secs:.0f} s)", file=sys.stderr)
        out.append(target)
    return out


def build_cache(cases: list[Path], cache: Path, session: SamSession, per_case: int) -> list[Path]:
    """The specialists' cache: :func:`case_samples` of every case."""
    return cache_cases(cases, cache, lambda case: case_samples(case, session, per_case))
