"""The app reproduces the baseline oracle (PyTorch, official algorithm) on synthetic cases."""

import pytest

from demo.synthetic import disks_2d, sphere_3d


@pytest.fixture(scope="module")
def baseline_model():
    from baseline.__main__ import load_baseline

    return load_baseline()


def test_2d_identical_to_the_oracle(real_session, baseline_model) -> None:
    from app.infer_2d import segment_image
    from baseline.litemedsam import segment_2d

    imgs, boxes, _ = disks_2d(seed=3)
    ours = segment_image(imgs, boxes.astype(float), real_session)
    ref = segment_2d(baseline_model, imgs, boxes)
    assert (ours != ref).mean() < 1e-4


def test_3d_identical_to_the_oracle(real_session, baseline_model) -> None:
    from app.infer_3d import segment_volume
    from baseline.litemedsam import segment_3d

    imgs, boxes, _ = sphere_3d(shape=(12, 64, 72), seed=4)
    ours, _ = segment_volume(imgs, boxes.astype(float), real_session)
    ref = segment_3d(baseline_model, imgs, boxes)
    assert (ours != ref).mean() < 1e-4
