"""``make distill``: decoupled distillation of a student image encoder from LiteMedSAM's TinyViT.

1. Cache (resumable, one file per case): for every train-split case of ``splits/public.csv``
   (2D images; up to ``per_volume`` slices of each volume, evenly spread over its non-empty
   slices), ``views`` views (the first as is, the others flipped / rotated / gamma- and
   contrast-jittered), preprocessed exactly as the app does and stored as uint8
   (N, 3, 256, 256) with the teacher's embedding of that very input, fp16 (N, 256, 64, 64).
   Validation-split cases are cached without augmentation, with their model-frame labels.
2. Train the student (``--student``: a random-init family of ``modeling/architectures/students.py``
   or a teacher-at-size one of ``tiny_vit.TEACHER_AT``, which starts from the teacher's weights)
   with MSE to the teacher's embedding; AdamW; resumable from ``build/distill/<student>/state.pt``,
   or, in a new sitting, from its git carry ``checkpoints/distill/<student>.pt`` (``train/distill/loop.py``).
   Logged every ``val_every`` steps: validation embedding MSE and the end-to-end proxy Dice
   (LiteMedSAM's unchanged prompt encoder + mask decoder on the student's embeddings, tight
   boxes, model frame) next to the same Dice on the teacher's embeddings (the reference, not a
   ceiling: the student may pass it).
3. ``--gate``: export the student (same export stage, parity gates) and run the app with it on
   the validation cases of every group that has no specialist; a route gets the student when
   its validation DSC is within half a point of LiteMedSAM's and its NSD within one, on the route
   and on every validation source of it (STUDENT_RULE). Accepted groups ->
   ``weights/student_<name>/`` (routes for those groups only); none -> nothing ships.
   ``--derived`` (``make distill`` passes ``build/derived/slices``) adds the 2D cases cut from
   the validation volumes to the gate's cases (CT 2D has 2 of its own); the slices of a source
   the student trained on are not marked *unseen* (``train/distill/gate.py: trained_on``).

``--evaluate CARRY`` judges a student trained elsewhere (``python -m train.distill.gpu`` on a lent
GPU, from the kit of ``python -m train.distill.kit``): no training and no train cache; the
validation proxy per source into ``reports/students/<student>_gpu/distill.md``, then ``--gate`` or
``--probe`` as above.

Outputs, per student: ``reports/students/<student>/distill_log.csv``, ``distill.png``,
``distill.md``, ``gate/`` (with ``--gate``), ``probe/`` (with ``--probe``: the gate on every
route, the specialists' too, deciding and shipping nothing: how far the student is from them).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from app.sessions import SamSession, SessionCache, create_core
from common.paths import MODELS, SPLIT_CSV, STUDENT_REPORTS
from evaluation.datasets import DEFAULT_DATA, as_one_folder
from evaluation.derived_slices import derived_paths
from modeling.architectures.students import STUDENTS
from modeling.architectures.tiny_vit import TEACHER_AT
from modeling.checkpoint import state_fp16
from modeling.registry import BASE_KEY, WEIGHTS_DIR
from train.distill.gate import ENCODER_FILE, gate_student
from train.distill.loop import (
    CARRY_DIR,
    KD_PROMPTS,
    DistillConfig,
    base_decoder_model,
    by_source,
    distill,
    initial_encoder,
    load_start,
    mean_or_nan,
    proxy_by_source,
    proxy_scores,
    run_name,
    student_embeddings,
)
from train.distill.report import command_of, plot_log, write_carry_summary, write_log, write_summary
from train.distill.samples import load_arrays, slice_sources, train_labels, train_sample, val_sample
from train.groups import GROUPS
from train.losses import MASK_DISTILLATION_LOSSES
from train.provenance import sources_of
from train.samples import cache_cases, split_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=SPLIT_CSV)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--cache", type=Path, default=Path("build/distill_cache"))
    parser.add_argument("--out", type=Path, default=Path("build/distill"))
    parser.add_argument("--report", type=Path, default=None, help="default reports/students/<student>")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument(
        "--carry",
        type=Path,
        default=None,
        help="git carry (default checkpoints/distill/<run>.pt; <run>: the student, + _kd if --kd-weight)",
    )
    parser.add_argument(
        "--start-from",
        type=Path,
        default=None,
        help="a new run (no state, no carry yet) starts from this carry's weights, e.g. the MSE run's",
    )
    parser.add_argument("--gate-dir", type=Path, default=Path("build/gate_student"))
    parser.add_argument(
        "--derived",
        type=Path,
        nargs="*",
        default=[],
        help="folders of 2D cases cut from validation volumes (make derived-slices): the gate counts them",
    )
    parser.add_argument("--views", type=int, default=2, help="views per image (the first unaugmented)")
    parser.add_argument("--per-volume", type=int, default=12, help="slices per volume (train)")
    parser.add_argument("--val-per-volume", type=int, default=4, help="object slices per volume (validation)")
    parser.add_argument(
        "--gate", action="store_true", help="after training, gate the student on the val split"
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="gate the student on every route, specialists' included, into <report>/probe/; ship nothing",
    )
    parser.add_argument("--gate-groups", nargs="*", default=None, choices=list(GROUPS), help="only these")
    parser.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        metavar="CARRY",
        help="judge a carry trained elsewhere (python -m train.distill.gpu): no training, no train cache; "
        "the proxy into <report> (default reports/students/<student>_gpu), then --gate/--probe",
    )
    choices = {"kd_prompts": KD_PROMPTS, "kd_loss": tuple(MASK_DISTILLATION_LOSSES)}
    for name, default in asdict(DistillConfig()).items():
        kind = str if name == "student" else type(default)
        flag = f"--{name.replace('_', '-')}"
        parser.add_argument(flag, type=kind, default=default, choices=choices.get(name))
    args = parser.parse_args(argv)
    if args.student not in [*STUDENTS, *TEACHER_AT]:
        parser.error(f"unknown student {args.student!r}; candidates: {sorted([*STUDENTS, *TEACHER_AT])}")
    if not any(d.is_dir() for d in args.data):
        parser.error(f"no data folder among {args.data}")
    cfg = DistillConfig(**{k: getattr(args, k) for k in asdict(DistillConfig())})
    run = run_name(cfg)
    args.report = args.report or STUDENT_REPORTS / (f"{cfg.student}_gpu" if args.evaluate else run)
    teacher = SessionCache(create_core(None), args.models).get(BASE_KEY)
    data = as_one_folder([*args.data, *args.derived])
    cases = split_paths(args.split, data)
    try:  # the gate's cases; the proxy validates on cases["val"] alone
        gate_cases = cases["val"] + derived_paths(args.derived, args.split, data)
    except ValueError as exc:
        parser.error(str(exc))
    if args.evaluate:
        return evaluate_carry(args, cfg, cases, data, teacher, gate_cases)
    train_files = cache_cases(
        cases["train"],
        args.cache / "train",
        lambda p: train_sample(p, teacher, args.views, args.per_volume, cfg.seed),
        "distill",
    )
    val, val_cases = validation_slices(cases["val"], args.cache / "val", teacher, args.val_per_volume)
    train = load_arrays(train_files, ("inputs", "teacher"))
    if cfg.kd_weight > 0 and cfg.kd_prompts == "objects":
        label_files = cache_cases(
            cases["train"],
            args.cache / "train_labels",
            lambda p: train_labels(p, args.views, args.per_volume, cfg.seed),
            "distill",
        )
        train["labels"] = load_arrays(label_files, ("labels",))["labels"]
        if len(train["labels"]) != len(train["inputs"]):
            msg = (f"distill: {args.cache}: {len(train['labels'])} label views for {len(train['inputs'])} "
                   "cached views; were both caches made with the same --views/--per-volume?")  # fmt: skip
            raise SystemExit(msg)
    print(f"distill: {len(train['inputs'])} train views of {len(train_files)} cases, "
          f"{len(val['inputs'])} validation slices of {val_cases} cases",
          file=sys.stderr)  # fmt: skip
    decoder_model = base_decoder_model()
    per_slice = cfg.val_objects_per_slice
    teacher_scores = proxy_scores(decoder_model, val["teacher"], val, per_slice)
    teacher_dice = mean_or_nan(teacher_scores[0])
    teacher_sources = by_source(*teacher_scores, val["source"])
    carry = args.carry or CARRY_DIR / f"{run}.pt"
    encoder, log, sources = distill(train, val, args.out / run, cfg, carry, args.start_from, teacher_sources)
    weights = args.out / run / ENCODER_FILE
    torch.save(state_fp16(encoder.state_dict()), weights)
    args.report.mkdir(parents=True, exist_ok=True)
    write_log(log, teacher_dice, args.report / "distill_log.csv")
    plot_log(log, teacher_dice, args.report / "distill.png", f"student {cfg.student} <- TinyViT")
    sizes = {"train_cases": len(train_files), "train_views": len(train["inputs"]),
             "val_cases": val_cases, "val_slices": len(val["inputs"])}  # fmt: skip
    if not sources:  # the run was already complete: nothing validated in this call
        student = proxy_by_source(decoder_model, student_embeddings(encoder, val["inputs"]), val, per_slice)
        sources = {"teacher": teacher_sources, "student": student}
    write_summary(log, teacher_dice, cfg, sizes, args.report / "distill.md", args.start_from, sources)
    print(f"distill: wrote {weights}, {args.report}/distill_log.csv, distill.png "
          f"(teacher proxy Dice {teacher_dice:.4f})", file=sys.stderr)  # fmt: skip
    if args.gate or args.probe:
        training = {
            "command": "make distill",
            "data": f"{' + '.join(map(str, args.data))}, train rows of {args.split} (masks not used)",
            "cases": len(train_files), "views": int(len(train["inputs"])),
            "sources": sources_of([p.name for p in cases["train"]]),
            "config": asdict(cfg), "teacher_proxy_val_dice": teacher_dice,
            "student_proxy_val_dice": log[-1].get("val_dice"),
        }  # fmt: skip
        run = command_of(cfg, args.start_from)
        gate_student(f"student_{cfg.student}", weights, gate_cases, data, args, training, run)
    return 0


def validation_slices(
    cases: list[Path], cache: Path, teacher: SamSession, per_volume: int
) -> tuple[dict[str, np.ndarray], int]:
    """(The validation cases' object slices with the teacher's embeddings, labels, sizes and
    sources; the number of cases), cached per case."""
    files = cache_cases(cases, cache, lambda p: val_sample(p, teacher, per_volume), "distill")
    val = load_arrays(files, ("inputs", "teacher", "labels", "hw"))
    val["source"] = slice_sources(files)
    return val, len(files)


def evaluate_carry(
    args: argparse.Namespace,
    cfg: DistillConfig,
    cases: dict[str, list[Path]],
    data: Path,
    teacher: SamSession,
    gate_cases: list[Path],
) -> int:
    """``--evaluate CARRY``: a student trained elsewhere, judged on the validation split by the
    proxy (report) and, with ``--gate`` / ``--probe``, by the app on ``gate_cases``."""
    state = torch.load(args.evaluate, map_location="cpu", weights_only=False)
    if state["config"]["student"] != cfg.student:
        msg = f"distill: {args.evaluate} holds a {state['config']['student']!r} student, not {cfg.student!r}"
        raise SystemExit(msg)
    encoder = initial_encoder(cfg.student)
    load_start(encoder, args.evaluate)
    val, val_cases = validation_slices(cases["val"], args.cache / "val", teacher, args.val_per_volume)
    decoder_model, per_slice = base_decoder_model(), cfg.val_objects_per_slice
    teacher_scores = proxy_scores(decoder_model, val["teacher"], val, per_slice)
    embeddings = student_embeddings(encoder, val["inputs"])  # (N, 256, 64, 64)
    student_scores = proxy_scores(decoder_model, embeddings, val, per_slice)
    teacher_dice, student_dice = mean_or_nan(teacher_scores[0]), mean_or_nan(student_scores[0])
    sources = {
        "teacher": by_source(*teacher_scores, val["source"]),
        "student": by_source(*student_scores, val["source"]),
    }
    weights = args.out / f"{cfg.student}_gpu" / ENCODER_FILE
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_fp16(encoder.state_dict()), weights)
    sizes = {"val_cases": val_cases, "val_slices": len(val["inputs"])}
    args.report.mkdir(parents=True, exist_ok=True)
    summary = args.report / "distill.md"
    write_carry_summary(args.evaluate, state, teacher_dice, student_dice, sizes, summary, sources)
    print(f"distill: {args.evaluate}: proxy Dice {student_dice:.4f} vs TinyViT {teacher_dice:.4f}; {summary}",
          file=sys.stderr)  # fmt: skip
    if args.gate or args.probe:
        training = {
            "command": f"python -m train.distill.gpu (carry {args.evaluate})",
            "data": f"the kit: train rows of {args.split} (masks not used)",
            "config": state["config"], "steps": state["step"],
            # the kit holds the train rows of the split (train.distill.kit)
            "sources": sources_of([p.name for p in cases["train"]]),
            "teacher_proxy_val_dice": teacher_dice, "student_proxy_val_dice": student_dice,
        }  # fmt: skip
        run = f"python -m train.distill --student {cfg.student} --evaluate {args.evaluate}"
        gate_student(f"student_{cfg.student}", weights, gate_cases, data, args, training, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
