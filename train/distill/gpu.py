"""``python -m train.distill.gpu``: distil a student encoder from a kit, on a lent GPU.

The CPU loop (``make distill``) sees each of 1768 cached views a few times in 800 steps, and its
student fits them better than unseen ones (train MSE 0.0028 vs validation 0.0038 at step 800):
it is short of data and compute, not of steps. On a GPU the teacher is cheap, so every step
draws fresh views of the kit's images (``train/distill/kit.py``) and computes the teacher's
embedding of exactly those:

- a view: a random crop of the image's content (each side ``crop_min``-1 of it), flips, quarter
  turns, gamma and contrast, then the app's framing (longest side to 256, min-max, zero padding
  below and right), so every input is one the app could give;
- the target: TinyViT (the kit's fp16 weights) on that input, at ``teacher_precision``;
- the student: MSE to the target, bf16 autocast on CUDA, AdamW with warm-up and a cosine decay
  over the time budget (``minutes``: a device session has 15 minutes in all).

It imports torch, numpy, ``modeling`` and the app's geometry (``app/preprocessing.py``: numpy and
OpenCV) only: the device has no OpenVINO and no PyPI. Out:
``<out>/<student>_gpu.pt``, a carry in the CPU loop's format (``encoder`` fp16, ``step``,
``config``, ``log``), judged back here by the gate on the validation split:
``python -m train.distill --student <student> --start-from <carry> --steps 0 --probe``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from app.preprocessing import resized_hw
from modeling.architectures.tiny_vit import TinyViT
from modeling.checkpoint import state_fp16, state_fp32
from train.distill.frame import SIZE, content_hw
from train.distill.student import freeze_batchnorm, freeze_trunk, student_encoder

KIT_VIEWS, KIT_TEACHER, KIT_CARD = "views.npz", "teacher_encoder_fp16.pt", "kit.json"  # kit.py writes them
TEACHER_PRECISIONS = ("fp32", "tf32", "bf16")
BALANCES = ("source", "none")


@dataclass(frozen=True)
class GpuConfig:
    student: str = "tinyvit_r112d"
    minutes: float = 7.0  # training time budget (the cosine decay spans it; a device session has 15 min)
    max_steps: int = 1_000_000
    batch: int = 64
    lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    frozen_stages: int = 0  # a GPU can afford to train the whole student
    crop_min: float = 0.7  # each side of a view's crop: this share of the content, or more
    teacher_precision: str = "tf32"
    holdout_share: float = 0.02  # kit views never trained on: the over-fitting check
    # How a step draws its views: "source" gives every source the same chance (the kit is ~80%
    # volume slices and 2% colour pictures, while users bring mostly 2D pictures), "none" each view.
    balance: str = "source"
    log_every: int = 100
    seed: int = 0


@dataclass(frozen=True)
class ViewDraw:
    """One view's random choices: crop (shares of the content's height and width, and where),
    flips, quarter turns (counter-clockwise), gamma, contrast."""

    crop_hw: tuple[float, float]
    crop_at: tuple[float, float]
    flip_lr: bool
    flip_ud: bool
    quarter_turns: int
    gamma: float
    contrast: float


def draw(rng: np.random.Generator, crop_min: float) -> ViewDraw:
    return ViewDraw(
        (float(rng.uniform(crop_min, 1.0)), float(rng.uniform(crop_min, 1.0))),
        (float(rng.random()), float(rng.random())),
        bool(rng.random() < 0.5),
        bool(rng.random() < 0.5),
        int(rng.integers(0, 4)),
        float(rng.uniform(0.7, 1.5)),
        float(rng.uniform(0.8, 1.2)),
    )


def framed(content: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(3, h, w) float image in [0, 1] -> the app's (3, S, S) encoder input of it: longest side
    resized to S (bilinear, antialiased when shrinking, as INTER_AREA), min-max over the
    resized image, zero padding below and right."""
    h, w = content.shape[1:]
    newh, neww = resized_hw((h, w), size)  # the app's own geometry
    shrink = max(newh, neww) < max(h, w)
    resized = F.interpolate(
        content[None], size=(newh, neww), mode="bilinear", align_corners=False, antialias=shrink
    )[0]  # (3, newh, neww)
    lo, hi = resized.min(), resized.max()
    out = torch.zeros((3, size, size), dtype=content.dtype, device=content.device)
    out[:, :newh, :neww] = (resized - lo) / torch.clamp(hi - lo, min=1e-8)
    return out


