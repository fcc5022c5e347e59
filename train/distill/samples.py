"""Distillation samples: the app's encoder inputs of train-split images (with augmented views)
and validation object slices, each with the teacher's (TinyViT IR) embedding, cached per case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.preprocessing import encoder_input
from app.routing import case_dims, source_tag
from app.sessions import SamSession
from train.data import jitter_box, object_box
from train.distill.frame import SIZE
from train.samples import choose_slices, labels_to_model


@dataclass(frozen=True)
class View:
    """One augmented view: flips, quarter turns (counter-clockwise), gamma, contrast."""

    flip_lr: bool
    flip_ud: bool
    quarter_turns: int
    gamma: float
    contrast: float


def draw_view(rng: np.random.Generator) -> View:
    """A random view: each flip with probability 1/2, 0-3 quarter turns, gamma in [0.7, 1.5],
    contrast in [0.8, 1.2] (drawn in this order: the cached views depend on it)."""
    flip_lr, flip_ud = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    turns = int(rng.integers(0, 4))
    return View(flip_lr, flip_ud, turns, float(rng.uniform(0.7, 1.5)), float(rng.uniform(0.8, 1.2)))


def view_geometry(array: np.ndarray, view: View) -> np.ndarray:
    """(H, W) or (H, W, C) -> the view's flips and turns of it (images and label maps alike)."""
    out = array[:, ::-1] if view.flip_lr else array
    out = out[::-1] if view.flip_ud else out
    return np.ascontiguousarray(np.rot90(out, k=view.quarter_turns, axes=(0, 1)))


def view_intensity(image: np.ndarray, view: View) -> np.ndarray:
    """uint8 image -> the view's gamma, then its contrast about the mean; uint8 out."""
    x = (image.astype(np.float32) / 255.0) ** view.gamma
    x = (x - x.mean()) * view.contrast + x.mean()
    return np.ascontiguousarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> a random view (:func:`draw_view`); uint8 out, same channels."""
    view = draw_view(rng)
    return view_intensity(view_geometry(image, view), view)


def case_pairs(path: Path, per_volume: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, labels) of the 2D case, or of up to ``per_volume`` evenly spread non-empty image
    slices of a volume (chosen by the image, not the labels: slices without objects count)."""
    with np.load(path, allow_pickle=False) as data:
        imgs, gts = data["imgs"], data["gts"]
    if case_dims(path.name) != 3:
        return [(imgs, gts)]
    return [(imgs[z], gts[z]) for z in choose_slices(imgs > 0, per_volume)]


def case_views(path: Path, views: int, per_volume: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, labels) of every cached view of a train case, image-major: ``views`` per image,
    the first as is, the others :func:`draw_view` views (seeded by ``seed`` and the case name)."""
    rng = np.random.default_rng([seed, *path.name.encode()])
    out = []
    for image, labels in case_pairs(path, per_volume):
        for v in range(views):
            if v == 0:
                out.append((image, labels))
                continue
            view = draw_view(rng)
            out.append((view_intensity(view_geometry(image, view), view), view_geometry(labels, view)))
    return out


def quantised_input(image: np.ndarray) -> np.ndarray:
    """The app's encoder input of ``image``, stored as uint8 (3, S, S); /255 gives what both
    teacher and student see (the quantisation step is 1/255 of the min-max range)."""
    x, _ = encoder_input(image, SIZE)
    return np.clip(x[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


# Random prompts of the task-aware distillation: each side a log-uniform share of the image's.
BOX_SIDE_SHARE = (0.04, 0.8)


def random_boxes(hw: np.ndarray, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 2) image sizes -> (B * per_image, 4) float32 XYXY model-frame boxes, image-major, each
    inside its image, sides a log-uniform share ``BOX_SIDE_SHARE`` of the image's (>= 2 px)."""
    size = np.repeat(hw, per_image, axis=0).astype(np.float64)  # (N, 2) h, w
    low, high = np.log(BOX_SIDE_SHARE)
    side = np.maximum(np.exp(rng.uniform(low, high, size=size.shape)) * size, 2.0)  # (N, 2) bh, bw
    start = rng.uniform(0.0, 1.0, size=size.shape) * (size - side)  # (N, 2) y0, x0
    y0, x0 = start[:, 0], start[:, 1]
    y1, x1 = y0 + side[:, 0] - 1, x0 + side[:, 1] - 1
    return np.round(np.stack([x0, y0, x1, y1], axis=1)).astype(np.float32)


