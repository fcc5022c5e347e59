"""SAM prompt encoder (box and mask prompts), key names as in LiteMedSAM's checkpoint.

Coordinates are in the model input frame: pixels of the (S, S) padded encoder input, XYXY.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from modeling.architectures.layers import LayerNorm2d


class RandomFourierPE(nn.Module):
    """Positional encoding of normalised (x, y) coordinates with a fixed Gaussian matrix."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords01: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2*num_feats)."""
        proj = 2 * math.pi * ((2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def dense(self, hw: tuple[int, int]) -> torch.Tensor:
        """(C, H, W) encoding of the centres of an H x W grid."""
        h, w = hw
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        return self.encode(grid).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Embeds box prompts into sparse tokens; no-mask dense embedding."""

    def __init__(self, embed_dim: int = 256, embedding_hw: int = 64, input_size: int = 256) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.embedding_hw = embedding_hw
        self.input_size = input_size
        self.pe_layer = RandomFourierPE(embed_dim // 2)
        # 0/1: negative/positive point, 2/3: box top-left/bottom-right corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        mask_chans = 16
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans),
            nn.GELU(),
            nn.Conv2d(mask_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """(1, C, 64, 64) positional encoding of the image embedding grid."""
        return self.pe_layer.dense((self.embedding_hw, self.embedding_hw)).unsqueeze(0)

    def embed_boxes(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """(B, 4) boxes in input-frame pixels -> (B, 2, C) corner tokens (SAM adds +0.5)."""
        corners = (boxes_xyxy.reshape(-1, 2, 2) + 0.5) / self.input_size  # (B, 2, 2) in [0, 1]
        emb = self.pe_layer.encode(corners)  # (B, 2, C)
        corner_bias = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return emb + corner_bias  # (B, 2, C)

    def no_mask_dense(self, batch: int) -> torch.Tensor:
        """(B, C, 64, 64) dense embedding used when no mask prompt is given."""
        hw = self.embedding_hw
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, hw, hw)
