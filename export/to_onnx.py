"""torch -> ONNX for the encoder and decoder graphs (TorchScript exporter, opset 17)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.wrappers import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS

OPSET = 17


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    names: tuple[tuple[str, ...], tuple[str, ...]],
    dynamic: dict[str, dict[int, str]],
) -> None:
    inputs, outputs = names
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_encoder(module: nn.Module, input_size: int, path: Path) -> None:
    dummy = torch.rand(1, 3, input_size, input_size)  # (B, 3, S, S)
    batch = {name: {0: "batch"} for name in (*ENCODER_INPUTS, *ENCODER_OUTPUTS)}
    _export(module, (dummy,), path, (ENCODER_INPUTS, ENCODER_OUTPUTS), batch)


def export_decoder(module: nn.Module, input_size: int, path: Path) -> None:
    """One image (1, 256, 64, 64), any number of boxes (B, 4) on it: the box axis is dynamic."""
    emb = torch.randn(1, 256, 64, 64)  # (1, 256, 64, 64)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.3, 0.1, 0.6, 0.5]]) * input_size  # (B, 4)
    per_box = {"boxes": {0: "boxes"}, "low_res_logits": {0: "boxes"}}
    _export(module, (emb, boxes), path, (DECODER_INPUTS, DECODER_OUTPUTS), per_box)
