"""The student's training: MSE to the teacher's embedding, through ``train.loop.resumable_loop``
(the project's one training loop), validated by embedding MSE and the end-to-end proxy Dice.

Between sittings the run is carried in git (``checkpoints/distill/<student>.pt``: the encoder in
fp16, step, log, RNG; no optimiser moments, a few MB instead of ~70): a sitting with no
``build/`` state starts from the carry; AdamW's moments restart from zero there (the only
difference from an uninterrupted run, besides the fp16 rounding of the weights)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from modeling.architectures.sam import BoxSAM
from modeling.checkpoint import state_fp16, state_fp32
from modeling.registry import BASE, load_model
from train.data import Pool, objects_of, valid_masks
from train.distill.frame import SIZE, content_hw
from train.distill.samples import object_boxes, random_boxes
from train.distill.student import freeze_batchnorm, freeze_trunk, student_encoder
from train.loop import Trainee, decode, mean_or_nan, object_dice, resumable_loop, save_atomic
from train.losses import MASK_DISTILLATION_LOSSES

CARRY_DIR = Path("checkpoints/distill")


def base_decoder_model() -> BoxSAM:
    """LiteMedSAM, whose prompt encoder and mask decoder score every student's embeddings."""
    return load_model(BASE)


@dataclass(frozen=True)
class DistillConfig:
    # TinyViT at 112 with the detail head, from the teacher's weights (issue 18; it took r128d's
    # routes at 0.70x its cost); the random-init students (repvit_m06: stop 19, lr 2e-3) need far
    # more compute than 2 cores have.
    student: str = "tinyvit_r112d"
    steps: int = 800
    batch: int = 8
    lr: float = 1e-4  # a start from trained weights: 20x below the random-init rate
    # Teacher-at-size students: the patch embedding and the first stages stay the teacher's
    # (frozen; their output is computed once per cached view). 2 = stages 0-1 (the convolutional
    # stage at 128x128 is ~45% of a training step's forward on this CPU); 0 trains everything.
    frozen_stages: int = 2
    # Proxy validation: at most this many objects per slice (the val split holds 297 slices with
    # 9107 objects, most in a few microscopy images; all of them cost ~5 min per validation here).
    val_objects_per_slice: int = 8
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 25
    val_every: int = 100
    # Task-aware distillation (stop 29): + kd_weight x (BCE + soft Dice) of LiteMedSAM's frozen
    # decoder on the student's embedding against the same decoder on the teacher's, for
    # ``kd_boxes`` random boxes per view (no labels). 0 = embedding MSE only (runs up to stop 28).
    kd_weight: float = 0.0
    kd_boxes: int = 2
    # Stop 30: the term's prompts, "random" (stop 29's run) or "objects" (the view's own objects'
    # jittered tight boxes: the prompts users give; needs the train labels cache), and its loss
    # (train.losses.MASK_DISTILLATION_LOSSES), "bce_dice" (stop 29's run) or "bce".
    kd_prompts: str = "random"
    kd_loss: str = "bce_dice"


KD_PROMPTS = ("random", "objects")


def run_name(cfg: DistillConfig) -> str:
    """A run's name (its carry, build folder and report): the student; ``_kd`` for task-aware
    runs (``_kd0.05`` for a weight other than stop 29's 1), then each of their settings that is
    not stop 29's (``_kd_objects_bce``)."""
    if cfg.kd_weight <= 0:
        return cfg.student
    default = DistillConfig()
    settings = (("kd_prompts", cfg.kd_prompts), ("kd_loss", cfg.kd_loss))
    changed = [v for k, v in settings if v != getattr(default, k)]
    kd = "kd" if cfg.kd_weight == 1 else f"kd{cfg.kd_weight:g}"
    return "_".join([cfg.student, kd, *changed])


def initial_encoder(student: str) -> torch.nn.Module:
    """The student's encoder at step 0, from LiteMedSAM's TinyViT (``student_encoder``)."""
    return student_encoder(student, base_decoder_model().image_encoder)


