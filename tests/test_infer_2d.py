import numpy as np

from app.infer_2d import segment_image


def test_one_label_per_box_and_one_encode(fake_session) -> None:
    img = np.zeros((256, 256, 3), np.uint8)
    result = segment_image(img, np.array([[10, 10, 50, 50], [100, 100, 150, 120]], float), fake_session)
    labels = result.labels
    assert (result.encodes, result.decodes, result.cache_peak) == (1, 2, 0)
    assert labels.dtype == np.uint16 and labels.shape == (256, 256)
    assert fake_session.encoder_calls == 1
    assert labels[30, 30] == 1 and labels[110, 120] == 2 and labels[200, 200] == 0


def test_later_box_wins_on_overlap(fake_session) -> None:
    labels = segment_image(
        np.zeros((256, 256, 3), np.uint8),
        np.array([[10, 10, 100, 100], [50, 50, 150, 150]], float),
        fake_session,
    ).labels
    assert labels[75, 75] == 2 and labels[20, 20] == 1


def test_empty_box_list_gives_zeros_without_encoding(fake_session) -> None:
    labels = segment_image(np.zeros((30, 40, 3), np.uint8), np.zeros((0, 4)), fake_session).labels
    assert labels.shape == (30, 40) and not labels.any() and fake_session.encoder_calls == 0


def test_box_outside_the_image_is_skipped(fake_session) -> None:
    labels = segment_image(
        np.zeros((100, 100, 3), np.uint8),
        np.array([[200, 200, 300, 300], [10, 10, 20, 20]], float),
        fake_session,
    ).labels
    assert set(np.unique(labels)) == {0, 2} and len(fake_session.decoded_boxes) == 1


def test_more_than_255_objects_keep_their_labels(fake_session) -> None:
    boxes = np.array([[x, y, x + 2, y + 2] for y in range(0, 256, 8) for x in range(0, 256, 8)], float)
    labels = segment_image(np.zeros((256, 256, 3), np.uint8), boxes, fake_session).labels
    assert labels.max() == len(boxes) == 1024


def test_progress_follows_every_box_decoded(fake_session) -> None:
    steps: list[tuple[int, int]] = []
    boxes = np.array(
        [[10, 10, 50, 50], [300, 300, 400, 400], [100, 100, 150, 120]], float
    )  # the 2nd: outside
    segment_image(np.zeros((256, 256, 3), np.uint8), boxes, fake_session, on_step=lambda *s: steps.append(s))
    assert steps == [(1, 2), (2, 2)]


def test_a_long_case_logs_its_progress_by_unit(caplog) -> None:
    import logging

    from app.pipeline import Progress

    progress = Progress("2DBox_Microscopy_x.npz", "boxes", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="app"):
        progress(40, 1265)
    assert caplog.messages == ["2DBox_Microscopy_x.npz: 40/1265 boxes"]
    quiet = Progress("case", "boxes", every_s=3600.0)
    with caplog.at_level(logging.INFO, logger="app"):
        quiet(1, 2)
    assert len(caplog.messages) == 1  # nothing before every_s has passed
