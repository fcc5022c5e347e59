"""The distillation's report: learning-curve CSV, picture and ``reports/students/<student>/distill.md``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.machine import describe
from common.reports import write_csv, write_report
from modeling.architectures.tiny_vit import TEACHER_AT
from train.distill.loop import DistillConfig, run_name
from train.distill.samples import BOX_SIDE_SHARE, OBJECT_BOX_SHIFT


def write_log(log: list[dict], teacher_dice: float, path: Path) -> None:
    fields = ["step", "train_mse", "train_kd", "val_mse", "val_dice", "val_worst_gap", "teacher_val_dice"]
    rows = [{**row, "teacher_val_dice": teacher_dice if "val_dice" in row else ""} for row in log]
    write_csv(path, rows, fields)


def plot_log(log: list[dict], teacher_dice: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mse, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.5))
    train_rows = [r for r in log if "train_mse" in r]
    if train_rows:
        values = np.array([r["train_mse"] for r in train_rows])
        window = max(1, min(25, len(values) // 5))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax_mse.plot([r["step"] for r in train_rows][window - 1 :], smooth, label=f"train (mean of {window})")
    val = [r for r in log if "val_mse" in r]
    ax_mse.plot([r["step"] for r in val], [r["val_mse"] for r in val], marker="o", label="validation")
    ax_mse.set(xlabel="step", ylabel="embedding MSE to TinyViT", yscale="log", title=title)
    ax_mse.legend()
    ax_dice.plot([r["step"] for r in val], [r["val_dice"] for r in val], marker="o", label="student")
    ax_dice.axhline(teacher_dice, color="k", linestyle="--", label="TinyViT (teacher)")
    ax_dice.set(
        xlabel="step", ylabel="validation Dice (model frame)", ylim=(0, 1), title="end to end, tight boxes"
    )
    ax_dice.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def start_of(cfg: DistillConfig) -> str:
    """How the student started and what of it trained."""
    if cfg.student not in TEACHER_AT:
        return "Start: random initialisation; every weight trains."
    frozen = "the patch embedding" + (f" and stages 0-{cfg.frozen_stages - 1}" if cfg.frozen_stages else "")
    return (
        f"Start: the teacher's own weights at {TEACHER_AT[cfg.student].size}x{TEACHER_AT[cfg.student].size}"
        + (" (detail head initialised to add nothing)" if TEACHER_AT[cfg.student].detail else "")
        + (
            f"; {frozen} stay the teacher's (frozen), the rest trains."
            if cfg.frozen_stages
            else "; every weight trains."
        )
    )


# How each task-aware setting reads in the report.
PROMPT_WORDS = {
    "random": f"random box(es) per view (sides {BOX_SIDE_SHARE[0]:g}-{BOX_SIDE_SHARE[1]:g} of the image's, "
    "log-uniform; no labels)",
    "objects": f"box(es) per view, each the tight box of one of the view's own objects (train labels, "
    f"through the view's flips and turns), sides jittered by up to {OBJECT_BOX_SHIFT} px; a random box "
    "where the view holds no object",
}
LOSS_WORDS = {
    "bce_dice": "(BCE + soft Dice)",
    "bce": "BCE (soft targets: lowest where the student's mask logits equal the teacher's)",
}


def objective_of(cfg: DistillConfig, start: Path | None) -> str:
    """What the run minimises, and where a new run started from."""
    if cfg.kd_weight == 0:
        return "Loss: MSE to the teacher's embedding."
    return (
        f"Loss (task-aware): MSE to the teacher's embedding + {cfg.kd_weight:g} x {LOSS_WORDS[cfg.kd_loss]} "
        "of "
        "LiteMedSAM's frozen prompt encoder + mask decoder on the student's embedding against the same "
        f"on the teacher's, {cfg.kd_boxes} {PROMPT_WORDS[cfg.kd_prompts]}."
        + (f" Step 0 is the weights of `{start}`." if start is not None else "")
    )


def command_of(cfg: DistillConfig, start: Path | None) -> str:
    """The command that reruns (or resumes) this run: every setting that is not the default."""
    default = asdict(DistillConfig())
    settings = "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v in asdict(cfg).items()
        if k not in ("student", "steps") and v != default[k]
    )
    origin = f" --start-from {start}" if start is not None else ""
    return f"python -m train.distill --student {cfg.student} --steps {cfg.steps}{settings}{origin}"


def write_summary(
    log: list[dict],
    teacher_dice: float,
    cfg: DistillConfig,
    sizes: dict[str, int],
    path: Path,
    start: Path | None = None,
    sources: dict[str, dict[str, float]] | None = None,
) -> None:
    """``reports/students/<run>/distill.md``: what was trained on what, the learning curve and,
    given ``sources`` ({"teacher"|"student": {source: proxy Dice}}), the end's proxy per source."""
    val = [r for r in log if "val_dice" in r]
    lines = [
        f"# Distillation: student `{cfg.student}` from TinyViT (LiteMedSAM)",
        "",
        f"Command: `make distill` (`{command_of(cfg, start)}`), "
        f"report written {time.strftime('%Y-%m-%d')} on {describe()} (the steps may have been trained in "
        f"earlier sittings, elsewhere). {start_of(cfg)} {objective_of(cfg, start)} "
        f"The run is carried between sittings in `checkpoints/distill/{run_name(cfg)}.pt` "
        "and continues from there.",
        f"Data: {sizes['train_cases']} train-split cases of `splits/public.csv` -> "
        f"{sizes['train_views']} cached views (teacher embeddings fp16); validation: "
        f"{sizes['val_cases']} val-split cases -> "
        f"{sizes['val_slices']} slices with objects. Batch {cfg.batch}, AdamW lr {cfg.lr}. "
        "The proxy below is a quick signal only; the gate (`gate/README.md`) runs the real app.",
        "",
        "Validation proxy Dice: LiteMedSAM's prompt encoder + mask decoder (unchanged) on the student's "
        f"embeddings, tight boxes, model frame. The same on TinyViT's own embeddings: **{teacher_dice:.4f}** "
        "(the reference, not a ceiling: the student may pass it).",
        "",
        "| step | images seen | val embedding MSE | val proxy Dice | gap to TinyViT | worst source's gap |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['step']} | {r['step'] * cfg.batch} | {r['val_mse']:.4f} | {r['val_dice']:.4f} | "
            f"{r['val_dice'] - teacher_dice:+.4f} | "
            + (f"{r['val_worst_gap']:+.4f} |" if "val_worst_gap" in r else "(not logged) |")
            for r in val
        ),
        "",
        "![learning curve](distill.png)",
        *source_table(sources),
    ]
    write_report(path, lines)


