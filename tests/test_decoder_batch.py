"""Boxes decoded in batches: the decoder over one image and many boxes (issue 13's lever).

The shipped decoder IR takes one image and one box; ``SamSession.decode_many`` reshapes it to a
batch of boxes, and ``segment_image`` uses that where one decoder serves at least
``BATCHED_FROM`` boxes of an image. Each box must keep exactly its own logits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from app.infer_2d import BATCHED_FROM, segment_image
from app.sessions import DECODER_BATCH, MAX_DECODER_BATCH, decoder_batch_from, read_manifest
from tests.conftest import ROOT, FakeSession


def spread_boxes(n: int, size: int, seed: int = 0, side: int = 60) -> np.ndarray:
    """(n, 4) XYXY boxes of 6..``side`` px inside a ``size`` square, float32."""
    rng = np.random.default_rng(seed)
    x0y0 = rng.uniform(0, size - side - 4, (n, 2))
    wh = rng.uniform(6, side, (n, 2))
    return np.concatenate([x0y0, x0y0 + wh], axis=1).astype(np.float32)


def disks_image(size: int = 320, seed: int = 1) -> np.ndarray:
    """(size, size, 3) uint8 noise with bright disks: something for real boxes to segment."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx, r in rng.uniform([20, 20, 5], [size - 20, size - 20, 18], (40, 3)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 220
    return np.repeat(img[..., None], 3, axis=2)


def test_the_torch_form_decodes_each_box_as_alone() -> None:
    """``decode_on_one_image`` (what the decoder IR is exported from) gives every box of a batch
    the logits of ``BoxSAM.decode`` on that box alone (the reference form, unfolded)."""
    from modeling.architectures.folded_decoder import decode_on_one_image, folded
    from modeling.registry import get_spec, load_model

    model = load_model(get_spec("lite_medsam"))
    decoder = folded(model.mask_decoder).eval()
    emb = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 256, 64, 64), dtype=np.float32) * 0.5)
    boxes = torch.from_numpy(spread_boxes(5, 256))
    with torch.no_grad():
        together = decode_on_one_image(model.prompt_encoder, decoder, emb, boxes)  # (5, 1, 256, 256)
        alone = torch.cat([model.decode(emb, boxes[i : i + 1]) for i in range(5)])
    assert together.shape == (5, 1, 256, 256)
    assert float((together - alone).abs().max()) < 1e-3
    assert torch.equal(together > 0, alone > 0)


def test_the_decoder_ir_takes_one_image_and_reshapes_to_a_batch_of_boxes(models_dir) -> None:
    core = ov.Core()
    for key, entry in read_manifest(models_dir).items():
        model = core.read_model(entry.decoder_xml)
        shapes = {i.get_any_name(): list(i.get_partial_shape().to_shape()) for i in model.inputs}
        assert shapes == {"image_embeddings": [1, 256, 64, 64], "boxes": [1, 4]}, key
        model.reshape({"boxes": [DECODER_BATCH, 4]})
        assert list(model.outputs[0].get_partial_shape().to_shape()) == [DECODER_BATCH, 1, 256, 256], key


def test_decode_many_gives_each_box_its_single_call_logits(real_session) -> None:
    """The shipped graph reshaped to 8 boxes, 11 boxes (a padded last call): each box's logits
    are those of its own single-box call (bit for bit on the AMD EPYC measured; allowed 1e-4 on any CPU)."""
    emb = real_session.encode(np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32))
    boxes = spread_boxes(11, 256, seed=3)
    many = real_session.decode_many(emb, boxes, DECODER_BATCH)  # (11, 256, 256)
    single = np.stack([real_session.decode(emb, b) for b in boxes])
    assert many.shape == single.shape == (11, 256, 256)
    assert float(np.abs(many - single).max()) <= 1e-4
    assert np.array_equal(many > 0, single > 0)
    many[0] += 1  # the output is a copy: the next call is not affected
    assert np.array_equal(real_session.decode_many(emb, boxes[:1], DECODER_BATCH)[0] > 0, single[0] > 0)


def test_a_many_box_image_gets_the_same_labels_batched_or_not(real_session) -> None:
    image = disks_image()
    boxes = spread_boxes(BATCHED_FROM + 5, 320, seed=4)
    batched = segment_image(image, boxes, real_session, batch=DECODER_BATCH)
    single = segment_image(image, boxes, real_session, batch=1)
    assert batched.decodes == single.decodes == len(boxes)
    assert np.array_equal(batched.labels, single.labels)
    assert len(np.unique(batched.labels)) > 10  # the boxes found something


