"""Distillation samples: the app's encoder inputs of train-split images (with augmented views)
and validation object slices, each with the teacher's (TinyViT IR) embedding, cached per case."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.preprocessing import encoder_input
from app.routing import case_dims
from app.sessions import SamSession
from train.samples import choose_slices, labels_to_model

SIZE = 256  # the encoder's input side (LiteMedSAM's operating point)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> a random view: flips, a multiple of 90 degrees, gamma in
    [0.7, 1.5], contrast in [0.8, 1.2] about the mean. uint8 out, same channels."""
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    out = np.rot90(out, k=int(rng.integers(0, 4)), axes=(0, 1))
    x = out.astype(np.float32) / 255.0
    x = x ** float(rng.uniform(0.7, 1.5))
    x = (x - x.mean()) * float(rng.uniform(0.8, 1.2)) + x.mean()
    return np.ascontiguousarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))


def case_images(path: Path, per_volume: int) -> list[np.ndarray]:
    """The 2D image, or up to ``per_volume`` evenly spread non-empty slices of a volume."""
    with np.load(path, allow_pickle=False) as data:
        imgs = data["imgs"]
    if case_dims(path.name) != 3:
        return [imgs]
    nonempty = choose_slices(imgs > 0, per_volume)
    return [imgs[z] for z in nonempty]


def quantised_input(image: np.ndarray) -> np.ndarray:
    """The app's encoder input of ``image``, stored as uint8 (3, S, S); /255 gives what both
    teacher and student see (the quantisation step is 1/255 of the min-max range)."""
    x, _ = encoder_input(image, SIZE)
    return np.clip(x[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def content_hw(inputs: np.ndarray, smallest: int = 8) -> np.ndarray:
    """Cached uint8 (B, 3, S, S) -> (B, 2) int (h, w) of the resized image in the model frame: the
    extent of its non-zero pixels (the app pads below and to the right with zeros), at least
    ``smallest``."""
    filled = inputs.max(axis=1) > 0  # (B, S, S)
    rows = [np.flatnonzero(f.any(axis=1)) for f in filled]
    cols = [np.flatnonzero(f.any(axis=0)) for f in filled]
    hw = [(r[-1] + 1 if len(r) else 0, c[-1] + 1 if len(c) else 0) for r, c in zip(rows, cols, strict=True)]
    return np.maximum(np.asarray(hw, dtype=np.int64).reshape(-1, 2), smallest)


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
    rng = np.random.default_rng([seed, *path.name.encode()])
    images = case_images(path, per_volume)
    inputs = np.stack(
        [quantised_input(img if v == 0 else augment(img, rng)) for img in images for v in range(views)]
    ) if images else np.zeros((0, 3, SIZE, SIZE), np.uint8)  # fmt: skip
    return {"inputs": inputs, "teacher": teacher_embeddings(inputs, teacher)}


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
