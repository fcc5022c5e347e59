"""Per-box, content-aware routing: does this box look like what a specialist was trained on?

The file name gives the modality; whether *this* image and *this* box resemble the specialist's
training data is decided here, from what the runtime already has: the image embedding (shared
by every decoder) and the box. A box the specialist has not seen the like of goes to
LiteMedSAM's decoder. The decision costs no encoder call and well under a millisecond per box.

Features of one box (all in the model frame: S x S pixels, embedding grid G x G, G = S / 4):
    global   (512,) per-channel mean and std of the embedding over the image part of the grid
    region   (256,) per-channel mean of the embedding inside the box (at least one grid cell)
    geometry (2,)   log(box area / image area), log(box width / box height)
Each block is standardised with the reference's own mean and spread; the distance between two
boxes is the root of the mean, over the three blocks, of each block's mean squared difference
(so 512 numbers of image statistics cannot drown the two of geometry). The novelty of a box is
its distance to the nearest reference box; the specialist serves it when novelty <= threshold.

The reference (``router.npz`` next to the specialist's decoder, written by
``train/router_fit.py``) holds the training boxes' features (fp16), the standardisation and
the threshold; nothing of the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

GRID_STRIDE = 4  # model-frame pixels per embedding cell (256 -> 64)
Layout = dict[str, tuple[int, int]]  # block name -> (start, stop) in a feature vector
BLOCKS: Layout = {"global": (0, 512), "region": (512, 768), "geometry": (768, 770)}
N_FEATURES = 770


def image_statistics(embedding: np.ndarray, resized_hw: tuple[int, int]) -> np.ndarray:
    """(256, G, G) embedding -> (512,) float32 per-channel mean and std over the image part."""
    gh = max(1, -(-int(resized_hw[0]) // GRID_STRIDE))
    gw = max(1, -(-int(resized_hw[1]) // GRID_STRIDE))
    part = embedding[:, :gh, :gw].reshape(embedding.shape[0], -1)
    return np.concatenate([part.mean(axis=1), part.std(axis=1)]).astype(np.float32)


def box_features(
    embedding: np.ndarray, box_model: np.ndarray, resized_hw: tuple[int, int], stats: np.ndarray | None = None
) -> np.ndarray:
    """(256, G, G) embedding, (4,) model-frame XYXY box, (newh, neww) -> (N_FEATURES,) float32.

    ``stats``: :func:`image_statistics` of the same embedding, when already computed."""
    if stats is None:
        stats = image_statistics(embedding, resized_hw)
    grid = embedding.shape[-1]
    x0, y0, x1, y1 = (float(v) for v in box_model)
    gx0 = int(np.clip(np.floor(x0 / GRID_STRIDE), 0, grid - 1))
    gy0 = int(np.clip(np.floor(y0 / GRID_STRIDE), 0, grid - 1))
    gx1 = int(np.clip(np.ceil((x1 + 1) / GRID_STRIDE), gx0 + 1, grid))
    gy1 = int(np.clip(np.ceil((y1 + 1) / GRID_STRIDE), gy0 + 1, grid))
    region = embedding[:, gy0:gy1, gx0:gx1].reshape(embedding.shape[0], -1).mean(axis=1)
    image_area = max(1.0, float(resized_hw[0]) * float(resized_hw[1]))
    bw, bh = max(1.0, x1 - x0 + 1), max(1.0, y1 - y0 + 1)
    geometry = np.array([np.log(bw * bh / image_area), np.log(bw / bh)], dtype=np.float32)
    return np.concatenate([stats, region.astype(np.float32), geometry])


@dataclass(frozen=True)
class Standardised:
    """Standardised reference rows and a threshold on the distance to the nearest of them, over
    the blocks of ``layout`` (a router's boxes, an image screen's images)."""

    features: np.ndarray  # (M, F) float32, standardised
    center: np.ndarray  # (F,) subtracted before scaling
    scale: np.ndarray  # (F,) divided by, > 0
    threshold: float
    facts: dict[str, Any] = field(default_factory=dict)
    layout: ClassVar[Layout] = BLOCKS

    def standardise(self, feats: np.ndarray) -> np.ndarray:
        return ((np.asarray(feats, np.float32) - self.center) / self.scale).astype(np.float32)

    def nearest(self, feats: np.ndarray) -> np.ndarray:
        """(K, F) raw features -> (K,) distance to the nearest reference row."""
        return nearest_distance(self.standardise(np.atleast_2d(feats)), self.features, self.layout)


@dataclass(frozen=True)
class Reference(Standardised):
    """A specialist's domain: standardised training box features and the acceptance threshold."""

    def novelty(self, feats: np.ndarray) -> np.ndarray:
        """(K, N_FEATURES) raw features -> (K,) distance to the nearest reference row."""
        return self.nearest(feats)

    @cached_property
    def features64(self) -> np.ndarray:
        """``features`` as float64, converted once (the router scores every box against it)."""
        return self.features.astype(np.float64)

    def image_part(self, stats: np.ndarray) -> np.ndarray:
        """(512,) raw image statistics -> (M,) the global block's mean squared difference to
        every reference row: the same for every box of one image."""
        start, stop = BLOCKS["global"]
        std = (stats - self.center[start:stop]) / self.scale[start:stop]  # (512,)
        padded = np.zeros((1, N_FEATURES), dtype=np.float32)
        padded[0, start:stop] = std
        return block_mean_squares(padded, self.features64, ("global",))[0]

    def box_novelty(self, feats: np.ndarray, image_part: np.ndarray) -> float:
        """:meth:`novelty` of one box's (N_FEATURES,) raw features, given its image's
        :meth:`image_part`: only the box's own blocks are compared here."""
        own = block_mean_squares(self.standardise(feats[None]), self.features64, ("region", "geometry"))[0]
        return float(np.sqrt((image_part + own).min() / len(BLOCKS))) if len(own) else float("inf")


