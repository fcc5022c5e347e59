"""Image and box geometry into the model frame (LiteMedSAM's operating point).

Frames: ``*_orig`` = pixels of the case image (H, W); ``*_model`` = pixels of the padded square
encoder input (S, S). The resized image occupies the top-left (newh, neww) of the model frame.
"""

from __future__ import annotations

import cv2
import numpy as np


def resized_hw(original_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(newh, neww) with the longest side scaled to ``size``: int(side * scale + 0.5), at least 1.

    The floor of 1 px only matters for extreme aspect ratios (e.g. 1 x 513), where the baseline's
    formula gives 0 and OpenCV fails.
    """
    h, w = original_hw
    scale = size / max(h, w)
    return max(int(h * scale + 0.5), 1), max(int(w * scale + 0.5), 1)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (H, W, 3) uint8 (grey repeated)."""
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


def encoder_input(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W) or (H, W, 3) uint8 -> ((1, 3, S, S) float32 in [0, 1], (newh, neww)).

    INTER_AREA resize of the longest side, min-max over the resized image (all channels
    jointly), zero padding bottom/right after normalising. A grey image is resized first and
    repeated to 3 channels after (the same values: the resize treats channels independently),
    so no full-resolution RGB copy is made.
    """
    newh, neww = resized_hw(image.shape[:2], size)
    resized = to_rgb(cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA))  # (newh, neww, 3)
    resized = resized.astype(np.float32)
    lo, hi = float(resized.min()), float(resized.max())
    normed = (resized - lo) / max(hi - lo, 1e-8)
    padded = np.zeros((size, size, 3), dtype=np.float32)
    padded[:newh, :neww] = normed
    return padded.transpose(2, 0, 1)[None], (newh, neww)  # (1, 3, S, S)


def box_to_model(box_xyxy_orig: np.ndarray, original_hw: tuple[int, int], size: int) -> np.ndarray:
    """(4,) XYXY original pixels -> (4,) float32 model-frame pixels, truncated like LiteMedSAM."""
    ratio = size / max(original_hw)
    return np.floor(np.asarray(box_xyxy_orig, dtype=np.float64) * ratio).astype(np.float32)


def clip_box_2d(box_xyxy: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray | None:
    """Order the corners, clip to [0, W-1] x [0, H-1]; None when the box misses the image."""
    h, w = original_hw
    x0, x1 = sorted((float(box_xyxy[0]), float(box_xyxy[2])))
    y0, y1 = sorted((float(box_xyxy[1]), float(box_xyxy[3])))
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        return None
    return np.array([max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)], dtype=np.float64)


def clip_z_range(z_min: float, z_max: float, depth: int) -> tuple[int, int] | None:
    """Inclusive slice range [z_min, z_max] ordered and clipped to [0, D-1]; None if outside.

    z_max is inclusive (the challenge baseline's final convention, and our corpus' tight
    boxes: the last labelled slice is z_max). z_min == z_max is a one-slice object.
    """
    lo, hi = sorted((float(z_min), float(z_max)))
    lo_i, hi_i = int(np.ceil(lo)), int(np.floor(hi))
    if hi_i < 0 or lo_i > depth - 1 or lo_i > hi_i:
        return None
    return max(lo_i, 0), min(hi_i, depth - 1)
