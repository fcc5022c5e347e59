"""Training batches from cached samples: one (slice, object) per row, jittered boxes.

Frames: everything here is in the model frame (size x size, the resized image top-left).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.postprocessing import mask_bbox


@dataclass(frozen=True)
class Pool:
    """All cached samples of a set of cases, in memory.

    embeddings (N, 256, 64, 64) float16; labels (N, S, S) uint16; hw (N, 2) (newh, neww);
    objects (M, 2) int64 rows of (sample index, label value); prompts (N, L + 1, 4) float32,
    the app's own prompts (3D caches, else None; NaN where absent).
    """

    embeddings: np.ndarray
    labels: np.ndarray
    hw: np.ndarray
    objects: np.ndarray
    prompts: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.labels.shape[-1])


def objects_of(labels: np.ndarray) -> np.ndarray:
    """(N, S, S) labels -> (M, 2) rows (sample, label) for every label present, label > 0."""
    rows = [(i, int(v)) for i, lab in enumerate(labels) for v in np.unique(lab) if v > 0]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def pad_prompts(parts: list[np.ndarray]) -> np.ndarray:
    """Per-case (S_i, L_i + 1, 4) prompts -> one (sum S_i, max L_i + 1, 4), NaN-padded."""
    width = max(p.shape[1] for p in parts)
    out = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=np.nan) for p in parts]
    return np.concatenate(out).astype(np.float32)


def load_pool(files: list[Path]) -> Pool:
    embeddings, labels, hw, prompts = [], [], [], []
    for path in files:
        with np.load(path) as data:
            embeddings.append(data["embeddings"])
            labels.append(data["labels"])
            hw.append(data["hw"])
            if "prompts" in data.files:
                prompts.append(data["prompts"])
    labels_all = np.concatenate(labels)
    app = pad_prompts(prompts) if prompts and len(prompts) == len(files) else None
    return Pool(np.concatenate(embeddings), labels_all, np.concatenate(hw), objects_of(labels_all), app)


def object_box(mask: np.ndarray) -> np.ndarray:
    """(S, S) bool, not empty -> (4,) float32 XYXY of its pixels (inclusive), as the challenge boxes."""
    box = mask_bbox(mask)
    if box is None:
        msg = "object_box: empty mask"
        raise ValueError(msg)
    return box.astype(np.float32)


def jitter_box(box: np.ndarray, rng: np.random.Generator, shift: int, size: int) -> np.ndarray:
    """Move each side by an integer in [-shift, shift] (the baseline's training used 5), keep
    the box ordered and inside [0, size - 1]."""
    moved = box + rng.integers(-shift, shift + 1, size=4)
    x0, x1 = sorted((moved[0], moved[2]))
    y0, y1 = sorted((moved[1], moved[3]))
    return np.clip(np.array([x0, y0, x1, y1], dtype=np.float32), 0, size - 1)


APP_PROMPT_SHIFT = 2  # jitter of the app's prompts: the previous mask is never perfect


def training_box(
    pool: Pool,
    sample: int,
    label: int,
    mask: np.ndarray,
    rng: np.random.Generator,
    shift: int,
    app_share: float,
) -> np.ndarray:
    """A training prompt: with probability ``app_share`` the app's own prompt for this object
    and slice (when the cache has one), lightly jittered; else the jittered tight box."""
    if app_share > 0 and rng.random() < app_share:
        if pool.prompts is None:
            msg = "app prompts asked for, but the cache has none (3D caches only; delete an older cache)"
            raise ValueError(msg)
        prompt = pool.prompts[sample, label] if label < pool.prompts.shape[1] else None
        if prompt is not None and np.isfinite(prompt).all():
            return jitter_box(prompt, rng, APP_PROMPT_SHIFT, pool.size)
    return jitter_box(object_box(mask), rng, shift, pool.size)


def valid_masks(hw: np.ndarray, size: int) -> np.ndarray:
    """(N, 2) resized image sizes (h, w) -> (N, 1, S, S) float32, 1 inside the resized image."""
    out = np.zeros((len(hw), 1, size, size), np.float32)
    for i, (h, w) in enumerate(hw):
        out[i, 0, :h, :w] = 1.0
    return out


def make_batch(
    pool: Pool, rows: np.ndarray, rng: np.random.Generator | None, shift: int, app_share: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``pool.objects`` -> (embeddings (B, 256, 64, 64) f32, boxes (B, 4) f32,
    targets (B, 1, S, S) f32, valid (B, 1, S, S) f32: 1 inside the resized image). No jitter
    when ``rng`` is None (validation: tight boxes); ``app_share``: see :func:`training_box`."""
    size = pool.size
    emb = pool.embeddings[pool.objects[rows, 0]].astype(np.float32)
    boxes, targets = [], []
    for sample, label in pool.objects[rows]:
        mask = pool.labels[sample] == label
        boxes.append(
            object_box(mask)
            if rng is None
            else training_box(pool, sample, label, mask, rng, shift, app_share)
        )
        targets.append(mask[None].astype(np.float32))
    valid = valid_masks(pool.hw[pool.objects[rows, 0]], size)
    return emb, np.stack(boxes), np.stack(targets), valid
