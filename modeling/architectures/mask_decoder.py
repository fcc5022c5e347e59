"""SAM two-way transformer and mask decoder, key names as in LiteMedSAM's checkpoint."""

from __future__ import annotations

import math

import torch
from torch import nn

from modeling.architectures.layers import MLP, LayerNorm2d


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, N, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)  # (B, N, h, d)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token (SAM's TwoWayAttentionBlock)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.skip_first_pe = skip_first_pe
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample_rate=2)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 256, heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe: (B, C, H, W); tokens: (B, T, C) -> (B, T, C), (B, H*W, C)."""
        keys = image.flatten(2).transpose(1, 2)  # (B, HW, C)
        key_pe = image_pe.flatten(2).transpose(1, 2)  # (B, HW, C)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


def mask_as_matmul(up: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) upscaled features, (B, K) hypernetwork weights -> (B, 1, H, W), as SAM writes it."""
    b, _, h, w = up.shape
    return (hyper.unsqueeze(1) @ up.flatten(2)).view(b, 1, h, w)


def mask_as_weighted_sum(up: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """The same function as a channel-weighted sum: on OpenVINO's CPU plugin it skips a reorder of
    the (B, K, 256, 256) features before the matmul (the exported form, `make graph-forms`)."""
    return (up * hyper[:, :, None, None]).sum(dim=1, keepdim=True)


class MaskDecoder(nn.Module):
    """Predicts low-resolution (4x the embedding size) mask logits from tokens and an embedding."""

    # (up, hyper) -> logits: SAM's form here (training, the oracle); the export swaps in the sum
    mask_product = staticmethod(mask_as_matmul)

    def __init__(self, dim: int = 256, num_multimask: int = 3) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask + 1
        self.transformer = TwoWayTransformer(dim=dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output.

        Args:
            image_embeddings: (B, C, 64, 64), one per prompt (B prompts on B embeddings).
            image_pe: (1, C, 64, 64).
            sparse: (B, T, C) prompt tokens; dense: (B, C, 64, 64).
        Returns:
            (B, 1, 256, 256) mask logits and (B, 1) predicted IoU.
        """
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])  # (5, C)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)  # (B, 5+T, C)
        src = image_embeddings + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src_tokens = self.transformer(src, pos, tokens)
        src = src_tokens.transpose(1, 2).reshape(b, c, h, w)
        up = self.output_upscaling(src)  # (B, C/8, 4h, 4w)
        mask_token = hs[:, 1, :]  # single-mask output uses mask token 0
        hyper = self.output_hypernetworks_mlps[0](mask_token)  # (B, C/8)
        masks = self.mask_product(up, hyper)  # (B, 1, 4h, 4w)
        iou = self.iou_prediction_head(hs[:, 0, :])[:, :1]
        return masks, iou