def block_mean_squares(
    a: np.ndarray, b: np.ndarray, blocks: tuple[str, ...] = tuple(BLOCKS), layout: Layout = BLOCKS
) -> np.ndarray:
    """(K, F), (M, F) standardised -> (K, M) float64: the sum over ``blocks`` of ``layout`` of
    each block's mean squared difference (``b`` already float64 is used as is: a reference
    converts once)."""
    total = np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    for name in blocks:
        start, stop = layout[name]
        x = a[:, start:stop].astype(np.float64)
        y = b[:, start:stop].astype(np.float64, copy=False)
        sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
        total += np.maximum(sq, 0.0) / (stop - start)
    return total


def block_distances(a: np.ndarray, b: np.ndarray, layout: Layout = BLOCKS) -> np.ndarray:
    """(K, F), (M, F) standardised -> (K, M) distances: sqrt(mean over the blocks of ``layout``
    of the block's mean squared difference)."""
    return np.sqrt(block_mean_squares(a, b, tuple(layout), layout) / len(layout))


def nearest_distance(a: np.ndarray, b: np.ndarray, layout: Layout = BLOCKS) -> np.ndarray:
    """(K, F), (M, F) -> (K,) distance of each row of ``a`` to its nearest row of ``b``."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    return block_distances(a, b, layout).min(axis=1)


REFERENCE_KEYS = ("features", "center", "scale", "threshold")
# A standardised reference table, as stored: (M, F) features, (F,) center, (F,) scale, threshold.
Table = tuple[np.ndarray, np.ndarray, np.ndarray, float]


def save_table(path: Path, table: Table) -> None:
    """Write a reference table (a router's, an image screen's) as an npz (features fp16)
    atomically."""
    features, center, scale, threshold = table
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(
        tmp,
        features=features.astype(np.float16),
        center=center.astype(np.float32),
        scale=scale.astype(np.float32),
        threshold=np.float32(threshold),
    )
    tmp.replace(path)


def load_table(path: Path, what: str, n_features: int) -> Table:
    """The reference table stored at ``path`` by :func:`save_table`, checked: ``what`` names it
    in errors, ``n_features`` is its feature width."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in REFERENCE_KEYS if k not in data.files]
        if missing:
            msg = f"{what} {path} lacks {missing}"
            raise ValueError(msg)
        features, center, scale = (data[k].astype(np.float32) for k in REFERENCE_KEYS[:3])
        threshold = float(data["threshold"])
    if features.ndim != 2 or features.shape[1] != n_features or scale.min() <= 0:
        msg = f"{what} {path}: features {features.shape}, expected (M, {n_features})"
        raise ValueError(msg)
    return features, center, scale, threshold


def save_reference(path: Path, ref: Reference) -> None:
    """Write ``ref`` as an npz (features fp16) atomically."""
    save_table(path, (ref.features, ref.center, ref.scale, ref.threshold))


def load_reference(path: Path) -> Reference:
    """The router reference stored at ``path`` (see :func:`save_reference`)."""
    return Reference(*load_table(path, "router reference", N_FEATURES))


@dataclass
class Decision:
    accepted: bool
    novelty: float


class BoxRouter:
    """Chooses, per box, the session whose decoder segments it: ``specialist`` when the box is
    within its reference's domain, else ``general``. Keeps every decision (for the log)."""

    def __init__(self, specialist: Any, general: Any, reference: Reference) -> None:
        self.specialist, self.general, self.reference = specialist, general, reference
        self.decisions: list[Decision] = []
        # (embedding, its statistics, their reference.image_part): computed once per image
        self._image: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, embedding: np.ndarray, box_model: np.ndarray, resized_hw: tuple[int, int]) -> Any:
        """(1, 256, G, G) embedding, (4,) model-frame box, (newh, neww) -> the session to decode with."""
        emb = embedding[0]
        if self._image is None or self._image[0] is not embedding:
            stats = image_statistics(emb, resized_hw)
            self._image = (embedding, stats, self.reference.image_part(stats))
        feats = box_features(emb, box_model, resized_hw, self._image[1])
        score = self.reference.box_novelty(feats, self._image[2])
        accepted = score <= self.reference.threshold
        self.decisions.append(Decision(accepted, score))
        return self.specialist if accepted else self.general

    def summary(self, specialist_key: str, general_key: str) -> str:
        """One line: how many boxes each model served and why."""
        n = len(self.decisions)
        took = [d for d in self.decisions if d.accepted]
        scores = np.array([d.novelty for d in self.decisions]) if n else np.zeros(0)
        where = f"novelty {scores.min():.2f}-{scores.max():.2f}" if n else "no boxes"
        return (
            f"{specialist_key} served {len(took)}/{n} boxes, {general_key} {n - len(took)} "
            f"({where}; threshold {self.reference.threshold:.2f}: above it a box is unlike "
            f"{specialist_key}'s training data)"
        )
