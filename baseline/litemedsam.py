"""The baseline algorithm, step by step (CVPR24_LiteMedSAM_infer.py, final revision)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from modeling.architectures.sam import BoxSAM
from modeling.registry import BASE_KEY, get_spec, load_model

SIZE = 256
BBOX_SHIFT = 3


def load_baseline() -> BoxSAM:
    """LiteMedSAM's published checkpoint, unchanged (the oracle every figure compares against)."""
    return load_model(get_spec(BASE_KEY))


def resize_longest_side(image: np.ndarray, target: int = SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    scale = target / max(h, w)
    newh, neww = int(h * scale + 0.5), int(w * scale + 0.5)
    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA)


def pad_image(image: np.ndarray, target: int = SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    pad = ((0, target - h), (0, target - w)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad)


def encode(model: BoxSAM, img_3c: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 -> (1, 256, 64, 64) embedding and the resized (newh, neww)."""
    img_256 = resize_longest_side(img_3c)
    new_hw = img_256.shape[:2]
    norm = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    tensor = torch.tensor(pad_image(norm)).float().permute(2, 0, 1).unsqueeze(0)  # (1, 3, 256, 256)
    with torch.no_grad():
        return model.image_encoder(tensor), new_hw


def resize_box_to_256(box: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
    new_box = np.zeros_like(box)  # keeps the integer dtype: truncation, as in the baseline
    ratio = SIZE / max(original_hw)
    for i in range(len(box)):
        new_box[i] = int(box[i] * ratio)
    return new_box


def get_bbox256(mask_256: np.ndarray) -> np.ndarray:
    ys, xs = np.where(mask_256 > 0)
    h, w = mask_256.shape
    return np.array(
        [
            max(0, xs.min() - BBOX_SHIFT),
            max(0, ys.min() - BBOX_SHIFT),
            min(w, xs.max() + BBOX_SHIFT),
            min(h, ys.max() + BBOX_SHIFT),
        ]
    )


def infer_mask(
    model: BoxSAM,
    embedding: torch.Tensor,
    box_256: np.ndarray,
    new_hw: tuple[int, int],
    original_hw: tuple[int, int],
) -> np.ndarray:
    """(H, W) uint8 0/1 mask: decode, crop, bilinear to the original size, sigmoid > 0.5."""
    with torch.no_grad():
        box = torch.as_tensor(np.asarray(box_256)[None], dtype=torch.float)  # (1, 4)
        logits = model.decode(embedding, box)[..., : new_hw[0], : new_hw[1]]
        logits = F.interpolate(logits, size=original_hw, mode="bilinear", align_corners=False)
        return (torch.sigmoid(logits) > 0.5).squeeze().numpy().astype(np.uint8)


def segment_2d(model: BoxSAM, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    img_3c = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=-1)
    hw = img_3c.shape[:2]
    segs = np.zeros(hw, dtype=np.uint16)
    embedding, new_hw = encode(model, img_3c)
    for idx, box in enumerate(boxes, start=1):
        mask = infer_mask(model, embedding, resize_box_to_256(box[None].astype(np.int64)[0], hw), new_hw, hw)
        segs[mask > 0] = idx
    return segs


def _slice_box(model_box: np.ndarray, temp: np.ndarray, prev_z: int, hw: tuple[int, int]) -> np.ndarray:
    prev = temp[prev_z]
    if np.max(prev) > 0:
        return get_bbox256(pad_image(resize_longest_side(prev)))
    return resize_box_to_256(model_box, hw)


def segment_3d(
    model: BoxSAM, volume: np.ndarray, boxes: np.ndarray, reuse_embeddings: bool = False
) -> np.ndarray:
    """Per box: middle slice, then up to z_max (inclusive), then down to z_min (inclusive).

    The original re-encodes every slice for every box. ``reuse_embeddings`` keeps each slice's
    embedding for the later boxes of the case: the same function of the same slice, so the
    masks are identical, only faster (used for accuracy runs; benchmarks run the original).
    """
    embeddings: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}
    segs = np.zeros(volume.shape[:3], dtype=np.uint16)
    depth, h, w = volume.shape[:3]
    for idx, box in enumerate(boxes.astype(np.int64), start=1):
        # uint8 as in the baseline (INTER_AREA rounds differently on uint16); the value is
        # capped at 255 where the original would overflow.
        temp = np.zeros(volume.shape[:3], dtype=np.uint8)
        value = np.uint8(min(idx, 255))
        x_min, y_min, z_min, x_max, y_max, z_max = box
        if not z_min < z_max:
            msg = f"baseline requires z_min < z_max (box {idx}: {z_min}, {z_max})"
            raise ValueError(msg)
        mid_box = np.array([x_min, y_min, x_max, y_max])
        z_middle = int((z_max - z_min) / 2 + z_min)
        ups = range(z_middle, min(z_max + 1, depth))
        downs = range(z_middle - 1, max(-1, z_min - 1), -1)
        for zs, step in ((ups, -1), (downs, 1)):
            for z in zs:
                if z in embeddings:
                    embedding, new_hw = embeddings[z]
                else:
                    img_3c = np.repeat(volume[z][:, :, None], 3, axis=-1) if volume.ndim == 3 else volume[z]
                    embedding, new_hw = encode(model, img_3c)
                    if reuse_embeddings:
                        embeddings[z] = (embedding, new_hw)
                if z == z_middle:
                    box_256 = resize_box_to_256(mid_box, (h, w))
                else:
                    box_256 = _slice_box(mid_box, temp, z + step, (h, w))
                mask = infer_mask(model, embedding, box_256, new_hw, (h, w))
                temp[z, mask > 0] = value
        segs[temp > 0] = idx
    return segs
