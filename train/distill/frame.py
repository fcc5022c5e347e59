"""The encoder's input frame, shared by the CPU loop (``samples``, ``loop``) and the GPU trainer
(``gpu``): numpy only, so that it runs where OpenVINO does not."""

from __future__ import annotations

import numpy as np

SIZE = 256  # the encoder's input side (LiteMedSAM's operating point): every view's frame


def content_hw(inputs: np.ndarray, smallest: int = 8) -> np.ndarray:
    """Cached uint8 (B, 3, S, S) -> (B, 2) int (h, w) of the resized image in the model frame: the
    extent of its non-zero pixels (the app pads below and to the right with zeros), at least
    ``smallest``."""
    filled = inputs.max(axis=1) > 0  # (B, S, S)
    rows = [np.flatnonzero(f.any(axis=1)) for f in filled]
    cols = [np.flatnonzero(f.any(axis=0)) for f in filled]
    hw = [(r[-1] + 1 if len(r) else 0, c[-1] + 1 if len(c) else 0) for r, c in zip(rows, cols, strict=True)]
    return np.maximum(np.asarray(hw, dtype=np.int64).reshape(-1, 2), smallest)
