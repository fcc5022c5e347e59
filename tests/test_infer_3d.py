import numpy as np
import pytest

from app.infer_3d import make_tracks, segment_volume


def volume(depth: int = 12, hw: int = 64) -> np.ndarray:
    """Slice z has its brightest pixel in row 4*z+1, so the fake session can tell slices apart."""
    vol = np.full((depth, hw, hw), 100, np.uint8)
    for z in range(depth):
        vol[z, 0, 0] = 0
        vol[z, 4 * z + 1 : 4 * z + 3, 2:4] = 255
    return vol


def test_every_needed_slice_is_encoded_exactly_once(fake_session) -> None:
    boxes = np.array([[5, 5, 1, 20, 20, 8], [10, 10, 4, 40, 40, 11], [30, 30, 6, 50, 50, 6]], float)
    result = segment_volume(volume(), boxes, fake_session)
    assert fake_session.encoder_calls == 11  # slices 1..11, shared by the three boxes
    assert result.encodes == 11
    assert result.decodes == (8 - 1 + 1) + (11 - 4 + 1) + 1  # one per box and slice of its z range
    assert max(fake_session.encoded_means.values()) == 1


def test_z_range_is_inclusive_at_both_ends(fake_session) -> None:
    labels = segment_volume(volume(), np.array([[5, 5, 2, 20, 20, 7]], float), fake_session).labels
    covered = [z for z in range(12) if labels[z].any()]
    assert covered == [2, 3, 4, 5, 6, 7]


def test_single_slice_box(fake_session) -> None:
    labels = segment_volume(volume(), np.array([[5, 5, 4, 20, 20, 4]], float), fake_session).labels
    assert [z for z in range(12) if labels[z].any()] == [4]


def test_z_beyond_the_volume_is_clipped_or_skipped(fake_session) -> None:
    boxes = np.array([[5, 5, 9, 20, 20, 40], [5, 5, 50, 20, 20, 60]], float)
    labels = segment_volume(volume(), boxes, fake_session).labels
    assert [z for z in range(12) if labels[z].any()] == [9, 10, 11]
    assert set(np.unique(labels)) == {0, 1}


def test_no_boxes(fake_session) -> None:
    result = segment_volume(volume(), np.zeros((0, 6)), fake_session)
    labels = result.labels
    assert result.encodes == result.decodes == 0 and not labels.any() and fake_session.encoder_calls == 0


def test_key_slice_is_the_middle_and_propagation_uses_neighbours(fake_session) -> None:
    tracks = make_tracks(np.array([[5, 5, 2, 20, 20, 7]], float), (12, 64, 64), 256)
    assert (tracks[0].z_min, tracks[0].z_key, tracks[0].z_max) == (2, 4, 7)
    segment_volume(volume(), np.array([[8, 8, 2, 20, 20, 7]], float), fake_session)
    first, second = fake_session.decoded_boxes[:2]
    # key slice: the original box; next slice: the key mask's box grown by the margin
    assert first.tolist() == [32, 32, 80, 80]
    assert second[0] < first[0] and second[2] > first[2]


@pytest.mark.parametrize("capacity", [0, 1, 3])
def test_small_cache_recomputes_but_gives_the_same_labels(fake_session, capacity) -> None:
    from tests.conftest import FakeSession

    boxes = np.array([[5, 5, 1, 20, 20, 8], [10, 10, 4, 40, 40, 11]], float)
    ref = segment_volume(volume(), boxes, FakeSession()).labels
    result = segment_volume(volume(), boxes, fake_session, capacity=capacity)
    labels = result.labels
    assert np.array_equal(ref, labels)
    assert result.cache_peak <= capacity


def test_rgb_volume(fake_session) -> None:
    vol = np.repeat(volume()[..., None], 3, axis=3)
    labels = segment_volume(vol, np.array([[5, 5, 2, 20, 20, 7]], float), fake_session).labels
    assert labels.shape == (12, 64, 64)


def test_progress_counts_up_to_the_planned_total(fake_session) -> None:
    calls: list[tuple[int, int]] = []
    boxes = np.array([[5, 5, 1, 20, 20, 8], [10, 10, 4, 40, 40, 11]], float)
    segment_volume(volume(), boxes, fake_session, on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 7 + 7) for i in range(1, 15)]  # every slice after the key slices, once
