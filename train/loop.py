"""Fine-tune LiteMedSAM's mask decoder on cached embeddings; resumable at every checkpoint.

The image encoder is frozen (its embeddings are cached), the prompt encoder too; only the mask
decoder trains. ``resumable_loop`` is the one training loop of the project (specialist decoders
here, student encoders in ``train/distill``): state (module, optimiser, step, RNG, log) is saved
atomically every ``checkpoint_every`` steps to ``<out>/state.pt``, and a run started again
continues from it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from common.reports import write_csv
from modeling.architectures.sam import BoxSAM
from train.data import Pool, make_batch
from train.losses import total_loss


@dataclass(frozen=True)
class TrainConfig:
    # 150, not 300: stop 10's proxy curves (reports/train/*/log.csv at 4076068) reached 83-99% of
    # the 300-step gain by step 150 (fundus 83%, microscopy 91%, mammography 99%), and US, the 3D
    # and the thin 2D groups peaked by step 50-100 and then drifted; fewer steps keep the decoder
    # nearer LiteMedSAM, which is what other sources need.
    steps: int = 150
    batch: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.01
    box_shift: int = 5
    seed: int = 0
    checkpoint_every: int = 25
    val_every: int = 50
    val_limit: int = 256  # validation objects scored (first N, fixed order)
    # Share of training prompts that are the app's own (3D: the key slice's 3D-box extent, or the
    # neighbouring slice's propagation box) instead of jittered tight boxes. 0 = stop 20's runs.
    app_prompt_share: float = 0.0


def decode(model: BoxSAM, emb: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 256, 64, 64), (B, 4) model-frame XYXY -> logits (B, 1, S, S), predicted IoU (B, 1)."""
    sparse = model.prompt_encoder.embed_boxes(boxes)
    dense = model.prompt_encoder.no_mask_dense(boxes.shape[0])
    return model.mask_decoder(emb, model.prompt_encoder.dense_pe(), sparse, dense)


def object_dice(model: BoxSAM, pool: Pool, rows: np.ndarray, batch: int = 8) -> np.ndarray:
    """Dice of (logits > 0) for the objects ``rows`` of ``pool``, tight boxes, resized frame: (M,)."""
    scores = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            emb, boxes, target, valid = make_batch(pool, rows[start : start + batch], None, 0)
            logits, _ = decode(model, torch.from_numpy(emb), torch.from_numpy(boxes))
            pred = (logits.numpy() > 0) & (valid > 0)
            inter = (pred & (target > 0)).sum(axis=(1, 2, 3))
            total = pred.sum(axis=(1, 2, 3)) + target.sum(axis=(1, 2, 3))
            scores.extend(2 * inter / np.maximum(total, 1))
    return np.asarray(scores, dtype=np.float64)


def mean_or_nan(scores: np.ndarray) -> float:
    """The mean of per-object scores; NaN when there are none."""
    return float(np.mean(scores)) if len(scores) else float("nan")


def val_dice(model: BoxSAM, pool: Pool, limit: int, batch: int = 8) -> float:
    """Mean Dice of (logits > 0) on the first ``limit`` objects, tight boxes, resized frame."""
    return mean_or_nan(object_dice(model, pool, np.arange(min(limit, len(pool.objects))), batch))


def _resumable(config: dict) -> dict:
    """The settings a resumed run must share (``steps`` may grow: training continues)."""
    return {k: v for k, v in config.items() if k != "steps"}


def save_atomic(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@dataclass(frozen=True)
class Trainee:
    """What the resumable loop trains: ``module`` (its state is checkpointed under ``key``), its
    optimiser, one optimisation step (rng -> log values) and the validation (-> log values)."""

    name: str
    key: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[np.random.Generator], dict[str, float]]
    validate: Callable[[], dict[str, float]]


def resumable_loop(trainee: Trainee, out: Path, config: dict, prog: str) -> list[dict]:
    """Run ``config["steps"]`` steps of ``trainee`` (seeded by ``config["seed"]``), validating every
    ``val_every`` and saving (module, optimiser, step, RNG, log) atomically to ``out/state.pt``
    every ``checkpoint_every`` steps; a run started again continues from that state. The log rows
    (step, step values, validation values where run) are returned."""
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    rng = np.random.default_rng(config["seed"])
    step, log = 0, []
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if _resumable(state["config"]) != _resumable(config):
            msg = f"{state_path} was made with {state['config']}, not {config}: remove it to restart"
            raise ValueError(msg)
        trainee.module.load_state_dict(state[trainee.key])
        trainee.optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, log = state["step"], state["log"]
        print(f"{prog}: resumed {trainee.name} at step {step}", file=sys.stderr)
    if step == 0:
        log.append({"step": 0, **trainee.validate()})
    t0 = time.perf_counter()
    while step < config["steps"]:
        trainee.module.train()
        row = {"step": step + 1, **trainee.step(rng)}
        step += 1
        if step % config["val_every"] == 0 or step == config["steps"]:
            row.update(trainee.validate())
            values = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step")
            print(f"{prog}: {trainee.name} step {step}/{config['steps']} {values} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        log.append(row)
        if step % config["checkpoint_every"] == 0 or step == config["steps"]:
            save_atomic(state_path, {
                "config": config, trainee.key: trainee.module.state_dict(),
                "optimizer": trainee.optimizer.state_dict(), "rng": rng.bit_generator.state,
                "step": step, "log": log,
            })  # fmt: skip
    trainee.module.eval()
    return log


def train_decoder(model: BoxSAM, train: Pool, val: Pool, out: Path, cfg: TrainConfig) -> list[dict]:
    """Train ``model.mask_decoder`` in place for ``cfg.steps`` steps (resuming from
    ``out/state.pt`` when present); returns the log rows (step, losses, val Dice)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.mask_decoder.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.mask_decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def one_step(rng: np.random.Generator) -> dict[str, float]:
        rows = rng.integers(0, len(train.objects), size=cfg.batch)
        emb, boxes, target, valid = (
            torch.from_numpy(a) for a in make_batch(train, rows, rng, cfg.box_shift, cfg.app_prompt_share)
        )
        logits, iou_pred = decode(model, emb, boxes)
        loss, parts = total_loss(logits, iou_pred, target, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return parts

    trainee = Trainee(
        name=out.name, key="decoder", module=model.mask_decoder, optimizer=opt, step=one_step,
        validate=lambda: {"val_dice": val_dice(model, val, cfg.val_limit)},
    )  # fmt: skip
    log = resumable_loop(trainee, out, asdict(cfg), "train")
    model.eval()
    return log


def write_log(log: list[dict], path: Path) -> None:
    write_csv(path, log, ["step", "loss", "dice", "bce", "iou", "val_dice"])


def plot_log(log: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.5))
    train_rows = [r for r in log if "loss" in r]
    steps = [r["step"] for r in train_rows]
    for key in ("loss", "dice", "bce", "iou"):
        values = np.array([r[key] for r in train_rows])
        window = max(1, min(25, len(values) // 5))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax_loss.plot(steps[window - 1 :], smooth, label=key)
    ax_loss.set(xlabel="step", ylabel=f"training loss (moving mean of {window})", title=title)
    ax_loss.legend()
    val = [(r["step"], r["val_dice"]) for r in log if "val_dice" in r]
    ax_val.plot(*zip(*val, strict=True), marker="o")
    ax_val.set(xlabel="step", ylabel="validation Dice (model frame)", title="validation, tight boxes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
