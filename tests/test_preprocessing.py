import numpy as np
import pytest

from app.preprocessing import box_to_model, clip_box_2d, clip_z_range, encoder_input, resized_hw


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((512, 512), (256, 256)),
        ((540, 800), (173, 256)),
        ((2604, 1726), (256, 170)),
        ((30, 27), (256, 230)),
        ((1, 5), (51, 256)),
    ],
)
def test_resized_hw_rounds_half_up(hw, expected) -> None:
    assert resized_hw(hw, 256) == expected


def test_encoder_input_normalises_then_pads_with_zeros() -> None:
    img = np.full((100, 200, 3), 50, np.uint8)
    img[:50] = 150
    tensor, resized = encoder_input(img, 256)
    assert tensor.shape == (1, 3, 256, 256) and tensor.dtype == np.float32
    assert resized == (128, 256)
    assert tensor[..., :128, :].min() == 0.0 and tensor[..., :128, :].max() == 1.0
    assert np.all(tensor[..., 128:, :] == 0)


def test_encoder_input_accepts_grey_and_flat_images() -> None:
    tensor, _ = encoder_input(np.full((64, 64), 7, np.uint8), 256)
    assert tensor.shape == (1, 3, 256, 256) and np.all(tensor == 0)  # no division by zero


def test_box_to_model_truncates_like_the_baseline() -> None:
    box = box_to_model(np.array([10, 20, 511, 300]), (512, 600), 256)
    ratio = 256 / 600
    assert box.tolist() == [int(10 * ratio), int(20 * ratio), int(511 * ratio), int(300 * ratio)]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([10, 20, 30, 40], [10, 20, 30, 40]),
        ([30, 40, 10, 20], [10, 20, 30, 40]),  # swapped corners are ordered
        ([-5, -5, 30, 40], [0, 0, 30, 40]),
        ([90, 40, 150, 300], [90, 40, 99, 79]),
        ([100, 0, 120, 10], None),  # right of the image
        ([-20, -20, -1, -1], None),
    ],
)
def test_clip_box_2d(box, expected) -> None:
    out = clip_box_2d(np.array(box, float), (80, 100))
    assert (out is None and expected is None) or out.tolist() == expected


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        ((2, 5), (2, 5)),
        ((5, 5), (5, 5)),
        ((5, 2), (2, 5)),
        ((-3, 4), (0, 4)),
        ((8, 20), (8, 9)),
        ((10, 12), None),
        ((-5, -1), None),
    ],
)
def test_clip_z_range_is_inclusive_and_clipped(z, expected) -> None:
    assert clip_z_range(*z, depth=10) == expected
