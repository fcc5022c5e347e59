"""Model-frame logits back to masks in the original frame, and masks to prompt boxes."""

from __future__ import annotations

import cv2
import numpy as np

from app.preprocessing import resized_hw

# Margin (model-frame pixels) around the previous slice's mask when it prompts the next slice.
PROPAGATION_MARGIN = 3


def logits_to_mask(
    logits_model: np.ndarray, resized: tuple[int, int], original_hw: tuple[int, int]
) -> np.ndarray:
    """(L, L) low-res logits (L = 256) -> (H, W) bool mask.

    The logits cover the padded (S, S) input with L == S (true of every model we ship); crop the
    part holding the image, resize bilinear (half-pixel centres, as torch align_corners=False)
    and threshold at 0.
    """
    newh, neww = resized
    h, w = original_hw
    crop = np.ascontiguousarray(logits_model[:newh, :neww])  # (newh, neww)
    up = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)  # (H, W) float32
    return up > 0


def mask_bbox(mask: np.ndarray) -> np.ndarray | None:
    """(H, W) bool -> (4,) XYXY inclusive pixel box of the True pixels, or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def propagation_box(prev_mask: np.ndarray, label: int, size: int) -> np.ndarray | None:
    """Model-frame prompt from the previous slice's mask, as the baseline computes it.

    The mask, painted with its label value (capped at 255, uint8), is resized to the model frame
    with INTER_AREA; the box of its non-zero pixels, +/- PROPAGATION_MARGIN, clamped to [0, S],
    is the prompt. The label value matters at the border: INTER_AREA rounds the covered fraction
    times the value, so label 1 keeps pixels at least half covered and larger labels keep
    smaller fractions. This is LiteMedSAM's operating point, kept on purpose (README,
    Conventions). None when nothing survives the resize (caller falls back to the original box).
    """
    newh, neww = resized_hw(prev_mask.shape, size)
    painted = prev_mask.astype(np.uint8) * np.uint8(min(label, 255))
    small = cv2.resize(painted, (neww, newh), interpolation=cv2.INTER_AREA)  # (newh, neww)
    box = mask_bbox(small > 0)
    if box is None:
        return None
    box[:2] -= PROPAGATION_MARGIN
    box[2:] += PROPAGATION_MARGIN
    return np.clip(box, 0, size).astype(np.float32)


def paint(labels: np.ndarray, mask: np.ndarray, label: int) -> None:
    """labels[mask] = max(labels, label): "the later box wins", independent of paint order."""
    region = labels[mask]
    labels[mask] = np.maximum(region, np.uint16(label))