def source_table(sources: dict[str, dict[str, float]] | None) -> list[str]:
    """The end of the run's proxy Dice per validation source, worst gap first (empty without)."""
    if not sources:
        return []
    teacher, student = sources["teacher"], sources["student"]
    order = sorted(teacher, key=lambda s: student[s] - teacher[s])
    return [
        "",
        "Proxy Dice per validation source at the end (the same tight boxes, at most the val objects "
        "per slice; the gate and probe run the real app):",
        "",
        "| source | TinyViT | student | gap |",
        "|---|---|---|---|",
        *(f"| {s} | {teacher[s]:.4f} | {student[s]:.4f} | {student[s] - teacher[s]:+.4f} |" for s in order),
    ]


def write_carry_summary(
    carry: Path,
    state: dict,
    teacher_dice: float,
    student_dice: float,
    sizes: dict[str, int],
    path: Path,
    sources: dict[str, dict[str, float]],
) -> None:
    """``reports/students/<student>_gpu/distill.md`` for a carry trained elsewhere (``python -m
    train.distill.gpu`` on a lent GPU): its settings and held-out curve as it logged them, and
    the validation proxy computed here."""
    config = state["config"]
    gpu, kit = config.get("gpu", {}), config.get("kit", {})
    curve = [r for r in state["log"] if "holdout_mse" in r]
    lines = [
        f"# Distillation on {config.get('device', 'a GPU')}: student `{config['student']}` from TinyViT "
        "(LiteMedSAM)",
        "",
        f"Carry: `{carry}` ({state['step']} steps, batch {config['batch']}), trained by `python -m "
        f"train.distill.gpu` with {json.dumps(gpu)}; its kit: {kit.get('train_cases', '?')} train-split "
        f"cases -> {kit.get('grey_views', '?')} grey + {kit.get('colour_views', '?')} colour views, "
        "each step drawing fresh crops, flips, turns and intensity changes of them, with the teacher's "
        "embedding of exactly those inputs.",
        f"Judged here ({time.strftime('%Y-%m-%d')}, {describe()}) on {sizes['val_cases']} val-split cases "
        f"-> {sizes['val_slices']} slices with objects: validation proxy Dice **{student_dice:.4f}** vs "
        f"TinyViT's **{teacher_dice:.4f}** (LiteMedSAM's prompt encoder + mask decoder, tight boxes, model "
        "frame; the gate and probe run the real app).",
        "",
        "Its held-out curve (kit views never trained on, unaugmented; embedding MSE to the teacher):",
        "",
        "| step | images seen | held-out MSE | seconds |",
        "|---|---|---|---|",
        *(
            f"| {r['step']} | {r['step'] * config['batch']} | {r['holdout_mse']:.5f} | "
            f"{r.get('seconds', 0.0):.0f} |"
            for r in curve
        ),
        *source_table(sources),
    ]
    write_report(path, lines)
