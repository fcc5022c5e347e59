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
