"""ONNX -> OpenVINO IR (fp32 weights), with the model's contract written into rt_info."""

from __future__ import annotations

from pathlib import Path

import openvino as ov


def convert_to_ir(onnx_path: Path, xml_path: Path, rt_info: dict[str, str]) -> None:
    """Convert and save uncompressed fp32 IR (``compress_to_fp16=False``).

    fp16-compressed weights give no speed-up on this CPU and cost up to 0.6% Dice per box
    (REFERENCE.md section 10), so the IR keeps fp32.
    """
    model = ov.convert_model(str(onnx_path))
    for key, value in rt_info.items():
        model.set_rt_info(str(value), ["model_info", key])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
