"""LiteMedSAM's TinyViT image encoder at 256x256 input.

This is the variant LiteMedSAM trained (not MobileSAM's): the patch embedding is two 1x1
convolutions at full resolution, the conv stage runs at 256x256, and the last patch merging
(to 320 channels) keeps the resolution, so stages run at 256, 128, 64 and 64 pixels.
Output: (B, 256, 64, 64) image embedding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from modeling.architectures.layers import LayerNorm2d


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyper-parameters of one TinyViT variant."""

    img_size: int = 256
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    # Stride of the patch merging that ends stage i (stages 0..2); LiteMedSAM keeps 64x64 at the end.
    merge_strides: tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    embedding_dim: int = 256


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (keys ``c`` and ``bn``)."""

    def __init__(self, c_in: int, c_out: int, ks: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(c_in, c_out, ks, stride, ks // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(c_out))


class PatchEmbed(nn.Module):
    """(B, 3, S, S) -> (B, C0, S, S): two pointwise ConvBN with GELU between."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(c_in, c_out // 2), nn.GELU(), ConvBN(c_out // 2, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, ks=3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        y = self.conv3(y)
        return F.gelu(x + y)


class PatchMerging(nn.Module):
    """(B, C, H, W) or tokens (B, H*W, C) -> tokens (B, H'*W', C_out)."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, ks=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            b = x.shape[0]  # not len(x): keeps the batch axis dynamic in ONNX
            x = x.view(b, self.resolution, self.resolution, -1).permute(0, 3, 1, 2)  # (B, C, H, W)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)  # (B, H'*W', C_out)


def relative_offset_index(window: int) -> torch.Tensor:
    """(N, N) int64 index into a table of |dy|*window+|dx| offsets, N = window**2."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(
        1
    )  # (2, N), row-major (y, x)
    delta = (coords[:, :, None] - coords[:, None, :]).abs()  # (2, N, N)
    return delta[0] * window + delta[1]


class WindowAttention(nn.Module):
    """Multi-head attention inside one window with a learned per-offset bias."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_idxs", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B*windows, N, C)
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=3)  # each (B, heads, N, d)
        bias = self.attention_biases[:, self.bias_idxs]  # (heads, N, N)
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(x)


class SplitQKVAttention(WindowAttention):
    """``WindowAttention`` with its fused qkv projection run as three (same weights, same
    function): the exported graph then has no split of the qkv tensor (OpenVINO's CPU plugin runs
    that split with a reference kernel, ~3% of the encoder; `make graph-forms`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B*windows, N, C)
        h, d = self.num_heads, self.head_dim
        normed = self.norm(x)
        weight = self.qkv.weight.view(h, 3, d, -1)  # output channel h*3d + j: q (j < d), k, v
        bias = self.qkv.bias.view(h, 3, d)
        q, k, v = (
            F.linear(normed, weight[:, i].reshape(h * d, -1), bias[:, i].reshape(h * d))
            .view(b, n, h, d)
            .transpose(1, 2)
            for i in range(3)
        )  # each (B, heads, N, d)
        bias_table = self.attention_biases[:, self.bias_idxs]  # (heads, N, N)
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias_table).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, h * d))


