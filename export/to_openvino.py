"""ONNX -> OpenVINO IR (fp32 weights), with the model's contract written into rt_info."""

from __future__ import annotations

from pathlib import Path

import openvino as ov


def convert_to_ir(onnx_path: Path, xml_path: Path, rt_info: dict[str, str], batch_one: bool = False) -> None:
    """Convert and save uncompressed fp32 IR (``compress_to_fp16=False``).

    fp16-compressed weights give no speed-up on this CPU and cost up to 0.6% Dice per box
    (REFERENCE.md section 10), so the IR keeps fp32. ``batch_one``: every input's batch axis
    fixed to 1 (``make export`` ships both graphs so: the app encodes one slice and decodes one
    box per call). A static graph lets OpenVINO fold constants (the decoder's positional
    encoding) and build its kernels at compile time instead of at the first call (Intel Xeon:
    decoder first call 0.15 -> 0.10 s on a loaded machine; TinyViT encoder 0.40 -> 0.35 s per
    slice, first call 0.49 -> 0.41 s, the student 0.075 -> 0.069 s; embeddings within 3e-7).
    """
    model = ov.convert_model(str(onnx_path))
    if batch_one:
        model.reshape({port.get_any_name(): [1, *port.get_partial_shape()[1:]] for port in model.inputs})
    for key, value in rt_info.items():
        model.set_rt_info(str(value), ["model_info", key])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
