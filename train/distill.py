"""``make distill``: decoupled distillation of a student image encoder from LiteMedSAM's TinyViT.

1. Cache (resumable, one file per case): for every train-split case of ``splits/public.csv``
   (2D images; up to ``per_volume`` slices of each volume, evenly spread over its non-empty
   slices), ``views`` views (the first as is, the others flipped / rotated / gamma- and
   contrast-jittered), preprocessed exactly as the app does and stored as uint8
   (N, 3, 256, 256) with the teacher's embedding of that very input, fp16 (N, 256, 64, 64).
   Validation-split cases are cached without augmentation, with their model-frame labels.
2. Train the student (``--student``, a name of ``export/architectures/students.py``) with MSE to
   the teacher's embedding; AdamW; resumable from ``build/distill/<student>/state.pt``.
   Logged every ``val_every`` steps: validation embedding MSE and the end-to-end proxy Dice
   (LiteMedSAM's unchanged prompt encoder + mask decoder on the student's embeddings, tight
   boxes, model frame) next to the same Dice on the teacher's embeddings (the ceiling).
3. ``--gate``: export the student (same export stage, parity gates) and run the app with it on
   the validation cases of every group that has no specialist; a group gets the student when
   its validation DSC is within one point of LiteMedSAM's (STUDENT_RULE). Accepted groups ->
   ``weights/student_<name>/`` (routes for those groups only); none -> nothing ships.

Outputs: ``reports/students/distill_log.csv``, ``distill.png``, ``gate/`` (with ``--gate``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from app.preprocessing import encoder_input
from app.routing import case_dims, modality
from app.sessions import SamSession, SessionCache, create_core
from common.machine import describe
from common.reports import write_csv
from common.reports import write_report as write_markdown
from export.architectures.sam import BoxSAM, build_architecture
from export.architectures.students import STUDENTS
from export.checkpoint import sha256_file
from export.specs import BASE, BASE_KEY, CARD_NAME, WEIGHTS_DIR, load_model, model_specs
from train.data import Pool, objects_of
from train.gate import ALL, STUDENT_RULE, decisions, group_validation, run_gate, write_report
from train.groups import GROUPS, group_of
from train.loop import save_atomic, val_dice
from train.provenance import sources_of
from train.samples import cache_cases, choose_slices, labels_to_model, split_paths

SIZE = 256
ENCODER_FILE = "encoder_fp16.pt"


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> a random view: flips, a multiple of 90 degrees, gamma in
    [0.7, 1.5], contrast in [0.8, 1.2] about the mean. uint8 out, same channels."""
    out = image
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    out = np.rot90(out, k=int(rng.integers(0, 4)), axes=(0, 1))
    x = out.astype(np.float32) / 255.0
    x = x ** float(rng.uniform(0.7, 1.5))
    x = (x - x.mean()) * float(rng.uniform(0.8, 1.2)) + x.mean()
    return np.ascontiguousarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))


def case_images(path: Path, per_volume: int) -> list[np.ndarray]:
    """The 2D image, or up to ``per_volume`` evenly spread non-empty slices of a volume."""
    with np.load(path, allow_pickle=False) as data:
        imgs = data["imgs"]
    if case_dims(path.name) != 3:
        return [imgs]
    nonempty = choose_slices(imgs > 0, per_volume)
    return [imgs[z] for z in nonempty]


def quantised_input(image: np.ndarray) -> np.ndarray:
    """The app's encoder input of ``image``, stored as uint8 (3, S, S); /255 gives what both
    teacher and student see (the quantisation step is 1/255 of the min-max range)."""
    x, _ = encoder_input(image, SIZE)
    return np.clip(x[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def teacher_embeddings(inputs: np.ndarray, teacher: SamSession, batch: int = 4) -> np.ndarray:
    """(N, 3, S, S) uint8 -> (N, 256, 64, 64) fp16 from the teacher IR."""
    out = [
        teacher.encode(inputs[i : i + batch].astype(np.float32) / 255.0).astype(np.float16)
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 256, 64, 64), np.float16)


def train_sample(
    path: Path, teacher: SamSession, views: int, per_volume: int, seed: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, *path.name.encode()])
    images = case_images(path, per_volume)
    inputs = np.stack(
        [quantised_input(img if v == 0 else augment(img, rng)) for img in images for v in range(views)]
    ) if images else np.zeros((0, 3, SIZE, SIZE), np.uint8)  # fmt: skip
    return {"inputs": inputs, "teacher": teacher_embeddings(inputs, teacher)}


