"""Trace-friendly wrappers: the two graphs the runtime executes.

encoder: image (B, 3, S, S) float32 in [0, 1] -> image_embeddings (B, 256, 64, 64); TinyViT's
         window attentions run their qkv projection as three (``tiny_vit.SplitQKVAttention``)
decoder: image_embeddings (1, 256, 64, 64), one image, and boxes (B, 4) float32 XYXY
         model-frame pixels on it -> low_res_logits (B, 1, 256, 256). Prompt encoding, the
         no-mask dense embedding and the dense positional encoding (a constant) are folded in;
         the mask decoder's cross-attentions run folded, and the B boxes share the image until
         they first update it (``folded_decoder.decode_on_one_image``). The IR ships with B = 1;
         the app reshapes it to a batch of boxes for images with many (``app/infer_2d.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from modeling.architectures.folded_decoder import decode_on_one_image, folded
from modeling.architectures.sam import BoxSAM
from modeling.architectures.tiny_vit import with_split_qkv

ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("image_embeddings",)
DECODER_INPUTS = ("image_embeddings", "boxes")
DECODER_OUTPUTS = ("low_res_logits",)


class EncoderForExport(nn.Module):
    def __init__(self, model: BoxSAM) -> None:
        super().__init__()
        self.encoder = with_split_qkv(model.image_encoder)  # a copy: ``model`` is unchanged
        self.eval()  # a new Module starts in train mode; the exporter restores it recursively

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


class DecoderForExport(nn.Module):
    def __init__(self, model: BoxSAM) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = folded(model.mask_decoder)  # a folded copy: ``model`` is unchanged
        self.eval()

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``BoxSAM.decode`` of each box on the one image (same weights, same function)."""
        return decode_on_one_image(self.prompt_encoder, self.mask_decoder, image_embeddings, boxes)
