"""Scanner intensities -> the uint8 the models were trained on, per modality, as the corpus
was made (MedSAM's pre_CT_MR.py; ../shared/data SOURCES.md conversion notes).

- CT: clip to a window in HU (the sidecar's ``window``, else DEFAULT_CT_WINDOW, soft tissue
  W400 L40), then scale the window to 0..255.
- every other modality: clip to the 0.5-99.5 percentiles of the voxels above 0, scale to
  0..255, and voxels that were 0 stay 0.
- an image already stored as uint8 is taken as scaled, exactly as the npz path takes it.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CT_WINDOW = (-160.0, 240.0)
PERCENTILES = (0.5, 99.5)


def scale_window(data: np.ndarray, low: float, high: float) -> np.ndarray:
    clipped = np.clip(data.astype(np.float32), low, high)
    return ((clipped - low) * (255.0 / (high - low))).astype(np.uint8)  # truncation, as pre_CT_MR.py


def to_uint8(data: np.ndarray, modality: str | None, window: tuple[float, float] | None) -> np.ndarray:
    """``data`` (any real dtype) -> uint8 by the rule of ``modality`` (see the module text)."""
    if data.dtype == np.uint8:
        return data
    if modality == "CT":
        return scale_window(data, *(window or DEFAULT_CT_WINDOW))
    if window is not None:
        return scale_window(data, *window)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(positive, PERCENTILES)
    if high <= low:
        high = low + 1.0
    out = scale_window(data, float(low), float(high))
    out[data == 0] = 0
    return out
