"""``make student-candidates``: time every candidate student encoder next to TinyViT, on this CPU.

Each candidate of ``modeling/architectures/students.py``, and TinyViT itself at a reduced input
size (``TEACHER_AT``: bilinear down, TinyViT, bilinear up to 64 x 64; a student that keeps the
teacher's weights), random init (speed does not depend on the weights), goes through the
product's own export path (torch -> ONNX opset 17 -> OpenVINO IR fp32)
and is compiled with the runtime's settings; TinyViT is LiteMedSAM's shipped IR
(``models/lite_medsam/encoder.xml``). Timing: rounds that visit every model in turn (so drift
hits all), per round the median of ``--repeats`` calls, at batch 1 and batch 8 (per image).
A candidate goes on to distillation only if its batch-1 speed-up over TinyViT is >= GATE.
Writes ``reports/students/candidates.{md,csv}``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from app.precision import DEFAULT_PRECISION, host_precisions
from common.machine import describe
from common.paths import MODELS, STUDENT_REPORTS
from common.reports import write_csv, write_report
from evaluation.batching import encoder_inputs, reshaped_graphs
from evaluation.timing import alternating_medians
from export.to_onnx import export_encoder
from export.to_openvino import convert_to_ir
from export.wrappers import EncoderForExport
from modeling.architectures.sam import BoxSAM, build_architecture, encoder_gflops
from modeling.architectures.students import STUDENTS
from modeling.architectures.tiny_vit import TEACHER_AT

SPEEDUP_GATE = 2.5
TEACHER = "tinyvit (LiteMedSAM)"
BATCHES = (1, 8)


def candidate_model(name: str) -> BoxSAM:
    """A random-init candidate (the teacher-at-size ones with random weights too: speed does
    not depend on them)."""
    return build_architecture(f"student_{name}").eval()


def export_candidate(name: str, folder: Path) -> tuple[Path, float, float]:
    """Random-init student -> IR; (encoder xml, parameters in millions, GFLOPs per image)."""
    torch.manual_seed(0)
    model = candidate_model(name)
    folder.mkdir(parents=True, exist_ok=True)
    export_encoder(EncoderForExport(model), 256, folder / "encoder.onnx")
    convert_to_ir(folder / "encoder.onnx", folder / "encoder.xml", {"model_key": f"student_{name}"})
    params = sum(p.numel() for p in model.image_encoder.parameters()) / 1e6
    return folder / "encoder.xml", params, encoder_gflops(model, 256)


def time_models(
    xmls: dict[str, Path], rounds: int, repeats: int, precision: str = DEFAULT_PRECISION
) -> dict[str, dict[int, float]]:
    """Model -> batch -> median over rounds of per-round medians (s per image); within a round
    every (model, batch) is called in turn. Every encoder compiled at ``precision``."""
    compiled = {  # the IR has a static batch of 1: reshaped to each batch timed
        name: reshaped_graphs(xml, BATCHES, encoder_inputs, None, "encoder", precision)
        for name, xml in xmls.items()
    }
    inputs = {b: np.random.default_rng(0).random((b, 3, 256, 256), dtype=np.float32) for b in BATCHES}
    calls = {(n, b): partial(compiled[n][b], {"image": inputs[b]}) for n in xmls for b in BATCHES}
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for r in range(rounds):
        for key, seconds in alternating_medians(calls, repeats, warmup=1 if r == 0 else 0).items():
            samples[key].append(seconds / key[1])
        print(f"student-candidates: round {r + 1}/{rounds} done", flush=True)
    return {n: {b: statistics.median(samples[n, b]) for b in BATCHES} for n in xmls}


def table_row(
    name: str, facts: tuple[float, float], timing: dict[int, float], teacher: dict[int, float]
) -> dict[str, object]:
    """One line of the table: size, cost, speed and whether the candidate passes the gate."""
    speedup = {b: teacher[b] / timing[b] for b in BATCHES}
    return {
        "model": name,
        "params_m": round(facts[0], 2),
        "gflops": round(facts[1], 2),
        "ms_batch1": round(1000 * timing[1], 1),
        "ms_per_image_batch8": round(1000 * timing[8], 1),
        "speedup_batch1": round(speedup[1], 2),
        "speedup_batch8": round(speedup[8], 2),
        "passes": "teacher" if name == TEACHER else ("yes" if speedup[1] >= SPEEDUP_GATE else "no"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.students", description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--work", type=Path, default=Path("build/students"))
    parser.add_argument("--out", type=Path, default=STUDENT_REPORTS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=["f32", "bf16"],
        help="every encoder at this precision (bf16: where the CPU runs it natively, Conventions 12)",
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        choices=[*STUDENTS, *TEACHER_AT],
        help="only these (default all)",
    )
    args = parser.parse_args(argv)
    if args.precision not in host_precisions(ov.Core()):
        parser.error(f"this CPU does not run {args.precision} natively")
    xmls = {TEACHER: args.models / "lite_medsam" / "encoder.xml"}
    facts: dict[str, tuple[float, float]] = {}
    for name in args.candidates or [*STUDENTS, *TEACHER_AT]:
        xml, params, gflops = export_candidate(name, args.work / name)
        xmls[name], facts[name] = xml, (params, gflops)
        print(
            f"student-candidates: exported {name}: {params:.2f} M parameters, {gflops:.1f} GFLOPs", flush=True
        )
    teacher_model = build_architecture("lite_medsam")
    facts[TEACHER] = (sum(p.numel() for p in teacher_model.image_encoder.parameters()) / 1e6,
                      encoder_gflops(teacher_model, 256))  # fmt: skip
    timing = time_models(xmls, args.rounds, args.repeats, args.precision)
    rows = [table_row(name, facts[name], timing[name], timing[TEACHER]) for name in xmls]
    settings = " ".join(
        [f"--rounds {args.rounds} --repeats {args.repeats}"]
        + ([f"--precision {args.precision}"] if args.precision != DEFAULT_PRECISION else [])
        + ([f"--candidates {' '.join(args.candidates)}"] if args.candidates else [])
        + ([f"--out {args.out}"] if args.out != STUDENT_REPORTS else [])
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "candidates.csv", rows)
    lines = [
        "# Student encoder candidates: speed on this CPU",
        "",
        f"Machine: {describe()}. OpenVINO {ov.__version__}, {args.precision}, the runtime's compile "
        f"settings. Command: `make student-candidates` (`python -m evaluation.students {settings}`). "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "Encoder only, (B, 3, 256, 256) -> (B, 256, 64, 64); random weights (speed does not depend on "
        "them); median over rounds of the per-round median. GFLOPs from torch's FLOP counter "
        f"(2 x multiply-adds). Gate: batch-1 speed-up over TinyViT >= {SPEEDUP_GATE}.",
        "",
        "| model | params (M) | GFLOPs | ms, batch 1 | ms/image, batch 8 | speed-up b1 | speed-up b8 | "
        "goes on |",
        "|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows),
    ]
    write_report(args.out / "candidates.md", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