# Jitter of the object prompts (pixels per side, model frame): the baseline's training used 5.
OBJECT_BOX_SHIFT = 5


def object_boxes(labels: np.ndarray, hw: np.ndarray, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """(B, S, S) model-frame labels of the views, (B, 2) their image sizes -> (B * per_image, 4)
    float32 XYXY prompts, image-major: each the tight box of one of the view's objects (drawn
    at random), jittered by ``OBJECT_BOX_SHIFT``; a :func:`random_boxes` box where the view
    holds no object (volume slices without one)."""
    out = random_boxes(hw, per_image, rng)
    for i, view in enumerate(labels):
        present = np.unique(view[view > 0])
        for j in range(per_image if len(present) else 0):
            mask = view == present[rng.integers(0, len(present))]
            out[i * per_image + j] = jitter_box(object_box(mask), rng, OBJECT_BOX_SHIFT, view.shape[0])
    return out


def teacher_embeddings(inputs: np.ndarray, teacher: SamSession, batch: int = 4) -> np.ndarray:
    """(N, 3, S, S) uint8 -> (N, 256, 64, 64) fp16 from the teacher IR."""
    out = [
        teacher.encode(inputs[i : i + batch].astype(np.float32) / 255.0).astype(np.float16)
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 256, 64, 64), np.float16)


def train_sample(
    path: Path, teacher: SamSession, views: int, per_volume: int, seed: int
) -> dict[str, np.ndarray]:
    pairs = case_views(path, views, per_volume, seed)
    inputs = (
        np.stack([quantised_input(image) for image, _ in pairs])
        if pairs
        else np.zeros((0, 3, SIZE, SIZE), np.uint8)
    )
    return {"inputs": inputs, "teacher": teacher_embeddings(inputs, teacher)}


def train_labels(path: Path, views: int, per_volume: int, seed: int) -> dict[str, np.ndarray]:
    """The model-frame labels (N, S, S) uint16 of the views :func:`train_sample` caches, in its
    order (the task-aware term's object prompts; a cache of its own, so that the teacher's
    embeddings need not be recomputed)."""
    pairs = case_views(path, views, per_volume, seed)
    labels = [labels_to_model(lab, SIZE) for _, lab in pairs]
    return {"labels": np.stack(labels) if labels else np.zeros((0, SIZE, SIZE), np.uint16)}


def val_sample(path: Path, teacher: SamSession, per_volume: int) -> dict[str, np.ndarray]:
    """Object slices (2D: the image) with model-frame labels; no augmentation."""
    with np.load(path, allow_pickle=False) as data:
        imgs, gts = data["imgs"], data["gts"]
    if gts.ndim == 3:
        zs = choose_slices(gts, per_volume)
        pairs = [(imgs[z], gts[z]) for z in zs]
    else:
        pairs = [(imgs, gts)]
    inputs = np.stack([quantised_input(i) for i, _ in pairs])
    labels = np.stack([labels_to_model(g, SIZE) for _, g in pairs])
    hw = np.asarray([encoder_input(i, SIZE)[1] for i, _ in pairs], dtype=np.int32)
    return {"inputs": inputs, "teacher": teacher_embeddings(inputs, teacher), "labels": labels, "hw": hw}


def load_arrays(files: list[Path], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for path in files:
        with np.load(path) as data:
            for k in keys:
                parts[k].append(data[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def view_source(name: str) -> str:
    """A case file name -> its views' source label ``<dims>Box_<modality>_<source>`` (one source
    tag can hold several modalities: IBSISTS)."""
    return "_".join([*name.split("_")[:2], source_tag(name)])


def slice_sources(files: list[Path]) -> np.ndarray:
    """Every cached slice's source of ``files`` (``<case>.npz``), in :func:`load_arrays` order, as
    ``<dims>Box_<modality>_<source>`` (one source tag can hold several modalities: IBSISTS)."""
    parts = []
    for path in files:
        name = view_source(path.name)
        with np.load(path) as data:
            parts.append(np.full(len(data["hw"]), name))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=str)
