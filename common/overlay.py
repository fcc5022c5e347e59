"""Overlay pictures: image + boxes + label contours, written as PNG with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# BGR colours for labels 1, 2, ... (cycled).
PALETTE = [(60, 200, 255), (80, 255, 80), (255, 120, 60), (200, 80, 255), (0, 220, 220), (255, 255, 0)]


def _colour(label: int) -> tuple[int, int, int]:
    return PALETTE[(label - 1) % len(PALETTE)]


def overlay_2d(
    image: np.ndarray, labels: np.ndarray, boxes: np.ndarray | None, gts: np.ndarray | None = None
) -> np.ndarray:
    """(H, W[, 3]) uint8 image, (H, W) labels -> (H, W, 3) BGR picture.

    Prediction: filled at 35% plus a contour; ground truth (if given): thin white contour;
    boxes: thin rectangles in the label colour.
    """
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    pic = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    fill = pic.copy()
    thick = max(1, round(max(pic.shape[:2]) / 400))
    for label in np.unique(labels[labels > 0]):
        mask = (labels == label).astype(np.uint8)
        fill[mask > 0] = _colour(int(label))
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(pic, contours, -1, _colour(int(label)), thick)
    pic = cv2.addWeighted(fill, 0.35, pic, 0.65, 0)
    if gts is not None:
        for label in np.unique(gts[gts > 0]):
            contours, _ = cv2.findContours(
                (gts == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(pic, contours, -1, (255, 255, 255), thick)
    for label, box in enumerate([] if boxes is None else boxes, start=1):
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(pic, (x0, y0), (x1, y1), _colour(label), thick)
    return pic


def montage_3d(
    volume: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    gts: np.ndarray | None = None,
    n: int = 6,
    tile: int = 256,
) -> np.ndarray:
    """Up to ``n`` evenly spaced labelled slices of a (D, H, W) case side by side."""
    zs = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(1))
    if zs.size == 0:
        zs = np.arange(volume.shape[0])
    picks = np.unique(zs[np.linspace(0, zs.size - 1, min(n, zs.size)).round().astype(int)])
    tiles = []
    for z in picks:
        in_slice = [b[[0, 1, 3, 4]] if b[2] <= z <= b[5] else [0, 0, 0, 0] for b in boxes]
        pic = overlay_2d(volume[z], labels[z], np.array(in_slice), None if gts is None else gts[z])
        scale = tile / max(pic.shape[:2])
        pic = cv2.resize(
            pic, (round(pic.shape[1] * scale), round(pic.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
        canvas = np.zeros((tile, tile, 3), np.uint8)
        canvas[: pic.shape[0], : pic.shape[1]] = pic
        cv2.putText(canvas, f"z={z}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        tiles.append(canvas)
    return np.concatenate(tiles, axis=1)


def write_png(path: Path, picture: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), picture):
        msg = f"could not write {path}"
        raise OSError(msg)
