"""The challenge's accuracy metrics (BASE evaluation/compute_metrics.py), on DeepMind's
``surface-distance`` package for the surface part.

DSC(case) = mean over labels 1..gts.max() of Dice (NaN for a label empty in both, which makes
the mean NaN, as in the original). NSD(case) = 0 when DSC(case) <= 0.2, else the mean over
labels of the surface Dice at 2 mm (3D, with spacing) or 2 px (2D: arrays as (H, W, 1) with
spacing (1, 1, 1), exactly as the challenge computed it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import surface_distance

TOLERANCE = 2.0
NSD_DSC_GATE = 0.2

# How a file's ``spacing`` maps onto the (D, H, W) array axes.
#   zyx:       stored (z, y, x), as in ../shared/data (our corpus): used as is.
#   xyz:       stored (x, y, z), as in the challenge files: reversed to (z, y, x), physically right.
#   xyz-as-is: stored (x, y, z) and used as is on (D, H, W): the official script's quirk, for
#              reproducing leaderboard numbers only.
SPACING_ORDERS = ("zyx", "xyz", "xyz-as-is")


def spacing_for_axes(spacing: tuple[float, ...], order: str) -> tuple[float, float, float]:
    """Spacing per (D, H, W) axis from the stored triple, per ``order``."""
    if order not in SPACING_ORDERS:
        msg = f"unknown spacing order {order!r}; valid: {SPACING_ORDERS}"
        raise ValueError(msg)
    s = tuple(float(v) for v in spacing)
    if len(s) != 3:
        msg = f"spacing must have 3 values, got {s}"
        raise ValueError(msg)
    return (s[2], s[1], s[0]) if order == "xyz" else (s[0], s[1], s[2])


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """2|A n B| / (|A| + |B|); NaN when both are empty."""
    total = int(gt.sum()) + int(pred.sum())
    return float("nan") if total == 0 else 2.0 * int((gt & pred).sum()) / total


def surface_dice(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Normalised surface Dice at TOLERANCE of two 3D bool masks (NaN when both are empty).

    One empty mask scores 0 (no surface within tolerance), decided here: the library's own
    empty-mask path uses ``np.Inf``, which NumPy 2 removed."""
    has_gt, has_pred = bool(gt.any()), bool(pred.any())
    if not (has_gt and has_pred):
        return 0.0 if (has_gt or has_pred) else float("nan")
    dists = surface_distance.compute_surface_distances(gt, pred, spacing)
    return float(surface_distance.compute_surface_dice_at_tolerance(dists, TOLERANCE))


@dataclass(frozen=True)
class CaseScore:
    dsc: float
    nsd: float
    label_dsc: tuple[float, ...]


def score_case(gts: np.ndarray, segs: np.ndarray, spacing: tuple[float, float, float] | None) -> CaseScore:
    """Challenge DSC and NSD of one case. 2D (H, W) when spacing is None, else 3D (D, H, W)."""
    if gts.shape != segs.shape:
        msg = f"segs shape {segs.shape} differs from gts shape {gts.shape}"
        raise ValueError(msg)
    if spacing is None:
        gts, segs, spacing = gts[..., None], segs[..., None], (1.0, 1.0, 1.0)  # (H, W, 1)
    labels = range(1, int(gts.max()) + 1)
    label_dsc = tuple(dice(gts == i, segs == i) for i in labels)
    dsc = float(np.mean(label_dsc)) if label_dsc else float("nan")
    if not dsc > NSD_DSC_GATE:  # also NaN
        return CaseScore(dsc, 0.0 if dsc == dsc else float("nan"), label_dsc)
    nsd = float(np.mean([surface_dice(gts == i, segs == i, spacing) for i in labels]))
    return CaseScore(dsc, nsd, label_dsc)
