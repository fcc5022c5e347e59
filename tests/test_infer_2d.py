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