def write_carry(state_path: Path, carry: Path) -> None:
    """``build`` state -> the git carry: encoder fp16, config, step, log, RNG (no optimiser)."""
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    carry.parent.mkdir(parents=True, exist_ok=True)
    small = {k: state[k] for k in ("config", "step", "log", "rng")}
    save_atomic(carry, {**small, "encoder": state_fp16(state["encoder"])})


def seed_from_carry(
    carry: Path, state_path: Path, encoder: torch.nn.Module, opt: torch.optim.Optimizer
) -> None:
    """The git carry -> a ``build`` state the resumable loop continues from (fresh optimiser).
    Settings added since the carry was written take their defaults (what its run used)."""
    state = torch.load(carry, map_location="cpu", weights_only=False)
    encoder.load_state_dict(state_fp32(state["encoder"]), strict=True)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    config = {**asdict(DistillConfig()), **state["config"]}
    save_atomic(
        state_path,
        {**state, "config": config, "encoder": encoder.state_dict(), "optimizer": opt.state_dict()},
    )


def load_start(encoder: torch.nn.Module, start: Path) -> int:
    """Another run's carry -> ``encoder``'s weights (a new run starting from them); its step."""
    state = torch.load(start, map_location="cpu", weights_only=False)
    encoder.load_state_dict(state_fp32(state["encoder"]), strict=True)
    return int(state["step"])


def as_input(inputs: np.ndarray) -> torch.Tensor:
    """Cached uint8 (B, 3, 256, 256) -> what the encoder sees, float in [0, 1]."""
    return torch.from_numpy(inputs.astype(np.float32) / 255.0)


