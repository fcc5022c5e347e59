"""Shared fixtures: a fake model session, synthetic cases, and the exported models."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


class FakeSession:
    """Stands in for SamSession: counts encodes per slice, decodes a box to its footprint.

    encode() tags each embedding with the position of the image's maximum so tests can tell
    which slice an embedding came from; decode() returns +10 logits inside the model-frame box, -10 outside.
    """

    input_size = 256

    def __init__(self, encoder_id: str = "fake") -> None:
        self.encoder_id = encoder_id
        self.encoder_calls = 0
        self.encoded_means: Counter[float] = Counter()
        self.decoded_boxes: list[np.ndarray] = []
        self.batched_calls: list[int] = []  # boxes per decode_many call
        self.window_calls: list[int] = []  # boxes per decode_windows call

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.encoder_calls += images.shape[0]
        emb = np.zeros((images.shape[0], 256, 64, 64), dtype=np.float32)
        for i, img in enumerate(images):
            tag = float(np.argmax(img[0]))
            self.encoded_means[tag] += 1
            emb[i, 0, 0, 0] = tag
        return emb

    def decode(self, embedding: np.ndarray, box_model: np.ndarray) -> np.ndarray:
        self.decoded_boxes.append(np.asarray(box_model, dtype=np.float32).copy())
        logits = np.full((256, 256), -10.0, dtype=np.float32)
        x0, y0, x1, y1 = (int(v) for v in box_model)
        logits[y0 : y1 + 1, x0 : x1 + 1] = 10.0
        return logits

    def decode_many(self, embedding: np.ndarray, boxes_model: np.ndarray, batch: int) -> np.ndarray:
        assert len(boxes_model) <= batch, "decode_many was given more boxes than its batch"
        self.batched_calls.append(len(boxes_model))
        return np.stack([self.decode(embedding, box) for box in boxes_model])

    def decode_windows(
        self, embedding: np.ndarray, boxes_model: np.ndarray, corners: list, batch: int, window: int
    ) -> np.ndarray:
        """Each box's ``decode`` logits on its window (what the window graph computes)."""
        assert len(boxes_model) <= batch, "decode_windows was given more boxes than its batch"
        self.window_calls.append(len(boxes_model))
        side = 4 * window
        return np.stack(
            [
                self.decode(embedding, box)[4 * r : 4 * r + side, 4 * c : 4 * c + side]
                for box, (r, c) in zip(boxes_model, corners, strict=True)
            ]
        )


@pytest.fixture
def fake_session() -> FakeSession:
    return FakeSession()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The exported models; built once by `make export` if missing."""
    if not (MODELS / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "export"], cwd=ROOT, check=True)
    return MODELS


@pytest.fixture(scope="session")
def real_session(models_dir: Path):  # noqa: ANN201 - returns app.sessions.SamSession
    from app.sessions import SessionCache, create_core

    return SessionCache(create_core(None), models_dir).get("lite_medsam")
