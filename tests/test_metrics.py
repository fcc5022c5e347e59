"""Parity of our metrics with the challenge's definition, on hand-made cases with known answers."""

import math

import numpy as np
import pytest

from evaluation.metrics import dice, score_case, spacing_for_axes, surface_dice


def cube(shape=(20, 20, 20), lo=(5, 5, 5), size=8) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def test_identical_masks_score_one() -> None:
    gts = cube().astype(np.uint16)
    s = score_case(gts, gts.copy(), (1.0, 1.0, 1.0))
    assert s.dsc == 1.0 and s.nsd == 1.0


def test_dice_of_a_one_voxel_shift_is_analytic() -> None:
    a, b = cube(), cube(lo=(6, 5, 5))
    assert dice(a, b) == pytest.approx(2 * 7 / 16)


def test_a_shift_within_tolerance_keeps_nsd_at_one() -> None:
    gts, segs = cube().astype(np.uint16), cube(lo=(6, 5, 5)).astype(np.uint16)
    s = score_case(gts, segs, (1.0, 1.0, 1.0))
    assert s.nsd == pytest.approx(1.0)


def test_spacing_moves_a_shift_beyond_tolerance() -> None:
    # The same one-slice shift along z is 3 mm apart with 3 mm slices: the z faces fail.
    gts, segs = cube().astype(np.uint16), cube(lo=(6, 5, 5)).astype(np.uint16)
    near = score_case(gts, segs, (1.0, 1.0, 1.0)).nsd
    far = score_case(gts, segs, (3.0, 1.0, 1.0)).nsd
    assert near == pytest.approx(1.0) and far < 0.9


def test_nsd_is_gated_by_case_dsc() -> None:
    gts = np.zeros((30, 30), np.uint16)
    segs = np.zeros((30, 30), np.uint16)
    gts[10:20, 10:20] = 1
    segs[10:20, 19:29] = 1  # Dice 0.1: NSD forced to 0 whatever the surfaces say
    s = score_case(gts, segs, None)
    assert s.dsc == pytest.approx(0.1) and s.nsd == 0.0


def test_empty_prediction_and_empty_labels() -> None:
    gts = np.zeros((10, 10), np.uint16)
    gts[2:5, 2:5] = 1
    assert score_case(gts, np.zeros_like(gts), None).dsc == 0.0
    gts2 = gts.copy()
    gts2[gts2 == 1] = 2  # label 1 unused: NaN label makes the case mean NaN, as the original
    s = score_case(gts2, gts2.copy(), None)
    assert math.isnan(s.label_dsc[0]) and math.isnan(s.dsc)


def test_2d_is_scored_as_a_one_slice_volume_in_pixels() -> None:
    gts = np.zeros((40, 40), np.uint16)
    gts[10:30, 10:30] = 1
    segs = np.roll(gts, 2, axis=1)
    s = score_case(gts, segs, None)
    expected = surface_dice((gts == 1)[..., None], (segs == 1)[..., None], (1.0, 1.0, 1.0))
    assert s.nsd == pytest.approx(expected) and s.nsd == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("order", "expected"),
    [("zyx", (3.0, 1.0, 0.5)), ("xyz", (0.5, 1.0, 3.0)), ("xyz-as-is", (3.0, 1.0, 0.5))],
)
def test_spacing_orders(order, expected) -> None:
    assert spacing_for_axes((3.0, 1.0, 0.5), order) == expected


def test_unknown_spacing_order() -> None:
    with pytest.raises(ValueError, match="zyx"):
        spacing_for_axes((1, 1, 1), "yxz")


def test_surface_dice_with_an_empty_mask() -> None:
    from evaluation.metrics import surface_dice

    full = np.zeros((4, 8, 8), bool)
    full[1:3, 2:6, 2:6] = True
    empty = np.zeros_like(full)
    assert surface_dice(full, empty, (1.0, 1.0, 1.0)) == 0.0 == surface_dice(empty, full, (1.0, 1.0, 1.0))
    assert np.isnan(surface_dice(empty, empty, (1.0, 1.0, 1.0)))