def trunk_features(encoder: torch.nn.Module, inputs: np.ndarray, stages: int, batch: int = 16) -> np.ndarray:
    """The frozen trunk's output for every cached view (float32; (N, tokens, C))."""
    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            out.append(encoder.trunk(as_input(inputs[i : i + batch]), stages).numpy())
            if (i // batch) % 20 == 19:
                print(f"distill: frozen trunk features {i + batch}/{len(inputs)}", file=sys.stderr)
    return np.concatenate(out)


def embed(encoder: torch.nn.Module, x: torch.Tensor, trunk: np.ndarray | None, stages: int) -> torch.Tensor:
    """The student's embedding of ``x``, from its frozen trunk's cached output when given."""
    if trunk is None:
        return encoder(x)
    return encoder.rest(torch.from_numpy(trunk), x, stages)


def student_embeddings(
    encoder: torch.nn.Module,
    inputs: np.ndarray,
    trunk: np.ndarray | None = None,
    stages: int = 0,
    batch: int = 16,
) -> np.ndarray:
    encoder.eval()
    with torch.no_grad():
        out = [
            embed(
                encoder,
                as_input(inputs[i : i + batch]),
                None if trunk is None else trunk[i : i + batch],
                stages,
            ).numpy()
            for i in range(0, len(inputs), batch)
        ]
    return np.concatenate(out)


def capped_objects(labels: np.ndarray, per_slice: int) -> np.ndarray:
    """``objects_of(labels)`` keeping the first ``per_slice`` labels of each slice: (M, 2)."""
    rows = objects_of(labels)
    keep = (
        np.concatenate([np.flatnonzero(rows[:, 0] == i)[:per_slice] for i in np.unique(rows[:, 0])])
        if len(rows)
        else []
    )
    return rows[np.sort(np.asarray(keep, dtype=np.int64))]


def proxy_scores(
    decoder_model: BoxSAM, embeddings: np.ndarray, val: dict[str, np.ndarray], per_slice: int
) -> tuple[np.ndarray, np.ndarray]:
    """The end-to-end proxy: LiteMedSAM's decoder on ``embeddings``, tight boxes, model frame ->
    (Dice per scored object (M,), the slice of each (M,))."""
    objects = capped_objects(val["labels"], per_slice)
    pool = Pool(embeddings.astype(np.float16), val["labels"], val["hw"], objects)
    return object_dice(decoder_model, pool, np.arange(len(objects))), objects[:, 0]


def by_source(scores: np.ndarray, slices: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """Per-object scores of the slices ``slices`` -> their mean per source (``source``: each slice's)."""
    of_object = source[slices]
    return {str(s): float(np.mean(scores[of_object == s])) for s in np.unique(of_object)}


def proxy_by_source(
    decoder_model: BoxSAM, embeddings: np.ndarray, val: dict[str, np.ndarray], per_slice: int
) -> dict[str, float]:
    """The proxy's mean Dice per validation source (``val["source"]``: each slice's)."""
    return by_source(*proxy_scores(decoder_model, embeddings, val, per_slice), val["source"])


def teacher_proxy_by_source(
    decoder_model: BoxSAM, val: dict[str, np.ndarray], per_slice: int
) -> dict[str, float] | None:
    """The teacher's proxy per validation source (None: the validation names no sources)."""
    return proxy_by_source(decoder_model, val["teacher"], val, per_slice) if "source" in val else None


def worst_gap(student: dict[str, float], teacher: dict[str, float]) -> tuple[str, float]:
    """The source where the student's proxy Dice falls furthest below the teacher's, and by how much."""
    source = min(student, key=lambda s: student[s] - teacher[s])
    return source, student[source] - teacher[source]


def validate(
    encoder: torch.nn.Module,
    decoder_model: BoxSAM,
    val: dict[str, np.ndarray],
    stages: int = 0,
    per_slice: int = 8,
    teacher_by_source: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """(Validation embedding MSE and the end-to-end proxy Dice with LiteMedSAM's decoder, the
    student's proxy per source; empty without ``val["source"]``). With the teacher's proxy per
    source, the row also holds the worst source's gap to it (``val_worst_gap``; the source is
    printed: a pooled Dice hid 10-point losses on single sources at stop 29)."""
    emb = student_embeddings(encoder, val["inputs"], val.get("trunk"), stages)
    mse = float(np.mean((emb - val["teacher"].astype(np.float32)) ** 2))
    scores, slices = proxy_scores(decoder_model, emb, val, per_slice)
    row = {"val_mse": mse, "val_dice": mean_or_nan(scores)}
    student = by_source(scores, slices, val["source"]) if "source" in val else {}
    if teacher_by_source:
        source, gap = worst_gap(student, teacher_by_source)
        print(f"distill: worst validation source {source}: {gap:+.4f} proxy Dice vs the teacher",
              file=sys.stderr)  # fmt: skip
        row["val_worst_gap"] = gap
    return row, student


def kd_prompts(
    cfg: DistillConfig, inputs: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The task-aware term's prompts for a batch of cached views: ((B, 2) image sizes, (B *
    kd_boxes, 4) model-frame XYXY boxes, image-major)."""
    hw = content_hw(inputs)
    if cfg.kd_prompts == "objects":
        return hw, object_boxes(labels, hw, cfg.kd_boxes, rng)
    return hw, random_boxes(hw, cfg.kd_boxes, rng)


def decoder_kd_loss(
    decoder_model: BoxSAM,
    student: torch.Tensor,
    teacher: torch.Tensor,
    hw: np.ndarray,
    boxes: np.ndarray,
    loss: str,
) -> torch.Tensor:
    """The task-aware term: (B, 256, 64, 64) student / teacher embeddings of B cached views of
    sizes ``hw`` (B, 2), ``boxes`` (B * K, 4) prompts (K per view, image-major) -> the mask loss
    ``loss`` (MASK_DISTILLATION_LOSSES) of the frozen decoder's masks on the student's
    embedding against those on the teacher's."""
    per_image = len(boxes) // len(hw)
    index = torch.arange(len(hw)).repeat_interleave(per_image)
    valid = torch.from_numpy(valid_masks(np.repeat(hw, per_image, axis=0), SIZE))
    prompts = torch.from_numpy(boxes)
    with torch.no_grad():
        target, _ = decode(decoder_model, teacher[index], prompts)
    logits, _ = decode(decoder_model, student[index], prompts)
    return MASK_DISTILLATION_LOSSES[loss](logits, target, valid)


class DistillRun(NamedTuple):
    encoder: torch.nn.Module
    log: list[dict]
    # The last validation's proxy per source, {"teacher"|"student": {source: Dice}}; empty when
    # this call validated nothing (a run already complete) or the validation has no sources.
    sources: dict[str, dict[str, float]]


def distill(
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    out: Path,
    cfg: DistillConfig,
    carry: Path | None = None,
    start: Path | None = None,
    teacher_by_source: dict[str, float] | None = None,
) -> DistillRun:
    """Train the student (resuming from ``out/state.pt``, else from ``carry`` when it exists,
    else a new run from ``start``'s weights when given); the state is written back to ``carry`` at
    the end. A run whose state has reached ``cfg.steps`` computes nothing (the report and carry
    are rewritten). ``teacher_by_source``: the teacher's proxy per validation source, when the
    caller has it (else computed here from ``val["source"]``)."""
    if cfg.kd_weight > 0 and cfg.kd_prompts == "objects" and "labels" not in train:
        msg = "kd_prompts 'objects' needs the train views' labels (train['labels'])"
        raise ValueError(msg)
    torch.manual_seed(cfg.seed)
    encoder = initial_encoder(cfg.student)
    stages = freeze_trunk(encoder, cfg.frozen_stages)
    trunks: dict[str, np.ndarray] = {}  # the frozen trunk's output, computed when first needed

    def with_trunk(part: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
        if stages and name not in trunks:
            trunks[name] = trunk_features(encoder, part["inputs"], stages)
        return {**part, "trunk": trunks[name]} if stages else part

    decoder_model = base_decoder_model().eval()
    decoder_model.requires_grad_(False)  # the KD term's gradient only reaches the embedding
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state_path = out / "state.pt"
    if carry is not None and carry.is_file() and not state_path.is_file():
        seed_from_carry(carry, state_path, encoder, opt)
    elif start is not None and not state_path.is_file():
        step = load_start(encoder, start)
        print(f"distill: a new run from {start} (its step {step})", file=sys.stderr)

    def one_step(rng: np.random.Generator) -> dict[str, float]:
        part = with_trunk(train, "train")
        encoder.train()
        freeze_batchnorm(encoder)
        rows = rng.integers(0, len(part["inputs"]), size=cfg.batch)
        x = as_input(part["inputs"][rows])
        target = torch.from_numpy(part["teacher"][rows].astype(np.float32))
        trunk = part["trunk"][rows] if stages else None
        emb = embed(encoder, x, trunk, stages)
        mse = torch.nn.functional.mse_loss(emb, target)
        row = {"train_mse": float(mse.detach())}
        loss = mse
        if cfg.kd_weight > 0:
            labels = part["labels"][rows] if cfg.kd_prompts == "objects" else None
            hw, boxes = kd_prompts(cfg, part["inputs"][rows], labels, rng)
            kd = decoder_kd_loss(decoder_model, emb, target, hw, boxes, cfg.kd_loss)
            loss = mse + cfg.kd_weight * kd
            row["train_kd"] = float(kd.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return row

    per_slice = cfg.val_objects_per_slice
    teacher_by_source = teacher_by_source or teacher_proxy_by_source(decoder_model, val, per_slice)
    sources: dict[str, dict[str, float]] = {}

    def validation() -> dict[str, float]:
        row, student = validate(
            encoder, decoder_model, with_trunk(val, "val"), stages, per_slice, teacher_by_source
        )
        sources.update({"teacher": teacher_by_source, "student": student} if teacher_by_source else {})
        return row

    trainee = Trainee(
        name=cfg.student, key="encoder", module=encoder, optimizer=opt, step=one_step, validate=validation
    )
    log = resumable_loop(trainee, out, asdict(cfg), "distill")
    if carry is not None:
        write_carry(state_path, carry)
    return DistillRun(encoder, log, sources)