@pytest.mark.parametrize(("n", "calls"), [(BATCHED_FROM - 1, []), (BATCHED_FROM + 3, [8] * 6 + [3])])
def test_segment_image_batches_a_decoder_only_from_batched_from_boxes(n: int, calls: list[int]) -> None:
    assert BATCHED_FROM == 48  # the calls listed above assume it
    session = FakeSession()
    boxes = spread_boxes(n, 512, seed=5)
    out = segment_image(np.zeros((512, 512, 3), np.uint8), boxes, session, batch=8, window=0)
    assert session.batched_calls == calls
    assert len(session.decoded_boxes) == n
    unbatched = segment_image(np.zeros((512, 512, 3), np.uint8), boxes, FakeSession(), batch=1)
    assert np.array_equal(out.labels, unbatched.labels)


@pytest.mark.parametrize(
    ("boxes", "size", "batch", "window", "form"),
    [
        (BATCHED_FROM - 1, 256, 8, 6, (1, 0)),  # few boxes: one per call
        (BATCHED_FROM, 256, 1, 6, (1, 0)),  # batching off
        (BATCHED_FROM, 256, 8, 6, (8, 6)),  # many: batched, on windows
        (BATCHED_FROM, 256, 8, 0, (8, 0)),  # windows off
        (BATCHED_FROM, 1024, 8, 6, (8, 0)),  # windows are laid out on a 256 frame only
    ],
)
def test_decoder_form_names_the_graph_a_group_decodes_with_first(
    boxes: int, size: int, batch: int, window: int, form: tuple[int, int]
) -> None:
    """What ``predict_case`` prefetches: the graph ``decode_group`` first asks for."""
    from app.infer_2d import decoder_form

    assert decoder_form(boxes, size, batch, window) == form


def test_each_decoder_of_a_routed_image_batches_on_its_own_count() -> None:
    """A router splits the boxes: the decoder with many batches, the one with few does not, and
    the labels equal the unbatched run's (paint order never matters)."""
    many = spread_boxes(BATCHED_FROM + 1, 260, seed=6)  # x < 260 of 400: model-frame x0 < 167
    few = spread_boxes(5, 76, seed=7, side=10) + np.float32([320, 0, 320, 0])  # model-frame x0 >= 204
    boxes = np.concatenate([many[:20], few, many[20:]])  # the two kinds interleaved
    image = np.zeros((400, 400, 3), np.uint8)

    def run(batch: int) -> tuple[np.ndarray, FakeSession, FakeSession]:
        specialist, general = FakeSession(), FakeSession()

        def choose(embedding: np.ndarray, box_model: np.ndarray, resized: tuple[int, int]) -> FakeSession:
            return general if box_model[0] >= 200 else specialist

        out = segment_image(image, boxes, specialist, choose=choose, batch=batch, window=0)
        return out.labels, specialist, general

    labels, specialist, general = run(8)
    assert specialist.batched_calls == [8] * 6 + [1] and general.batched_calls == []
    assert len(specialist.decoded_boxes) == BATCHED_FROM + 1 and len(general.decoded_boxes) == 5
    assert np.array_equal(labels, run(1)[0])
    assert len(np.unique(labels)) > len(boxes) // 2  # the fake decodes a box to its footprint


def test_the_decoder_batch_setting(monkeypatch) -> None:
    monkeypatch.delenv("SEG_DECODER_BATCH", raising=False)
    assert decoder_batch_from(None) == DECODER_BATCH
    assert decoder_batch_from("1") == 1
    monkeypatch.setenv("SEG_DECODER_BATCH", "4")
    assert decoder_batch_from(None) == 4
    assert decoder_batch_from("16") == 16  # the flag wins over the environment
    for bad in ("0", "-3", "eight", str(MAX_DECODER_BATCH + 1), "2.5"):
        with pytest.raises(ValueError, match="whole number"):
            decoder_batch_from(bad)


def test_a_bad_decoder_batch_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    argv = [sys.executable, "-m", "app", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    argv += ["--decoder-batch", "0"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "--decoder-batch / SEG_DECODER_BATCH" in proc.stderr and "got '0'" in proc.stderr


def test_the_warmup_compiles_the_batched_decoder_of_2d_models_only(models_dir) -> None:
    from app.sessions import SessionCache, create_core

    sessions = SessionCache(create_core(None), models_dir)
    keys_2d = sessions.keys_2d
    assert "lite_medsam" in keys_2d  # every refused or unrouted 2D box ends there
    assert "pet_3d" not in keys_2d  # a 3D-only model never batches
    assert set(keys_2d) <= set(sessions.keys)