def view_of(image: torch.Tensor, hw: tuple[int, int], how: ViewDraw) -> torch.Tensor:
    """(3, S, S) framed float view whose content is its top-left ``hw`` -> a new framed view:
    ``how``'s crop of that content, flips, turns, gamma and contrast (about the mean), then
    :func:`framed`."""
    h, w = hw
    ch, cw = max(8, round(h * how.crop_hw[0])), max(8, round(w * how.crop_hw[1]))
    y0, x0 = int(how.crop_at[0] * (h - ch + 1)), int(how.crop_at[1] * (w - cw + 1))
    x = image[:, y0 : y0 + ch, x0 : x0 + cw]  # (3, ch, cw)
    if how.flip_lr:
        x = torch.flip(x, dims=(2,))
    if how.flip_ud:
        x = torch.flip(x, dims=(1,))
    x = torch.rot90(x, k=how.quarter_turns, dims=(1, 2))
    x = x.clamp(0, 1) ** how.gamma
    x = ((x - x.mean()) * how.contrast + x.mean()).clamp(0, 1)
    return framed(x)


def views_batch(
    images: torch.Tensor, hws: np.ndarray, rng: np.random.Generator, crop_min: float
) -> torch.Tensor:
    """(B, 3, S, S) uint8 kit views with their content sizes ``hws`` (B, 2) -> (B, 3, S, S)
    float32 new random views (:func:`view_of`)."""
    floats = images.float() / 255.0
    pairs = zip(floats, hws, strict=True)
    return torch.stack([view_of(x, (int(h), int(w)), draw(rng, crop_min)) for x, (h, w) in pairs])


def load_views(kit: Path) -> tuple[torch.Tensor, np.ndarray]:
    """The kit's views as one uint8 (N, 3, S, S) tensor (grey ones repeated to 3 channels) and
    each view's source (N,)."""
    with np.load(kit / KIT_VIEWS) as data:
        grey = torch.from_numpy(data["grey"])[:, None].expand(-1, 3, -1, -1)  # (Ng, 3, S, S)
        views = torch.cat([grey, torch.from_numpy(data["colour"])])  # (N, 3, S, S)
        sources = np.concatenate([data["grey_source"], data["colour_source"]])
    return views.contiguous(), sources


def teacher_of(kit: Path) -> TinyViT:
    """LiteMedSAM's image encoder from the kit's fp16 weights (as float32), in eval mode."""
    teacher = TinyViT()
    state = torch.load(kit / KIT_TEACHER, map_location="cpu", weights_only=True)
    teacher.load_state_dict(state_fp32(state), strict=True)
    return teacher.eval()