def with_split_qkv(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` whose TinyViT window attentions are ``SplitQKVAttention`` (the
    exported form; training keeps the fused module). ``encoder`` is left as it is."""
    out = copy.deepcopy(encoder)
    for block in out.modules():
        if isinstance(block, TinyViTBlock):
            attn = block.attn
            split = SplitQKVAttention(attn.qkv.in_features, attn.num_heads, block.window)
            split.load_state_dict(attn.state_dict())
            block.attn = split.train(attn.training)
    return out


class TokenMLP(nn.Module):
    """LayerNorm, Linear, GELU, Linear on tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention, 3x3 depthwise local conv, MLP; tokens (B, R*R, C) in and out."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, ks=3, groups=dim)
        self.mlp = TokenMLP(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        r, w = self.resolution, self.window
        if r == w:
            return self.attn(x)
        pad = (w - r % w) % w
        x = F.pad(x.view(b, r, r, c), (0, 0, 0, pad, 0, pad))  # (B, R+pad, R+pad, C)
        nw = (r + pad) // w
        x = x.view(b, nw, w, nw, w, c).transpose(2, 3).reshape(b * nw * nw, w * w, c)
        x = self.attn(x)
        x = x.view(b, nw, nw, w, w, c).transpose(2, 3).reshape(b, r + pad, r + pad, c)
        return x[:, :r, :r].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape  # (B, R*R, C)
        x = x + self._windowed_attention(x)
        x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)  # (B, C, R, R)
        x = self.local_conv(x).view(b, c, n).transpose(1, 2)  # (B, R*R, C)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks on (B, C, H, W), then patch merging to tokens."""

    def __init__(self, dim: int, depth: int, expand: float, downsample: PatchMerging) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1..3: TinyViT blocks on tokens, then optional patch merging."""

    def __init__(self, blocks: list[TinyViTBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


def _stage_resolutions(cfg: TinyViTConfig) -> list[int]:
    """Spatial size (pixels per side) at which each stage runs."""
    res = [cfg.img_size]
    for stride in cfg.merge_strides:
        res.append(res[-1] // stride)
    return res


class TinyViT(nn.Module):
    """(B, 3, 256, 256) float in [0, 1] -> (B, 256, 64, 64) image embedding."""

    def __init__(self, cfg: TinyViTConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TinyViTConfig()
        self.cfg = cfg
        dims, res = cfg.embed_dims, _stage_resolutions(cfg)
        self.out_hw = res[-1]
        self.patch_embed = PatchEmbed(3, dims[0])
        layers: list[nn.Module] = []
        for i, dim in enumerate(dims):
            merge = None
            if i < len(dims) - 1:
                merge = PatchMerging(res[i], dim, dims[i + 1], cfg.merge_strides[i])
            if i == 0:
                assert merge is not None
                layers.append(ConvStage(dim, cfg.depths[0], cfg.mbconv_expand_ratio, merge))
                continue
            blocks = [
                TinyViTBlock(dim, res[i], cfg.num_heads[i], cfg.window_sizes[i], cfg.mlp_ratio)
                for _ in range(cfg.depths[i])
            ]
            layers.append(AttentionStage(blocks, merge))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], cfg.embedding_dim, kernel_size=1, bias=False),
            LayerNorm2d(cfg.embedding_dim),
            nn.Conv2d(cfg.embedding_dim, cfg.embedding_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.embedding_dim),
        )

    def trunk(self, x: torch.Tensor, stages: int) -> torch.Tensor:
        """The patch embedding and the first ``stages`` stages: (B, 3, S, S) -> their output
        (stage 0 ends in a (B, (S/2)^2, 128) token grid, stage 1 in (B, (S/4)^2, 160))."""
        x = self.patch_embed(x)  # (B, 64, S, S)
        for layer in self.layers[:stages]:
            x = layer(x)  # tokens (B, R*R, C)
        return x

    def rest(self, x: torch.Tensor, stages: int) -> torch.Tensor:
        """The stages after ``trunk(., stages)`` and the neck -> (B, 256, S/4, S/4)."""
        for layer in self.layers[stages:]:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, self.out_hw, self.out_hw, c).permute(0, 3, 1, 2)  # (B, 320, S/4, S/4)
        return self.neck(x)  # (B, 256, S/4, S/4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.trunk(x, 0), 0)  # (B, 256, 64, 64) at S = 256


@dataclass(frozen=True)
class TeacherAt:
    """A student that keeps the teacher's weights: TinyViT at ``size`` inside the 256 frame,
    optionally with a learned detail head (``DetailHead``) that restores the 64x64 grid's detail."""

    size: int
    detail: bool = False


# Students built from LiteMedSAM's own TinyViT (issue 18); name -> how.
TEACHER_AT: dict[str, TeacherAt] = {
    "tinyvit_r128": TeacherAt(128),
    "tinyvit_r128d": TeacherAt(128, detail=True),
    "tinyvit_r112d": TeacherAt(112, detail=True),  # 14.5 GFLOP: 0.70x r128d's 20.75
    # 29.6 GFLOP, 2.7x below TinyViT at bf16 (stop 45): a 2D case on it ~0.54 s, ~5.5x the baseline
    "tinyvit_r160d": TeacherAt(160, detail=True),
    "tinyvit_r192": TeacherAt(192),
}


class DetailHead(nn.Module):
    """A residual for the upsampled embedding from the full-resolution image:
    image (B, 3, 256, 256) -> space-to-depth (B, 48, 64, 64); embedding (B, 256, 64, 64) -> 1x1 to
    (B, 64, 64, 64); both -> 3x3 conv + GELU (B, 64, 64, 64) -> 1x1 to (B, 256, 64, 64), initialised
    to zero so that the head starts as the identity (the student starts as the plain teacher-at-size).
    ~0.8 GFLOP per image."""

    def __init__(self, hidden: int = 64, embedding_dim: int = 256, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride  # 256 image pixels per embedding cell, per side (a constant: ONNX needs one)
        self.context = nn.Conv2d(embedding_dim, hidden, kernel_size=1)
        self.fuse = nn.Conv2d(3 * stride * stride + hidden, hidden, kernel_size=3, padding=1)
        self.out = nn.Conv2d(hidden, embedding_dim, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, image: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        pixels = F.pixel_unshuffle(image, self.stride)  # (B, 48, 64, 64)
        hidden = F.gelu(self.fuse(torch.cat([pixels, self.context(embedding)], dim=1)))
        return embedding + self.out(hidden)


class ReducedResolution(nn.Module):
    """TinyViT run at ``size`` x ``size`` inside the 256 frame (a student that keeps the teacher's
    weights: every key of LiteMedSAM's encoder fits at any size):
    (B, 3, 256, 256) -> bilinear to (B, 3, size, size) -> TinyViT -> (B, 256, size/4, size/4)
    -> bilinear to (B, 256, 64, 64) [-> ``DetailHead`` with the 256 image, when ``detail``]."""

    def __init__(self, size: int, detail: bool = False) -> None:
        super().__init__()
        self.size = size
        self.encoder = TinyViT(TinyViTConfig(img_size=size))
        self.detail = DetailHead() if detail else None

    def load_teacher(self, teacher: TinyViT) -> None:
        """Copy every weight of the full-resolution teacher (strict: all keys and shapes fit)."""
        self.encoder.load_state_dict(teacher.state_dict(), strict=True)

    def trunk(self, x: torch.Tensor, stages: int) -> torch.Tensor:
        """(B, 3, 256, 256) -> the reduced-size TinyViT's first ``stages`` stages (frozen while
        distilling, so their output can be computed once per cached view)."""
        small = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.encoder.trunk(small, stages)

    def rest(self, tokens: torch.Tensor, x: torch.Tensor, stages: int) -> torch.Tensor:
        """``trunk``'s output and the 256 input -> (B, 256, 64, 64)."""
        emb = self.encoder.rest(tokens, stages)  # (B, 256, size/4, size/4)
        up = F.interpolate(emb, size=(64, 64), mode="bilinear", align_corners=False)
        return up if self.detail is None else self.detail(x, up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.trunk(x, 0), x, 0)


def build_teacher_at(name: str) -> ReducedResolution:
    try:
        how = TEACHER_AT[name]
    except KeyError:
        msg = f"unknown teacher-at-size student {name!r}; valid: {sorted(TEACHER_AT)}"
        raise ValueError(msg) from None
    return ReducedResolution(how.size, how.detail)