def val_sample(path: Path, teacher: SamSession, per_volume: int) -> dict[str, np.ndarray]:
    """Object slices (2D: the image) with model-frame labels; no augmentation."""
    with np.load(path, allow_pickle=False) as data:
        imgs, gts = data["imgs"], data["gts"]
    if gts.ndim == 3:
        zs = choose_slices(gts, per_volume)
        pairs = [(imgs[z], gts[z]) for z in zs]
    else:
        pairs = [(imgs, gts)]
    inputs = np.stack([quantised_input(i) for i, _ in pairs])
    labels = np.stack([labels_to_model(g, SIZE) for _, g in pairs])
    hw = np.asarray([encoder_input(i, SIZE)[1] for i, _ in pairs], dtype=np.int32)
    return {"inputs": inputs, "teacher": teacher_embeddings(inputs, teacher), "labels": labels, "hw": hw}


def load_arrays(files: list[Path], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for path in files:
        with np.load(path) as data:
            for k in keys:
                parts[k].append(data[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


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
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    torch.manual_seed(cfg.seed)
    encoder = build_architecture(f"student_{cfg.student}").image_encoder
    decoder_model = _base_decoder_model()
    opt = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    step, log = 0, []
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        same = {k: v for k, v in state["config"].items() if k != "steps"}
        if same != {k: v for k, v in asdict(cfg).items() if k != "steps"}:
            msg = f"{state_path} was made with {state['config']}, not {asdict(cfg)}: remove it to restart"
            raise ValueError(msg)
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, log = state["step"], state["log"]
        print(f"distill: resumed {cfg.student} at step {step}", file=sys.stderr)
    if step == 0:
        log.append({"step": 0, **validate(encoder, decoder_model, val)})
    t0 = time.perf_counter()
    while step < cfg.steps:
        encoder.train()
        rows = rng.integers(0, len(train["inputs"]), size=cfg.batch)
        x = torch.from_numpy(train["inputs"][rows].astype(np.float32) / 255.0)
        target = torch.from_numpy(train["teacher"][rows].astype(np.float32))
        loss = torch.nn.functional.mse_loss(encoder(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        row: dict[str, float] = {"step": step, "train_mse": float(loss.detach())}
        if step % cfg.val_every == 0 or step == cfg.steps:
            row.update(validate(encoder, decoder_model, val))
            print(f"distill: {cfg.student} step {step}/{cfg.steps} train MSE {row['train_mse']:.4f} val MSE "
                  f"{row['val_mse']:.4f} val Dice {row['val_dice']:.4f} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)  # fmt: skip
        log.append(row)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_atomic(state_path, {
                "config": asdict(cfg), "encoder": encoder.state_dict(), "optimizer": opt.state_dict(),
                "rng": rng.bit_generator.state, "step": step, "log": log,
            })  # fmt: skip
    encoder.eval()
    return encoder, log


def _base_decoder_model() -> BoxSAM:
    return load_model(BASE)


def write_log(log: list[dict], teacher_dice: float, path: Path) -> None:
    fields = ["step", "train_mse", "val_mse", "val_dice", "teacher_val_dice"]
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


def write_summary(
    log: list[dict],
    teacher_dice: float,
    cfg: DistillConfig,
    sizes: dict[str, int],
    path: Path,
) -> None:
    """``reports/students/distill.md``: what was trained on what, and the learning curve."""
    val = [r for r in log if "val_dice" in r]
    lines = [
        f"# Distillation: student `{cfg.student}` from TinyViT (LiteMedSAM)",
        "",
        f"Command: `make distill` (`python -m train.distill --student {cfg.student} --steps {cfg.steps}`), "
        f"{time.strftime('%Y-%m-%d')}. Machine: {describe()}.",
        f"Data: {sizes['train_cases']} train-split cases of `splits/public.csv` -> "
        f"{sizes['train_views']} cached views (teacher embeddings fp16); validation: "
        f"{sizes['val_cases']} val-split cases -> "
        f"{sizes['val_slices']} slices with objects. Batch {cfg.batch}, AdamW lr {cfg.lr}. "
        "The proxy below is a quick signal only; the gate (`gate/README.md`) runs the real app.",
        "",
        "Validation proxy Dice: LiteMedSAM's prompt encoder + mask decoder (unchanged) on the student's "
        f"embeddings, tight boxes, model frame. The same on TinyViT's own embeddings: **{teacher_dice:.4f}** "
        "(the ceiling).",
        "",
        "| step | images seen | val embedding MSE | val proxy Dice | gap to TinyViT |",
        "|---|---|---|---|---|",
        *(
            f"| {r['step']} | {r['step'] * cfg.batch} | {r['val_mse']:.4f} | {r['val_dice']:.4f} | "
            f"{r['val_dice'] - teacher_dice:+.4f} |"
            for r in val
        ),
        "",
        "![learning curve](distill.png)",
    ]
    write_markdown(path, lines)


def gate_student(
    key: str, weights: Path, val_cases: list[Path], args: argparse.Namespace, training: dict
) -> None:
    """Export the student, run the gate on every route (dims, modality) no specialist serves,
    ship it for the routes that pass."""
    taken = {route for spec in model_specs(args.weights).values() for route in spec.routes}
    chosen = [g for g in GROUPS if not args.gate_groups or g in args.gate_groups]
    free = [
        (g, (GROUPS[g].dims, m))
        for g in chosen
        for m in GROUPS[g].modalities
        if (GROUPS[g].dims, m) not in taken
    ]
    val_names = {
        g: [
            p.name
            for p in val_cases
            if group_of(p.name) == g and (GROUPS[g].dims, modality(p.name)) not in taken
        ]
        for g in chosen
    }
    val_names = {g: names for g, names in val_names.items() if names}
    routes = [{"dims": dims, "modality": m} for g, (dims, m) in free if g in val_names]
    card = {
        "key": key, "kind": "student encoder", "architecture": f"student_{args.student}", "base": BASE_KEY,
        "overlays": {"image_encoder": {"file": ENCODER_FILE, "sha256": sha256_file(weights)}},
        "routes": routes,
        "licence": "Apache-2.0; distilled from LiteMedSAM's encoder (Apache-2.0) on the research-licence "
        "data named in training.sources (their terms apply to any use)",
        "training": training,
    }  # fmt: skip
    folder = args.gate_dir / "weights" / key
    shutil.rmtree(args.gate_dir / "weights", ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(weights, folder / ENCODER_FILE)
    (folder / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    command = f"make distill (python -m train.distill --student {args.student} --gate)"
    results, rows = run_gate(val_names, args.data, args.gate_dir, STUDENT_RULE)
    write_report(results, rows, args.report / "gate", command, what="student")
    accepted = [r for g in val_names for r in decisions(results, g)]
    target = args.weights / key
    shutil.rmtree(target, ignore_errors=True)
    for r in results:
        verdict = "(group mean)" if r.modality == ALL else ("student" if r.accepted else "keeps TinyViT")
        print(
            f"distill gate: {r.label}: DSC {r.base_dsc:.4f} -> {r.spec_dsc:.4f}: {verdict}", file=sys.stderr
        )
    if not accepted:
        print("distill gate: no route passed; no student ships", file=sys.stderr)
        return
    card["routes"] = [{"dims": r.dims, "modality": r.modality} for r in accepted]
    card["validation"] = {g: group_validation(results, g, command) for g in val_names}
    target.mkdir(parents=True)
    shutil.copyfile(weights, target / ENCODER_FILE)
    (target / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/public"))
    parser.add_argument("--split", type=Path, default=Path("splits/public.csv"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--cache", type=Path, default=Path("build/distill_cache"))
    parser.add_argument("--out", type=Path, default=Path("build/distill"))
    parser.add_argument("--report", type=Path, default=Path("reports/students"))
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--gate-dir", type=Path, default=Path("build/gate_student"))
    parser.add_argument("--views", type=int, default=2, help="views per image (the first unaugmented)")
    parser.add_argument("--per-volume", type=int, default=12, help="slices per volume (train)")
    parser.add_argument("--val-per-volume", type=int, default=4, help="object slices per volume (validation)")
    parser.add_argument(
        "--gate", action="store_true", help="after training, gate the student on the val split"
    )
    parser.add_argument("--gate-groups", nargs="*", default=None, choices=list(GROUPS), help="only these")
    for name, default in asdict(DistillConfig()).items():
        kind = str if name == "student" else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(argv)
    if args.student not in STUDENTS:
        parser.error(f"unknown student {args.student!r}; candidates: {sorted(STUDENTS)}")
    if not args.data.is_dir():
        parser.error(f"no data folder {args.data}")
    cfg = DistillConfig(**{k: getattr(args, k) for k in asdict(DistillConfig())})
    teacher = SessionCache(create_core(None), args.models).get(BASE_KEY)
    cases = split_paths(args.split, args.data)
    train_files = cache_cases(
        cases["train"],
        args.cache / "train",
        lambda p: train_sample(p, teacher, args.views, args.per_volume, cfg.seed),
        "distill",
    )
    val_files = cache_cases(
        cases["val"], args.cache / "val", lambda p: val_sample(p, teacher, args.val_per_volume), "distill"
    )
    train = load_arrays(train_files, ("inputs", "teacher"))
    val = load_arrays(val_files, ("inputs", "teacher", "labels", "hw"))
    print(f"distill: {len(train['inputs'])} train views of {len(train_files)} cases, "
          f"{len(val['inputs'])} validation slices of {len(val_files)} cases", file=sys.stderr)  # fmt: skip
    decoder_model = _base_decoder_model()
    teacher_pool = Pool(val["teacher"], val["labels"], val["hw"], objects_of(val["labels"]))
    teacher_dice = val_dice(decoder_model, teacher_pool, limit=len(teacher_pool.objects))
    encoder, log = distill(train, val, args.out / cfg.student, cfg)
    weights = args.out / cfg.student / ENCODER_FILE
    torch.save({k: v.half() for k, v in encoder.state_dict().items()}, weights)
    args.report.mkdir(parents=True, exist_ok=True)
    write_log(log, teacher_dice, args.report / "distill_log.csv")
    plot_log(log, teacher_dice, args.report / "distill.png", f"student {cfg.student} <- TinyViT")
    sizes = {"train_cases": len(train_files), "train_views": len(train["inputs"]),
             "val_cases": len(val_files), "val_slices": len(val["inputs"])}  # fmt: skip
    write_summary(log, teacher_dice, cfg, sizes, args.report / "distill.md")
    print(f"distill: wrote {weights}, {args.report}/distill_log.csv, distill.png "
          f"(teacher proxy Dice {teacher_dice:.4f})", file=sys.stderr)  # fmt: skip
    if args.gate:
        training = {
            "command": "make distill",
            "data": f"{args.data}, train rows of {args.split} (masks not used)",
            "cases": len(train_files), "views": int(len(train["inputs"])),
            "sources": sources_of([p.name for p in cases["train"]]),
            "config": asdict(cfg), "teacher_proxy_val_dice": teacher_dice,
            "student_proxy_val_dice": log[-1].get("val_dice"),
        }  # fmt: skip
        gate_student(f"student_{cfg.student}", weights, cases["val"], args, training)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