def split_holdout(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of ``n`` views: ``share`` of them (at least one when
    n > 1) held out."""
    order = rng.permutation(n)
    held = max(1, round(n * share)) if n > 1 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def draw_chances(sources: np.ndarray, balance: str) -> np.ndarray:
    """(N,) each view's source -> (N,) the chance a step draws it: the same for every view
    ("none"), or the same for every source, shared by its views ("source")."""
    if balance == "none":
        return np.full(len(sources), 1.0 / len(sources))
    names, index, counts = np.unique(sources, return_inverse=True, return_counts=True)
    return 1.0 / (len(names) * counts[index])


def learning_rate(cfg: GpuConfig, step: int, elapsed_share: float) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine decay over the time budget."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, elapsed_share)))


def teacher_embedding(teacher: TinyViT, x: torch.Tensor, precision: str) -> torch.Tensor:
    """(B, 3, S, S) -> the teacher's (B, 256, 64, 64) float32 embedding at ``precision``."""
    with torch.no_grad():
        if precision == "bf16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return teacher(x).float()
        return teacher(x).float()


def holdout_mse(student: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, batch: int) -> float:
    """Mean squared error of ``student`` on held-out inputs (N, 3, S, S) against ``target``."""
    student.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            emb = student(x[i : i + batch]).float()  # (b, 256, 64, 64)
            total += float(F.mse_loss(emb, target[i : i + batch], reduction="sum"))
    return total / target.numel()


def train_step(
    student: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor
) -> float:
    """One AdamW step of the student's MSE to ``target`` (B, 256, 64, 64) on inputs ``x`` (B, 3,
    S, S): bf16 autocast on CUDA, BatchNorm on its running statistics; the loss."""
    student.train()
    freeze_batchnorm(student)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        emb = student(x)  # (B, 256, 64, 64)
    loss = F.mse_loss(emb.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def distill_on_device(
    views: torch.Tensor, sources: np.ndarray, teacher: TinyViT, cfg: GpuConfig, device: torch.device
) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``cfg.student`` from ``teacher`` on fresh views of ``views`` (N, 3, S, S) uint8, whose
    sources are ``sources`` (N,), until the time budget or ``max_steps``; (the student, its log
    rows)."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    teacher = teacher.to(device)
    torch.backends.cuda.matmul.allow_tf32 = cfg.teacher_precision == "tf32"
    torch.backends.cudnn.allow_tf32 = cfg.teacher_precision == "tf32"
    student = student_encoder(cfg.student, teacher).to(device)
    freeze_trunk(student, cfg.frozen_stages)
    hws = content_hw(views.numpy())  # (N, 2), once on the CPU: no GPU sync per view
    views = views.to(device)
    train_rows, held_rows = split_holdout(len(views), cfg.holdout_share, rng)
    chances = draw_chances(sources[train_rows], cfg.balance)  # (T,) sums to 1
    held_x = views[held_rows].float() / 255.0  # (H, 3, S, S): the kit's own framing, unaugmented
    held_target = torch.cat([
        teacher_embedding(teacher, held_x[i : i + cfg.batch], cfg.teacher_precision)
        for i in range(0, len(held_x), cfg.batch)
    ])  # (H, 256, 64, 64)  # fmt: skip
    trainable = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = [{"step": 0, "holdout_mse": holdout_mse(student, held_x, held_target, cfg.batch)}]
    budget, t0, step = cfg.minutes * 60.0, time.perf_counter(), 0
    while step < cfg.max_steps and time.perf_counter() - t0 < budget:
        lr = learning_rate(cfg, step, (time.perf_counter() - t0) / budget)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = rng.choice(train_rows, size=cfg.batch, p=chances)
        x = views_batch(views[rows], hws[rows], rng, cfg.crop_min)  # (B, 3, S, S)
        target = teacher_embedding(teacher, x, cfg.teacher_precision)  # (B, 256, 64, 64)
        step += 1
        row = {"step": step, "train_mse": train_step(student, opt, x, target), "lr": lr}
        if step % cfg.log_every == 0:
            row["holdout_mse"] = holdout_mse(student, held_x, held_target, cfg.batch)
            row["seconds"] = time.perf_counter() - t0
            print(f"gpu-distill: step {step} train_mse {row['train_mse']:.5f} holdout_mse "
                  f"{row['holdout_mse']:.5f} lr {lr:.2e} ({row['seconds']:.0f} s)",
                  file=sys.stderr)  # fmt: skip
        log.append(row)
    log[-1]["holdout_mse"] = holdout_mse(student, held_x, held_target, cfg.batch)
    log[-1]["seconds"] = time.perf_counter() - t0
    return student.eval().cpu(), log


def carry_of(student: torch.nn.Module, cfg: GpuConfig, log: list[dict], kit_card: dict, device: str) -> dict:
    """The run as a carry the CPU loop reads (``load_start``: ``encoder`` fp16 and ``step``);
    ``device`` names where it trained."""
    config = {
        "student": cfg.student, "steps": log[-1]["step"], "batch": cfg.batch, "lr": cfg.lr,
        "frozen_stages": cfg.frozen_stages, "seed": cfg.seed, "gpu": asdict(cfg), "kit": kit_card,
        "device": device,
    }  # fmt: skip
    return {"config": config, "step": log[-1]["step"], "log": log, "rng": None,
            "encoder": state_fp16(student.state_dict())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.distill.gpu", description=__doc__)
    parser.add_argument("--kit", type=Path, default=Path("build/gpu_kit"))
    parser.add_argument("--out", type=Path, required=True, help="folder for <student>_gpu.pt and its log")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    for name, default in asdict(GpuConfig()).items():
        choices = {"teacher_precision": TEACHER_PRECISIONS, "balance": BALANCES}.get(name)
        flag = f"--{name.replace('_', '-')}"
        parser.add_argument(flag, type=type(default), default=default, choices=choices)
    args = parser.parse_args(argv)
    for needed in (KIT_VIEWS, KIT_TEACHER):
        if not (args.kit / needed).is_file():
            parser.error(f"{args.kit / needed} is missing: pack it first (python -m train.distill.kit)")
    cfg = GpuConfig(**{k: getattr(args, k) for k in asdict(GpuConfig())})
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    views, sources = load_views(args.kit)
    card_path = args.kit / KIT_CARD
    kit_card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu-distill: {cfg.student} on {device} ({name}), {len(views)} kit views, {cfg.minutes:g} min",
          file=sys.stderr)  # fmt: skip
    student, log = distill_on_device(views, sources, teacher_of(args.kit), cfg, device)
    args.out.mkdir(parents=True, exist_ok=True)
    carry = args.out / f"{cfg.student}_gpu.pt"
    torch.save(carry_of(student, cfg, log, kit_card, f"{device} ({name})"), carry)
    (args.out / f"{cfg.student}_gpu_log.json").write_text(json.dumps(log) + "\n")
    print(f"gpu-distill: wrote {carry} after {log[-1]['step']} steps "
          f"(holdout MSE {log[0]['holdout_mse']:.5f} -> {log[-1]['holdout_mse']:.5f})",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
