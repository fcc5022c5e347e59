import numpy as np
import pytest

from app.postprocessing import PROPAGATION_MARGIN, logits_to_mask, mask_bbox, paint, propagation_box


def test_logits_to_mask_crops_and_resizes() -> None:
    logits = np.full((256, 256), -5, np.float32)
    logits[:128, :64] = 5  # left quarter of the image region (128, 256)
    mask = logits_to_mask(logits, (128, 256), (100, 200))
    assert mask.shape == (100, 200) and mask.dtype == bool
    assert mask[:, :45].all() and not mask[:, 55:].any()


def test_mask_bbox() -> None:
    m = np.zeros((10, 12), bool)
    assert mask_bbox(m) is None
    m[2:5, 3:9] = True
    assert mask_bbox(m).tolist() == [3, 2, 8, 4]


def test_propagation_box_matches_the_baseline() -> None:
    baseline = pytest.importorskip("baseline.litemedsam")
    rng = np.random.default_rng(0)
    for hw in [(512, 512), (44, 45), (27, 30), (300, 700)]:
        for label in (1, 2, 7, 300):
            m = np.zeros(hw, bool)
            y0, x0 = rng.integers(0, hw[0] // 2), rng.integers(0, hw[1] // 2)
            m[y0 : y0 + hw[0] // 3 + 1, x0 : x0 + hw[1] // 4 + 1] = True
            painted = m.astype(np.uint8) * np.uint8(min(label, 255))
            expected = baseline.get_bbox256(baseline.pad_image(baseline.resize_longest_side(painted)))
            assert propagation_box(m, label, 256).tolist() == expected.tolist(), (hw, label)


def test_propagation_box_margin_and_clamp() -> None:
    m = np.zeros((256, 256), bool)
    m[0:10, 250:256] = True
    box = propagation_box(m, 1, 256)
    assert box.tolist() == [250 - PROPAGATION_MARGIN, 0, 256, 9 + PROPAGATION_MARGIN]


def test_paint_later_box_wins_whatever_the_order() -> None:
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:3, :3], b[1:, 1:] = True, True
    x, y = np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.uint16)
    paint(x, a, 1)
    paint(x, b, 2)
    paint(y, b, 2)
    paint(y, a, 1)
    assert np.array_equal(x, y) and x[1, 1] == 2 and x[0, 0] == 1
