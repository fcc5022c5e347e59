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

import numpy as np
import torch

from modeling.architectures.sam import BoxSAM, build_architecture
from modeling.architectures.tiny_vit import ReducedResolution
from modeling.checkpoint import state_fp16, state_fp32
from modeling.registry import BASE, load_model
from train.data import Pool, objects_of
from train.loop import Trainee, resumable_loop, save_atomic, val_dice

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


def initial_encoder(student: str) -> torch.nn.Module:
    """The student's encoder at step 0: the teacher's weights where the architecture keeps them
    (``ReducedResolution``), else a random initialisation (seeded by the caller)."""
    encoder = build_architecture(f"student_{student}").image_encoder
    if isinstance(encoder, ReducedResolution):
        encoder.load_teacher(base_decoder_model().image_encoder)
    return encoder


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Keep BatchNorm layers on their running statistics (the teacher's) while training with
    batches of 8; their affine weights still train."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def write_carry(state_path: Path, carry: Path) -> None:
    """``build`` state -> the git carry: encoder fp16, config, step, log, RNG (no optimiser)."""
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    carry.parent.mkdir(parents=True, exist_ok=True)
    small = {k: state[k] for k in ("config", "step", "log", "rng")}
    save_atomic(carry, {**small, "encoder": state_fp16(state["encoder"])})


def seed_from_carry(
    carry: Path, state_path: Path, encoder: torch.nn.Module, opt: torch.optim.Optimizer
) -> None:
    """The git carry -> a ``build`` state the resumable loop continues from (fresh optimiser)."""
    state = torch.load(carry, map_location="cpu", weights_only=False)
    encoder.load_state_dict(state_fp32(state["encoder"]), strict=True)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(state_path, {**state, "encoder": encoder.state_dict(), "optimizer": opt.state_dict()})


def freeze_trunk(encoder: torch.nn.Module, stages: int) -> int:
    """Freeze a teacher-at-size student's patch embedding and first ``stages`` stages; the number
    frozen (0 for other students, which train whole)."""
    if not isinstance(encoder, ReducedResolution) or stages == 0:
        return 0
    for module in (encoder.encoder.patch_embed, *encoder.encoder.layers[:stages]):
        for p in module.parameters():
            p.requires_grad_(False)
    return stages


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


def proxy_dice(
    decoder_model: BoxSAM, embeddings: np.ndarray, val: dict[str, np.ndarray], per_slice: int
) -> float:
    """The end-to-end proxy: LiteMedSAM's decoder on ``embeddings``, tight boxes, model frame."""
    pool = Pool(
        embeddings.astype(np.float16), val["labels"], val["hw"], capped_objects(val["labels"], per_slice)
    )
    return val_dice(decoder_model, pool, limit=len(pool.objects))


def validate(
    encoder: torch.nn.Module,
    decoder_model: BoxSAM,
    val: dict[str, np.ndarray],
    stages: int = 0,
    per_slice: int = 8,
) -> dict[str, float]:
    """Validation embedding MSE and the end-to-end proxy Dice with LiteMedSAM's decoder."""
    emb = student_embeddings(encoder, val["inputs"], val.get("trunk"), stages)
    mse = float(np.mean((emb - val["teacher"].astype(np.float32)) ** 2))
    return {"val_mse": mse, "val_dice": proxy_dice(decoder_model, emb, val, per_slice)}


def distill(
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    out: Path,
    cfg: DistillConfig,
    carry: Path | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """Train the student (resuming from ``out/state.pt``, else from ``carry`` when it exists);
    the state is written back to ``carry`` at the end. (student encoder, log rows). A run whose
    state has reached ``cfg.steps`` computes nothing (the report and carry are rewritten)."""
    torch.manual_seed(cfg.seed)
    encoder = initial_encoder(cfg.student)
    stages = freeze_trunk(encoder, cfg.frozen_stages)
    trunks: dict[str, np.ndarray] = {}  # the frozen trunk's output, computed when first needed

    def with_trunk(part: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
        if stages and name not in trunks:
            trunks[name] = trunk_features(encoder, part["inputs"], stages)
        return {**part, "trunk": trunks[name]} if stages else part

    decoder_model = base_decoder_model()
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state_path = out / "state.pt"
    if carry is not None and carry.is_file() and not state_path.is_file():
        seed_from_carry(carry, state_path, encoder, opt)

    def one_step(rng: np.random.Generator) -> dict[str, float]:
        part = with_trunk(train, "train")
        encoder.train()
        freeze_batchnorm(encoder)
        rows = rng.integers(0, len(part["inputs"]), size=cfg.batch)
        x = as_input(part["inputs"][rows])
        target = torch.from_numpy(part["teacher"][rows].astype(np.float32))
        trunk = part["trunk"][rows] if stages else None
        loss = torch.nn.functional.mse_loss(embed(encoder, x, trunk, stages), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"train_mse": float(loss.detach())}

    def validation() -> dict[str, float]:
        return validate(encoder, decoder_model, with_trunk(val, "val"), stages, cfg.val_objects_per_slice)

    trainee = Trainee(
        name=cfg.student, key="encoder", module=encoder, optimizer=opt, step=one_step, validate=validation
    )
    log = resumable_loop(trainee, out, asdict(cfg), "distill")
    if carry is not None:
        write_carry(state_path, carry)
    return encoder, log
