"""The app reproduces the baseline oracle (PyTorch, official algorithm) on synthetic cases."""

import pytest

from common.synthetic import disks_2d, sphere_3d


@pytest.fixture(scope="module")
def baseline_model():
    from baseline.litemedsam import load_baseline

    return load_baseline()


def test_2d_identical_to_the_oracle(real_session, baseline_model) -> None:
    from app.infer_2d import segment_image
    from baseline.litemedsam import segment_2d

    imgs, boxes, _ = disks_2d(seed=3)
    ours = segment_image(imgs, boxes.astype(float), real_session).labels
    ref = segment_2d(baseline_model, imgs, boxes)
    assert (ours != ref).mean() < 1e-4


def test_3d_identical_to_the_oracle(real_session, baseline_model) -> None:
    from app.infer_3d import segment_volume
    from baseline.litemedsam import segment_3d

    imgs, boxes, _ = sphere_3d(shape=(6, 64, 72), seed=4)
    ours = segment_volume(imgs, boxes.astype(float), real_session).labels
    ref = segment_3d(baseline_model, imgs, boxes)
    assert (ours != ref).mean() < 1e-4


def test_oracle_reusing_embeddings_gives_identical_masks_with_fewer_encodes(
    baseline_model, monkeypatch
) -> None:
    import numpy as np

    import baseline.litemedsam as oracle

    imgs, _, gts = sphere_3d(shape=(5, 64, 64), seed=5)
    boxes = np.array([[10, 10, 1, 50, 50, 3], [20, 15, 2, 60, 55, 4]])
    calls = []
    encode = oracle.encode
    monkeypatch.setattr(oracle, "encode", lambda *a: calls.append(1) or encode(*a))
    original = oracle.segment_3d(baseline_model, imgs, boxes)
    per_box = len(calls)
    calls.clear()
    reused = oracle.segment_3d(baseline_model, imgs, boxes, reuse_embeddings=True)
    assert np.array_equal(original, reused)
    assert len(calls) == 4 < per_box == 3 + 3  # slices 1..4 once vs each box's 3 slices
