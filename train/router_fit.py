"""Fit a specialist's router reference (app/novelty.py) from its training cases, as the app sees them.

Features are computed exactly as at run time: the case is read by the app's loader, the image
(2D) or each object's key slice (3D) goes through the app's preprocessing and the exported
encoder, and each box is scaled to the model frame by the app's rule. Then:
- at most ``max_rows`` reference rows, spread evenly over the cases (a 100-box microscopy image
  cannot crowd out a one-box fundus photograph);
- standardisation per feature (mean, std with a floor per block, so a feature that never varied
  in training cannot make every new box look infinitely far);
- threshold = the ``quantile`` of out-of-fold nearest-neighbour distances: each training case
  measured against the reference rows of the *other* folds (folds by case), i.e. how far a new
  case of a training source typically lies from the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.infer_3d import make_tracks
from app.novelty import (
    BLOCKS,
    N_FEATURES,
    Layout,
    Reference,
    box_features,
    image_statistics,
    nearest_distance,
)
from app.npz_io import load_case
from app.preprocessing import box_to_model, clip_box_2d, encoder_input
from app.sessions import SamSession


@dataclass(frozen=True)
class RouterConfig:
    quantile: float = 0.95
    max_rows: int = 512
    folds: int = 5
    seed: int = 0
    min_scale: float = 0.05  # per block: std floor = min_scale * the block's median std (geometry: 0.1)


GEOMETRY_MIN_SCALE = 0.1  # log units: a box area or aspect within ~10% counts as the same


def case_box_features(path: Path, session: SamSession) -> np.ndarray:
    """(K, N_FEATURES) features of every box of a case that the app would segment."""
    case = load_case(path)
    size = session.input_size
    rows: list[np.ndarray] = []
    if case.is_3d:
        tracks = make_tracks(case.boxes, case.image.shape, size)
        for z in sorted({t.z_key for t in tracks}):
            tensor, resized = encoder_input(case.image[z], size)
            emb = session.encode(tensor)[0]
            stats = image_statistics(emb, resized)
            rows += [box_features(emb, t.box_model, resized, stats) for t in tracks if t.z_key == z]
    elif len(case.boxes):
        tensor, resized = encoder_input(case.image, size)
        emb = session.encode(tensor)[0]
        stats = image_statistics(emb, resized)
        hw = case.image.shape[:2]
        for box in case.boxes:
            clipped = clip_box_2d(box, hw)
            if clipped is not None:
                rows.append(box_features(emb, box_to_model(clipped, hw, size), resized, stats))
    return np.stack(rows) if rows else np.zeros((0, N_FEATURES), np.float32)


def spread_rows(per_case: list[np.ndarray], max_rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """At most ``max_rows`` rows in all, at most an even share per case (chosen at random)."""
    cap = max(1, max_rows // max(1, len(per_case)))
    return [f if len(f) <= cap else f[np.sort(rng.choice(len(f), cap, replace=False))] for f in per_case]


def standardisation(
    feats: np.ndarray,
    min_scale: float,
    layout: Layout = BLOCKS,
    fixed_floors: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(M, F) -> (center, scale): mean and std, floored per block of ``layout``: a block named in
    ``fixed_floors`` (default: the router's geometry) at that value, any other at ``min_scale``
    times its median std."""
    floors = {"geometry": GEOMETRY_MIN_SCALE} if fixed_floors is None else fixed_floors
    center = feats.mean(axis=0)
    std = feats.std(axis=0)
    scale = np.empty_like(std)
    for name, (start, stop) in layout.items():
        block = std[start:stop]
        floor = floors[name] if name in floors else min_scale * float(np.median(block)) + 1e-6
        scale[start:stop] = np.maximum(block, floor)
    return center.astype(np.float32), scale.astype(np.float32)


def out_of_fold_distances(per_case: list[np.ndarray], folds: int, rng: np.random.Generator) -> np.ndarray:
    """Nearest-neighbour distance of every row to the rows of the cases in other folds."""
    n = len(per_case)
    fold_of = rng.permutation(n) % max(2, min(folds, n))
    out = []
    for k in np.unique(fold_of):
        inside = [f for f, g in zip(per_case, fold_of, strict=True) if g == k and len(f)]
        outside = [f for f, g in zip(per_case, fold_of, strict=True) if g != k and len(f)]
        if inside and outside:
            out.append(nearest_distance(np.concatenate(inside), np.concatenate(outside)))
    return np.concatenate(out) if out else np.zeros(0)


def fit_reference(per_case_raw: list[np.ndarray], cfg: RouterConfig) -> Reference:
    """The reference of a specialist from its training cases' raw box features (one array per case)."""
    rng = np.random.default_rng(cfg.seed)
    kept = [f for f in spread_rows(per_case_raw, cfg.max_rows, rng) if len(f)]
    if len(kept) < 2:
        msg = f"a router needs boxes from at least 2 training cases, got {len(kept)}"
        raise ValueError(msg)
    center, scale = standardisation(np.concatenate(kept), cfg.min_scale)
    std_cases = [((f - center) / scale).astype(np.float32) for f in kept]
    oof = out_of_fold_distances(std_cases, cfg.folds, rng)
    threshold = float(np.quantile(oof, cfg.quantile))
    facts = {
        "threshold": round(threshold, 4),
        "reference_rows": int(sum(len(f) for f in std_cases)),
        "reference_cases": len(std_cases),
        "out_of_fold_quantile": cfg.quantile,
        "out_of_fold_median": round(float(np.median(oof)), 4),
    }
    return Reference(np.concatenate(std_cases), center, scale, threshold, facts)


def acceptance(reference: Reference, feats: np.ndarray) -> tuple[int, int]:
    """(boxes accepted, boxes) for raw features of one case."""
    if len(feats) == 0:
        return 0, 0
    return int((reference.novelty(feats) <= reference.threshold).sum()), len(feats)
