"""Boxes decoded on windows (``app/windows.py``, issue 13's decoder lever): the window graph's
logits are the whole decoder's inside the window, a mask reaching the window's rim is decoded
whole, and a many-box image gets the labels it gets without windows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.infer_2d import BATCHED_FROM, segment_image
from app.sessions import DECODER_BATCH, decoder_window_from
from app.windows import CELL, GRID, OUTSIDE, WINDOW, full_logits, rim_positive, window_corner
from tests.conftest import ROOT, FakeSession
from tests.test_decoder_batch import disks_image, spread_boxes


def test_a_small_box_gets_a_window_centred_on_it_and_moved_inside_the_frame() -> None:
    assert window_corner(np.float32([100, 40, 120, 60]), 16, 4) == (
        5,
        20,
    )  # cells 10..15, 25..30: 5 left over each side
    assert window_corner(np.float32([0, 0, 10, 10]), 16, 4) == (0, 0)
    assert window_corner(np.float32([250, 250, 256, 256]), 16, 4) == (GRID - 16, GRID - 16)
    for box in np.random.default_rng(0).uniform(0, 256, (200, 2)):
        x, y = box
        corner = window_corner(np.float32([x, y, min(x + 12, 256), min(y + 12, 256)]), 16, 4)
        assert corner is not None and all(0 <= c <= GRID - 16 for c in corner)
        row, col = corner
        assert row * CELL <= y and min(y + 12, 255) < (row + 16) * CELL  # the box lies inside
        assert col * CELL <= x and min(x + 12, 255) < (col + 16) * CELL


def test_a_box_too_large_for_a_window_with_its_margin_gets_none() -> None:
    assert window_corner(np.float32([0, 0, 31, 31]), 16, 4) is not None  # 8 cells + 2 x 4
    assert window_corner(np.float32([0, 0, 32, 31]), 16, 4) is None  # 9 cells + 2 x 4
    assert window_corner(np.float32([0, 0, 10, 10]), 0, 4) is None  # windows off


def test_only_a_rim_side_with_image_beyond_it_counts() -> None:
    side = 16 * CELL
    logits = np.full((side, side), -5.0, np.float32)
    assert not rim_positive(logits, (10, 10), (256, 256))
    for edge in (np.s_[0, 7], np.s_[side - 1, 7], np.s_[7, 0], np.s_[7, side - 1]):
        touched = logits.copy()
        touched[edge] = 1.0
        assert rim_positive(touched, (10, 10), (256, 256)), edge
        assert not rim_positive(touched, (0, 0), (side, side))  # frame and content end there
    inner = logits.copy()
    inner[5:20, 5:20] = 3.0
    assert not rim_positive(inner, (10, 10), (256, 256))
    beyond_content = logits.copy()
    beyond_content[:, 40] = 2.0  # a column past the content's width (neww = 4 * 10 + 30)
    assert not rim_positive(beyond_content, (10, 10), (256, 70))


def test_full_logits_put_the_window_in_place_and_outside_below_any_logit() -> None:
    window = np.arange((16 * CELL) ** 2, dtype=np.float32).reshape(16 * CELL, 16 * CELL)
    full = full_logits(window, (3, 5))
    assert full.shape == (GRID * CELL, GRID * CELL)
    assert np.array_equal(full[12 : 12 + 64, 20 : 20 + 64], window)
    outside = np.ones_like(full, bool)
    outside[12 : 12 + 64, 20 : 20 + 64] = False
    assert np.all(full[outside] == OUTSIDE)


def test_the_window_graph_gives_the_whole_decoders_logits_inside_its_window(real_session) -> None:
    emb = real_session.encode(np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32))
    boxes = np.concatenate(
        [spread_boxes(9, 256, seed=8, side=28), np.float32([[0, 0, 20, 20], [236, 230, 256, 256]])]
    )
    corners = [window_corner(b) for b in boxes]
    assert all(c is not None for c in corners)
    windows = real_session.decode_windows(emb, boxes, corners, DECODER_BATCH, WINDOW)  # (11, 64, 64)
    whole = real_session.decode_many(emb, boxes, DECODER_BATCH)  # (11, 256, 256)
    side = WINDOW * CELL
    assert windows.shape == (len(boxes), side, side)
    for w, full, (row, col) in zip(windows, whole, corners, strict=True):
        assert (
            float(np.abs(w - full[row * CELL : row * CELL + side, col * CELL : col * CELL + side]).max())
            <= 1e-4
        )


def test_a_many_box_image_gets_the_same_labels_with_windows_or_without(real_session) -> None:
    image = disks_image()
    boxes = spread_boxes(BATCHED_FROM + 5, 320, seed=4, side=36)
    windowed = segment_image(image, boxes, real_session, batch=DECODER_BATCH, window=WINDOW)
    whole = segment_image(image, boxes, real_session, batch=DECODER_BATCH, window=0)
    assert np.array_equal(windowed.labels, whole.labels)
    assert len(np.unique(windowed.labels)) > 10  # the boxes found something


def test_windows_serve_the_boxes_that_fit_and_whole_decodes_the_rest() -> None:
    small = spread_boxes(BATCHED_FROM, 400, seed=9, side=30)  # model frame: at most 20 px
    large = np.float32([[0, 0, 300, 300], [100, 100, 512, 400]])
    session = FakeSession()
    out = segment_image(np.zeros((512, 512, 3), np.uint8), np.concatenate([small, large]), session, batch=8)
    assert session.window_calls == [8] * 6 and session.batched_calls == []
    assert len(session.decoded_boxes) == BATCHED_FROM + 2  # each box once: on a window, or whole
    whole = segment_image(
        np.zeros((512, 512, 3), np.uint8), np.concatenate([small, large]), FakeSession(), batch=8, window=0
    )
    assert np.array_equal(out.labels, whole.labels)


class SpillingSession(FakeSession):
    """Decodes every box to a mask that covers the whole frame: every window's rim is positive."""

    def decode(self, embedding: np.ndarray, box_model: np.ndarray) -> np.ndarray:
        super().decode(embedding, box_model)
        return np.full((256, 256), 10.0, dtype=np.float32)


