"""The decoder's background load (``SamSession.prefetch_decoder``): the same graph and the same
masks as loading it on first use, compiled once, its errors raised where the decoder is needed,
and the compile lock shared by one process's threads while other processes still wait."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from app.infer_2d import BATCHED_FROM, plain_decoder_only
from app.sessions import SessionCache, SharedCacheLock, create_core
from tests.conftest import FakeSession


def one_box_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(0, 255, size=(180, 220, 3), dtype=np.uint8)  # (H, W, 3)
    image[40:120, 60:170] = 230  # a bright block for the box to find
    return image, np.array([[55, 35, 175, 125]], dtype=np.float32)  # (1, 4) XYXY, original frame


def test_a_prefetched_decoder_gives_the_same_labels_and_loads_once(models_dir: Path, tmp_path: Path) -> None:
    from app.infer_2d import segment_image

    image, boxes = one_box_case(np.random.default_rng(0))
    plain = SessionCache(create_core(tmp_path / "cache"), models_dir)
    expected = segment_image(image, boxes, plain.get("lite_medsam")).labels
    prefetching = SessionCache(create_core(tmp_path / "cache"), models_dir)
    session = prefetching.get("lite_medsam")
    session.prefetch_decoder()
    session.prefetch_decoder()  # already on its way: nothing more
    labels = segment_image(image, boxes, session).labels
    assert np.array_equal(labels, expected) and labels.max() == 1
    assert prefetching.compiles == plain.compiles == 2  # the encoder and the one decoder
    session.prefetch_decoder()  # compiled: no effect
    assert prefetching.compiles == 2


def test_a_failed_prefetch_is_raised_where_the_decoder_is_needed(models_dir: Path, tmp_path: Path) -> None:
    sessions = SessionCache(create_core(None), models_dir)
    missing = tmp_path / "no_decoder.xml"
    sessions.prefetch(missing, 1, 0, "decoder", "f32")  # fails in the background, silently
    with pytest.raises(RuntimeError, match="no_decoder"):
        sessions._compile(missing, 1, 0, "decoder", "f32")


def locked_elsewhere(folder: Path) -> bool:
    """Whether another open file description of ``folder`` cannot take its flock now."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_the_shared_cache_lock_lets_threads_in_and_keeps_others_out(tmp_path: Path) -> None:
    lock = SharedCacheLock(str(tmp_path))
    inside = threading.Event()
    leave = threading.Event()

    def hold_in_a_thread() -> None:
        with lock.hold():
            inside.set()
            leave.wait(timeout=30)

    other = threading.Thread(target=hold_in_a_thread)
    other.start()
    assert inside.wait(timeout=30)
    assert locked_elsewhere(tmp_path)
    with lock.hold():  # the main thread gets in while the other thread holds it
        assert locked_elsewhere(tmp_path)
    assert locked_elsewhere(tmp_path), "released while a thread still held it"
    leave.set()
    other.join(timeout=30)
    assert not locked_elsewhere(tmp_path)
    with lock.hold():  # taken again after a release
        assert locked_elsewhere(tmp_path)
    assert not locked_elsewhere(tmp_path)


class OneFakeModel:
    """SessionCache stand-in for ``predict_case``: every case to one fake session."""

    routes: dict[tuple[int, str], str] = {}
    decoder_batch, decoder_window = 8, 16

    def __init__(self) -> None:
        self.session = FakeSession()

    def precision_for(self, dims: int, modality: str | None) -> str:
        return "f32"

    def get(self, key: str, precision: str = "f32") -> FakeSession:
        return self.session

    def screen(self, key: str) -> None:
        return None


@pytest.mark.parametrize(("boxes", "prefetches"), [(1, 1), (BATCHED_FROM - 1, 1), (BATCHED_FROM, 0)])
def test_the_app_prefetches_the_plain_decoder_where_the_case_uses_it(
    tmp_path: Path, boxes: int, prefetches: int
) -> None:
    from app.pipeline import predict_case

    corners = np.arange(boxes, dtype=np.float32)[:, None] % 50  # (N, 1)
    case = tmp_path / "in" / "2DBox_Dermoscopy_demo.npz"
    case.parent.mkdir()
    image = np.random.default_rng(1).integers(0, 255, size=(120, 140, 3), dtype=np.uint8)
    np.savez(case, imgs=image, boxes=np.hstack([corners, corners, corners + 20, corners + 20]))
    sessions = OneFakeModel()
    predict_case(case, tmp_path, sessions)
    assert sessions.session.prefetches == prefetches
    assert plain_decoder_only(500, 1)  # batching off: one box per call whatever the count
