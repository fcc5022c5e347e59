"""A box decoded on a window of its image's logits (issue 13's decoder lever).

The decoder's upscaling (two 2x2 transposed convolutions of stride 2, a LayerNorm over channels,
GELU, and the per-pixel product with the mask token's weights) turns each embedding cell into its
own CELL x CELL block of logits and into nothing else. So the logits of a window of cells, the
upscaling run on those cells alone, are the whole decoder's logits there, bit for bit
(``sessions.decoder_for_windows``; the transformer before it still sees the whole image). On an
AMD EPYC with AVX2, 8 boxes per call: 16.1-16.8 instead of 22.8-24.2 ms per box for a 16-cell
window (an ad hoc timing, 2026-12-07).

What is outside the window is not computed. A box is decoded on a window only when the box and
MARGIN cells around it fit in one, and its logits are kept only when the window is closed: no
positive logit on a rim side beyond which the image goes on. Otherwise the box is decoded whole.
A mask that leaves its box's window through the rim is caught; one with a separate part outside
the window would be missed, which the agreement report measures (README, Conventions).

Frames: the model frame is (S, S) = (GRID * CELL)^2 logits; a window's corner is (row, col) of
its top-left cell on the (GRID, GRID) embedding grid.
"""

from __future__ import annotations

import math

import numpy as np

GRID = 64  # embedding cells per side
CELL = 4  # logits per cell and side (the upscaling's 4x)
WINDOW = 16  # cells per window side (0: never decode on a window)
MARGIN = 4  # cells kept between a box and its window's edge (where the frame allows)
OUTSIDE = -1.0e4  # the logit written outside a window: far below any the decoder gives

Corner = tuple[int, int]  # (row, col) of a window's top-left cell


def _span(lo: float, hi: float) -> tuple[int, int]:
    """Model-frame pixel span [lo, hi] -> (first cell, cell count) that covers it."""
    last = GRID * CELL - 1
    first = math.floor(min(max(lo, 0.0), last) / CELL)
    end = math.floor(min(max(hi, 0.0), last) / CELL)
    return first, max(end - first, 0) + 1


def _start(first: int, count: int, window: int) -> int:
    """The window's first cell along one axis: centred on the box's cells, moved inside the grid."""
    return min(max(first - (window - count) // 2, 0), GRID - window)


def window_corner(box_model: np.ndarray, window: int = WINDOW, margin: int = MARGIN) -> Corner | None:
    """(4,) model-frame XYXY box -> the corner of the ``window``-cell window that holds the box
    with ``margin`` cells around it (centred on the box; at the frame's edge, moved inside), or
    None when the box is too large for one (or windows are off: ``window`` 0)."""
    if not 0 < window <= GRID:
        return None
    x0, y0, x1, y1 = (float(v) for v in box_model)
    (row, rows), (col, cols) = _span(y0, y1), _span(x0, x1)
    if max(rows, cols) + 2 * margin > window:
        return None
    return _start(row, rows, window), _start(col, cols, window)


def rim_positive(logits_window: np.ndarray, corner: Corner, resized: tuple[int, int]) -> bool:
    """Whether a window's (W*CELL, W*CELL) logits are positive somewhere on a rim side beyond
    which the image's content (the model frame's [:newh, :neww]) goes on: there the mask may go
    on outside the window too. Sides at the frame's or the content's edge have nothing beyond."""
    side = logits_window.shape[0]
    top, left = corner[0] * CELL, corner[1] * CELL
    newh, neww = resized
    h, w = min(side, newh - top), min(side, neww - left)  # the window's part inside the content
    if h <= 0 or w <= 0:
        return False
    inside = logits_window[:h, :w] > 0  # (h, w)
    return bool(
        (top > 0 and inside[0].any())
        or (left > 0 and inside[:, 0].any())
        or (top + side < newh and inside[h - 1].any())
        or (left + side < neww and inside[:, w - 1].any())
    )


def full_logits(logits_window: np.ndarray, corner: Corner) -> np.ndarray:
    """A window's (W*CELL, W*CELL) logits -> the (S, S) model-frame logits: the window's own at
    its place, OUTSIDE elsewhere."""
    side = GRID * CELL
    out = np.full((side, side), OUTSIDE, dtype=np.float32)  # (S, S)
    top, left = corner[0] * CELL, corner[1] * CELL
    out[top : top + logits_window.shape[0], left : left + logits_window.shape[1]] = logits_window
    return out
