"""Box-prompted SAM composition and the architecture registry."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modeling.architectures.mask_decoder import MaskDecoder
from modeling.architectures.prompt_encoder import PromptEncoder
from modeling.architectures.students import STUDENTS, build_student
from modeling.architectures.tiny_vit import TEACHER_AT, TinyViT, build_teacher_at


def decode_boxes(
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    embeddings: torch.Tensor,
    boxes_xyxy: torch.Tensor,
) -> torch.Tensor:
    """(B, 256, 64, 64) embeddings, (B, 4) model-frame boxes -> (B, 1, 256, 256) single-mask logits."""
    sparse = prompt_encoder.embed_boxes(boxes_xyxy)  # (B, 2, 256)
    dense = prompt_encoder.no_mask_dense(boxes_xyxy.shape[0])  # (B, 256, 64, 64)
    logits, _ = mask_decoder(embeddings, prompt_encoder.dense_pe(), sparse, dense)
    return logits


class BoxSAM(nn.Module):
    """Image encoder + prompt encoder + mask decoder; boxes only, single-mask output."""

    def __init__(self, image_encoder: nn.Module, input_size: int = 256) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = PromptEncoder(input_size=input_size)
        self.mask_decoder = MaskDecoder()

    def decode(self, embeddings: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """(B, 256, 64, 64) embeddings, (B, 4) model-frame boxes -> (B, 1, 256, 256) logits."""
        return decode_boxes(self.prompt_encoder, self.mask_decoder, embeddings, boxes_xyxy)

    def forward(self, images: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        return self.decode(self.image_encoder(images), boxes_xyxy)


def build_lite_medsam() -> BoxSAM:
    """LiteMedSAM: TinyViT (5.7 M) at 256 + SAM prompt encoder + mask decoder."""
    return BoxSAM(TinyViT(), input_size=256)


def build_student_sam(student: str) -> BoxSAM:
    """A candidate student encoder (``export/architectures/students.py``) + LiteMedSAM's prompt
    encoder and mask decoder (loaded from LiteMedSAM's checkpoint, reused unchanged)."""
    return BoxSAM(build_student(student), input_size=256)


def build_teacher_at_sam(name: str) -> BoxSAM:
    """LiteMedSAM's TinyViT at a reduced input size (``tiny_vit.TEACHER_AT``) + LiteMedSAM's prompt
    encoder and mask decoder; the encoder starts from the teacher's weights when trained
    (``ReducedResolution.load_teacher``) and is stored as an overlay."""
    return BoxSAM(build_teacher_at(name), input_size=256)


# Architecture name -> builder. Training code imports the same table.
ARCHITECTURES: dict[str, Callable[[], BoxSAM]] = {
    "lite_medsam": build_lite_medsam,
    **{f"student_{name}": partial(build_student_sam, name) for name in STUDENTS},
    **{f"student_{name}": partial(build_teacher_at_sam, name) for name in TEACHER_AT},
}


def build_architecture(name: str) -> BoxSAM:
    """Build an architecture by name; raises ValueError listing the valid names."""
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        msg = f"unknown architecture {name!r}; valid: {sorted(ARCHITECTURES)}"
        raise ValueError(msg) from None


def encoder_gflops(model: BoxSAM, input_size: int) -> float:
    """FLOPs (2 x multiply-adds) of one (1, 3, S, S) encoder pass, counted by torch."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.image_encoder(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() / 1e9
