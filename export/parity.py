"""Parity gates between hops (torch -> ONNX Runtime -> OpenVINO), with named tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Named tolerances. Embeddings are O(1); logits reach |x| ~ 40.
EMBEDDING_MAX_ABS = 1e-3
LOGIT_MAX_ABS = 5e-2
MASK_SIGN_AGREEMENT = 0.9995  # fraction of low-res pixels with the same sign of the logit


class ParityError(RuntimeError):
    """A hop drifted beyond its tolerance."""


@dataclass(frozen=True)
class HopResult:
    hop: str
    embedding_max_abs: float
    logit_max_abs: float
    mask_sign_agreement: float

    def passed(self) -> bool:
        return (
            self.embedding_max_abs <= EMBEDDING_MAX_ABS
            and self.logit_max_abs <= LOGIT_MAX_ABS
            and self.mask_sign_agreement >= MASK_SIGN_AGREEMENT
        )

    def as_dict(self) -> dict[str, float | str | bool]:
        return {**asdict(self), "passed": self.passed()}


def parity_inputs(input_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic probe inputs: (3, 3, S, S) images in [0, 1] and (3, 4) boxes.

    A bright disk on noise (a segmentable object), plain noise, and a smooth gradient.
    """
    rng = np.random.default_rng(seed)
    s = input_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    disk = ((yy - 0.45 * s) ** 2 + (xx - 0.55 * s) ** 2 < (0.2 * s) ** 2).astype(np.float32)
    noise = rng.random((s, s), dtype=np.float32)
    images = np.stack(
        [
            np.clip(0.7 * disk + 0.3 * noise, 0, 1),
            noise,
            (yy + xx) / (2 * s - 2),
        ]
    )
    images = np.repeat(images[:, None], 3, axis=1).astype(np.float32)  # (3, 3, S, S)
    boxes = np.array(
        [
            [0.33 * s, 0.23 * s, 0.77 * s, 0.67 * s],
            [0.1 * s, 0.1 * s, 0.5 * s, 0.6 * s],
            [0.4 * s, 0.3 * s, 0.9 * s, 0.95 * s],
        ],
        dtype=np.float32,
    )  # (3, 4) XYXY model frame
    return images, boxes


def compare(hop: str, ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> HopResult:
    """ref/got: (embeddings (B, 256, 64, 64), logits (B, 1, 256, 256))."""
    emb_diff = float(np.abs(ref[0] - got[0]).max())
    logit_diff = float(np.abs(ref[1] - got[1]).max())
    agree = float(np.mean((ref[1] > 0) == (got[1] > 0)))
    return HopResult(hop, emb_diff, logit_diff, agree)


def check(result: HopResult) -> None:
    if not result.passed():
        msg = (
            f"parity failed at hop {result.hop}: embedding max|d|={result.embedding_max_abs:.2e} "
            f"(tol {EMBEDDING_MAX_ABS}), logit max|d|={result.logit_max_abs:.2e} (tol {LOGIT_MAX_ABS}), "
            f"mask sign agreement={result.mask_sign_agreement:.5f} (min {MASK_SIGN_AGREEMENT})"
        )
        raise ParityError(msg)
