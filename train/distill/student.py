"""The student encoder's construction and freezing: torch and ``modeling`` only, so that the
GPU trainer (``train/distill/gpu.py``, on a machine with neither OpenVINO nor the PyPI weights)
and the CPU loop (``train/distill/loop.py``) build a student the same way."""

from __future__ import annotations

import torch

from modeling.architectures.sam import build_architecture
from modeling.architectures.tiny_vit import ReducedResolution, TinyViT


def student_encoder(student: str, teacher: TinyViT) -> torch.nn.Module:
    """The student's encoder at step 0: ``teacher``'s weights where the architecture keeps them
    (``ReducedResolution``), else a random initialisation (seeded by the caller)."""
    encoder = build_architecture(f"student_{student}").image_encoder
    if isinstance(encoder, ReducedResolution):
        encoder.load_teacher(teacher)
    return encoder


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Keep BatchNorm layers on their running statistics (the teacher's) while training with
    small batches; their affine weights still train."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def freeze_trunk(encoder: torch.nn.Module, stages: int) -> int:
    """Freeze a teacher-at-size student's patch embedding and first ``stages`` stages; the number
    frozen (0 for other students, which train whole)."""
    if not isinstance(encoder, ReducedResolution) or stages == 0:
        return 0
    for module in (encoder.encoder.patch_embed, *encoder.encoder.layers[:stages]):
        for p in module.parameters():
            p.requires_grad_(False)
    return stages
