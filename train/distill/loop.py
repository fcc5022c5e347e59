"""The student's training: MSE to the teacher's embedding, through ``train.loop.resumable_loop``
(the project's one training loop), validated by embedding MSE and the end-to-end proxy Dice."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from modeling.architectures.sam import BoxSAM, build_architecture
from modeling.registry import BASE, load_model
from train.data import Pool, objects_of
from train.loop import Trainee, resumable_loop, val_dice


def base_decoder_model() -> BoxSAM:
    """LiteMedSAM, whose prompt encoder and mask decoder score every student's embeddings."""
    return load_model(BASE)


@dataclass(frozen=True)
class DistillConfig:
    student: str = "repvit_m06"
    steps: int = 600
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 25
    val_every: int = 100


def student_embeddings(encoder: torch.nn.Module, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    encoder.eval()
    with torch.no_grad():
        out = [
            encoder(torch.from_numpy(inputs[i : i + batch].astype(np.float32) / 255.0)).numpy()
            for i in range(0, len(inputs), batch)
        ]
    return np.concatenate(out)


def validate(encoder: torch.nn.Module, decoder_model: BoxSAM, val: dict[str, np.ndarray]) -> dict[str, float]:
    """Validation embedding MSE and the end-to-end proxy Dice with LiteMedSAM's decoder."""
    emb = student_embeddings(encoder, val["inputs"])
    mse = float(np.mean((emb - val["teacher"].astype(np.float32)) ** 2))
    pool = Pool(emb.astype(np.float16), val["labels"], val["hw"], objects_of(val["labels"]))
    return {"val_mse": mse, "val_dice": val_dice(decoder_model, pool, limit=len(pool.objects))}


def distill(
    train: dict[str, np.ndarray], val: dict[str, np.ndarray], out: Path, cfg: DistillConfig
) -> tuple[torch.nn.Module, list[dict]]:
    """Train the student (resuming from ``out/state.pt``); (student encoder, log rows)."""
    torch.manual_seed(cfg.seed)
    encoder = build_architecture(f"student_{cfg.student}").image_encoder
    decoder_model = base_decoder_model()
    opt = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def one_step(rng: np.random.Generator) -> dict[str, float]:
        rows = rng.integers(0, len(train["inputs"]), size=cfg.batch)
        x = torch.from_numpy(train["inputs"][rows].astype(np.float32) / 255.0)
        target = torch.from_numpy(train["teacher"][rows].astype(np.float32))
        loss = torch.nn.functional.mse_loss(encoder(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"train_mse": float(loss.detach())}

    trainee = Trainee(
        name=cfg.student, key="encoder", module=encoder, optimizer=opt, step=one_step,
        validate=lambda: validate(encoder, decoder_model, val),
    )  # fmt: skip
    return encoder, resumable_loop(trainee, out, asdict(cfg), "distill")
