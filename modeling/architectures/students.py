"""Candidate student image encoders: (B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64), like TinyViT.

Written here from the papers' descriptions (no package with these definitions imports on this
machine, and no pretrained weights can be downloaded: every student starts from random init).
A student is a backbone that yields feature maps at several strides plus a SAM-style neck that
projects each to 256 channels, resizes them to the 64 x 64 embedding grid, sums them and
refines the sum. Candidates are one table, ``STUDENTS``: family, widths, depths, neck.

- ``evit``: EfficientViT-SAM's backbone (REFERENCE.md section 7): conv stem + ResBlock,
  FusedMBConv stages at /4 and /8, MBConv at /16, EfficientViT blocks (ReLU linear attention
  with multi-scale 5x5 aggregation + MBConv FFN) at /32.
- ``repvit``: RepViT-style mobile CNN (MobileNetV3 layout with ViT-style separate token mixer
  (depthwise 3x3, in its re-parameterised inference form) and channel mixer (1x1 MLP), SE in
  every other block).
- ``mobile``: a plain depthwise-separable CNN (the probe of REFERENCE.md section 10).

Neck blocks: ``fused`` = FusedMBConv(256, expand 1) as in EfficientViT-SAM L0 (a full 3x3 conv
at 64 x 64, the costly part), ``dw`` = depthwise-separable residual block (cheap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modeling.architectures.layers import LayerNorm2d

EMBED_DIM = 256
EMBED_GRID = 64  # (B, 256, 64, 64), LiteMedSAM's embedding at 256 x 256 input


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.Hardswish())
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def mbconv(cin: int, cout: int, expand: float, stride: int = 1) -> nn.Module:
    """1x1 expand -> depthwise 3x3 (stride) -> 1x1 project; residual when shapes match."""
    mid = int(round(cin * expand))
    body = nn.Sequential(
        conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=mid), conv_bn(mid, cout, 1, act=False)
    )
    return Residual(body) if stride == 1 and cin == cout else body


def fused_mbconv(cin: int, cout: int, expand: float, stride: int = 1) -> nn.Module:
    """3x3 conv expand (stride) -> 1x1 project; residual when shapes match."""
    mid = int(round(cin * expand))
    body = nn.Sequential(conv_bn(cin, mid, 3, stride), conv_bn(mid, cout, 1, act=False))
    return Residual(body) if stride == 1 and cin == cout else body


class LiteMLA(nn.Module):
    """ReLU linear attention over all positions with a 5x5 multi-scale branch (EfficientViT)."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.head_dim = head_dim
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.aggregate = nn.Sequential(
            nn.Conv2d(3 * dim, 3 * dim, 5, padding=2, groups=3 * dim, bias=False),
            nn.Conv2d(3 * dim, 3 * dim, 1, groups=3 * self.heads, bias=False),
        )
        self.proj = conv_bn(2 * dim, dim, 1, act=False)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        b, _, h, w = qkv.shape
        qkv = qkv.reshape(b, -1, 3 * self.head_dim, h * w)  # (B, heads, 3 d, N)
        q, k, v = (
            F.relu(qkv[:, :, : self.head_dim]),
            F.relu(qkv[:, :, self.head_dim : 2 * self.head_dim]),
            qkv[:, :, 2 * self.head_dim :],
        )
        kv = torch.matmul(v, k.transpose(-1, -2))  # (B, heads, d, d)
        num = torch.matmul(kv, q)  # (B, heads, d, N)
        den = torch.matmul(k.sum(dim=-1, keepdim=True).transpose(-1, -2), q)  # (B, heads, 1, N)
        return (num / (den + 1e-6)).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        return self.proj(torch.cat([self._attend(qkv), self._attend(self.aggregate(qkv))], dim=1))


class EfficientViTBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.context = Residual(LiteMLA(dim))
        self.local = mbconv(dim, dim, expand=6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(self.context(x))


class SqueezeExcite(nn.Module):
    def __init__(self, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(8, int(dim * ratio))
        self.fc = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


def repvit_block(dim: int, se: bool) -> nn.Module:
    """Token mixer (depthwise 3x3 + BN, optional SE) then channel mixer (1x1 MLP, expand 2)."""
    token = Residual(
        nn.Sequential(conv_bn(dim, dim, 3, groups=dim, act=False), *([SqueezeExcite(dim)] if se else []))
    )
    channel = Residual(nn.Sequential(conv_bn(dim, 2 * dim, 1), conv_bn(2 * dim, dim, 1, act=False)))
    return nn.Sequential(token, channel)


@dataclass(frozen=True)
class StudentConfig:
    family: str  # "evit" | "repvit" | "mobile"
    widths: tuple[int, ...]  # channels of stem, then of each stage (strides 2, 4, 8, 16, 32)
    depths: tuple[int, ...]  # blocks per stage after its downsample
    neck_from: tuple[int, ...]  # stage indices (into widths) fed to the neck
    neck: str  # "fused" | "dw"
    neck_depth: int


# Candidate name -> configuration. The one table of students.
STUDENTS: dict[str, StudentConfig] = {
    "evit_l0": StudentConfig("evit", (32, 64, 128, 256, 512), (1, 1, 1, 4, 4), (2, 3, 4), "fused", 4),
    "evit_l0_dwneck": StudentConfig("evit", (32, 64, 128, 256, 512), (1, 1, 1, 4, 4), (1, 2, 3, 4), "dw", 2),
    "repvit_m06": StudentConfig("repvit", (20, 40, 80, 160, 320), (0, 1, 1, 7, 1), (1, 2, 3, 4), "dw", 2),
    "mobile_s": StudentConfig("mobile", (16, 32, 64, 128, 256), (0, 1, 2, 3, 2), (1, 2, 3), "dw", 1),
}


def _stage(cfg: StudentConfig, i: int) -> nn.Sequential:
    """Stage ``i`` (stride 2**(i+1)): a downsample to widths[i], then depths[i] blocks."""
    cin, cout, n = (3 if i == 0 else cfg.widths[i - 1]), cfg.widths[i], cfg.depths[i]
    if i == 0:
        layers: list[nn.Module] = [conv_bn(cin, cout, 3, 2)]
        layers += [
            Residual(nn.Sequential(conv_bn(cout, cout), conv_bn(cout, cout, act=False))) for _ in range(n)
        ]
        return nn.Sequential(*layers)
    if cfg.family == "evit":
        if i <= 2:
            return nn.Sequential(
                fused_mbconv(cin, cout, 16 if i == 1 else 4, 2),
                *[fused_mbconv(cout, cout, 4) for _ in range(n)],
            )
        block = (lambda: mbconv(cout, cout, 4)) if i == 3 else (lambda: EfficientViTBlock(cout))
        return nn.Sequential(mbconv(cin, cout, 4 if i == 3 else 6, 2), *[block() for _ in range(n)])
    if cfg.family == "repvit":
        down = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=False), conv_bn(cin, cout, 1))
        return nn.Sequential(down, *[repvit_block(cout, se=(j % 2 == 0)) for j in range(n)])
    return nn.Sequential(mbconv(cin, cout, 4, 2), *[mbconv(cout, cout, 4) for _ in range(n)])


class Neck(nn.Module):
    """Each chosen stage -> 1x1 conv+BN to 256 -> bilinear to 64 x 64 -> sum -> blocks -> 1x1 -> LN."""

    def __init__(self, widths: list[int], kind: str, depth: int) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(conv_bn(w, EMBED_DIM, 1, act=False) for w in widths)
        if kind == "fused":
            blocks = [fused_mbconv(EMBED_DIM, EMBED_DIM, 1) for _ in range(depth)]
        else:
            blocks = [
                Residual(
                    nn.Sequential(
                        conv_bn(EMBED_DIM, EMBED_DIM, 3, groups=EMBED_DIM),
                        conv_bn(EMBED_DIM, EMBED_DIM, 1, act=False),
                    )
                )
                for _ in range(depth)
            ]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(nn.Conv2d(EMBED_DIM, EMBED_DIM, 1), LayerNorm2d(EMBED_DIM))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = sum(
            F.interpolate(proj(f), size=(EMBED_GRID, EMBED_GRID), mode="bilinear", align_corners=False)
            if f.shape[-1] != EMBED_GRID
            else proj(f)
            for proj, f in zip(self.inputs, feats, strict=True)
        )
        return self.out(self.blocks(x))


class StudentEncoder(nn.Module):
    """(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stages = nn.ModuleList(_stage(cfg, i) for i in range(len(cfg.widths)))
        self.neck = Neck([cfg.widths[i] for i in cfg.neck_from], cfg.neck, cfg.neck_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return self.neck([feats[i] for i in self.cfg.neck_from])


def build_student(name: str) -> StudentEncoder:
    try:
        return StudentEncoder(STUDENTS[name])
    except KeyError:
        msg = f"unknown student {name!r}; valid: {sorted(STUDENTS)}"
        raise ValueError(msg) from None
