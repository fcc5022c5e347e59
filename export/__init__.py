"""Offline export stage: PyTorch checkpoints -> ONNX -> OpenVINO IR, with parity gates.

Needs the development requirements (torch, onnx, onnxruntime). Never imported by ``app/``.
"""
