"""The real exported model on generated phantoms: objects inside their boxes are found."""

import numpy as np

from app.infer_2d import segment_image
from app.infer_3d import segment_volume
from common.synthetic import disks_2d, sphere_3d


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_bright_disks_are_segmented(real_session) -> None:
    imgs, boxes, gts = disks_2d()
    labels = segment_image(imgs, boxes.astype(float), real_session).labels
    for label in (1, 2):
        assert dice(labels == label, gts == label) >= 0.9


def test_bright_ellipsoid_is_segmented_in_3d(real_session) -> None:
    imgs, boxes, gts = sphere_3d(shape=(12, 96, 96))
    result = segment_volume(imgs, boxes.astype(float), real_session)
    labels = result.labels
    assert dice(labels == 1, gts == 1) >= 0.9
    assert result.encodes == boxes[0, 5] - boxes[0, 2] + 1