def test_a_mask_reaching_its_windows_rim_is_decoded_whole() -> None:
    session = SpillingSession()
    boxes = spread_boxes(BATCHED_FROM, 400, seed=9, side=30)
    out = segment_image(np.zeros((512, 512, 3), np.uint8), boxes, session, batch=8)
    assert session.window_calls == [8] * 6
    assert session.batched_calls == [8] * 6  # every box again, whole
    assert np.all(out.labels == BATCHED_FROM)  # the whole decoder's masks, not the windows'


def test_the_decoder_window_setting(monkeypatch) -> None:
    assert decoder_window_from(None) == WINDOW
    assert decoder_window_from("0") == 0
    monkeypatch.setenv("SEG_DECODER_WINDOW", "24")
    assert decoder_window_from(None) == 24
    assert decoder_window_from("12") == 12  # the flag wins over the environment
    for bad in ("-1", "65", "x", "1.5"):
        with pytest.raises(ValueError, match="decoder window"):
            decoder_window_from(bad)


def test_a_bad_decoder_window_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    argv = [sys.executable, "-m", "app", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    proc = subprocess.run(
        [*argv, "--decoder-window", "65"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "--decoder-window / SEG_DECODER_WINDOW" in proc.stderr and "got '65'" in proc.stderr


def test_a_warmup_with_windows_compiles_the_window_graph_in_place_of_the_whole_batched_one(
    models_dir,
) -> None:
    from app.sessions import SessionCache, create_core

    session = SessionCache(create_core(None), models_dir).get("lite_medsam")
    session.compile_all(DECODER_BATCH, WINDOW)
    graphs, _ = session.cache_hits()
    assert graphs == 3  # encoder, decoder, the window graph
    decoder = session.compile_decoder(DECODER_BATCH, WINDOW)
    assert [list(o.get_partial_shape().to_shape()) for o in decoder.outputs] == [
        [DECODER_BATCH, 1, WINDOW * CELL, WINDOW * CELL]
    ]
