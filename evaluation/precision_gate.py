"""``make precision-gate``: which routes may run bf16 (``app/precision.py``).

The product as shipped (specialists, routers, the cascade) runs the validation cases of
``splits/public.csv`` twice through the app, once at fp32 and once with every route at bf16,
and both are scored with the challenge metrics. A route (dims, modality) may run bf16 when RULE
holds on it (at least 3 cases) and on every validation source of it: bf16 within half a DSC
point and one NSD point of fp32. The routes that pass are written to ``weights/precision.json``,
which ``make export`` copies into the manifest's ``precision`` rows; the report goes to
``reports/precision_gate/``. Needs a CPU with native bf16 (on any other the product never runs
bf16, so there is nothing to gate) and ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import openvino as ov

from app.precision import PRECISION_FILE, host_precisions
from common.machine import cpu_model_name
from common.paths import MODELS
from evaluation.datasets import DEFAULT_DATA, as_one_folder
from evaluation.evaluate import score_one
from evaluation.runner import DEFAULT_WORK, output_folder, run_missing, with_precision
from modeling.registry import WEIGHTS_DIR
from train.gate import ALL, STUDENT_RULE, GateResult, decisions, route_results, row_verdict, write_report
from train.groups import GROUPS, group_of
from train.samples import split_paths

CANDIDATE = "bf16"
# The student encoder's bounds (a change over whole routes, held-out sources included), said of bf16.
RULE = replace(
    STUDENT_RULE,
    text="bf16 validation mean DSC >= fp32's - 0.005 (within half a point) and mean NSD >= fp32's - 0.01, "
    "on >= 3 cases, on the route and on every validation source of it",
)
COMMAND = "make precision-gate (python -m evaluation.precision_gate)"


def every_route(names: list[str], precision: str = CANDIDATE) -> list[dict[str, Any]]:
    """A precision row for every route (dims, modality) of a group among ``names``."""
    routes = {(GROUPS[g].dims, m) for n in names if (g := group_of(n)) for m in GROUPS[g].modalities}
    return [{"dims": d, "modality": m, "precision": precision} for d, m in sorted(routes)]


def precision_verdict(results: list[GateResult], r: GateResult) -> str:
    """A route row: whether it runs bf16; a source row: whether it holds the rule."""
    if r.modality == ALL or r.source != ALL:
        return row_verdict(results, r)
    return CANDIDATE if r in decisions(results, r.group) else "keeps fp32"


def accepted_rows(results: list[GateResult]) -> list[dict[str, Any]]:
    """The precision rows of the routes that pass, each with its validation means."""
    return [
        {
            "dims": r.dims,
            "modality": r.modality,
            "precision": CANDIDATE,
            "cases": r.cases,
            "dsc_change": round(r.spec_dsc - r.base_dsc, 4),
            "nsd_change": round(r.spec_nsd - r.base_nsd, 4),
        }
        for group in sorted({r.group for r in results})
        for r in decisions(results, group)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.precision_gate", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=Path("splits/public.csv"))
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="app runs (shared, resumable)")
    parser.add_argument("--out", type=Path, default=Path("reports/precision_gate"))
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="where precision.json goes")
    args = parser.parse_args(argv)
    if CANDIDATE not in host_precisions(ov.Core()):
        print(f"precision gate: this CPU ({cpu_model_name()}) has no native {CANDIDATE}; the product "
              "runs fp32 on it, so there is nothing to gate here", file=sys.stderr)  # fmt: skip
        return 2
    if not any(d.is_dir() for d in args.data):
        parser.error(f"no data folder among {args.data}")
    data = as_one_folder(args.data)
    names = sorted(p.name for p in split_paths(args.split, data)["val"] if group_of(p.name))
    val_names = {g: [n for n in names if group_of(n) == g] for g in GROUPS}
    val_names = {g: v for g, v in val_names.items() if v}
    systems = {
        "base": with_precision(args.models, args.work / "models_f32", []),
        "spec": with_precision(args.models, args.work / f"models_{CANDIDATE}", every_route(names)),
    }
    for system, models in systems.items():
        count, secs = run_missing("app", names, data, args.work, models)
        print(f"precision gate: {system} ran {count} cases without an output in {secs:.0f} s",
              file=sys.stderr)  # fmt: skip
    outputs = {system: output_folder("app", args.work, models) for system, models in systems.items()}
    rows = [{**score_one(data / n, outputs, "zyx"), "group": group_of(n)} for n in names]
    results = route_results(rows, val_names, RULE)
    command = f"{COMMAND}, {date.today().isoformat()}, {cpu_model_name()}, OpenVINO {ov.__version__}"
    write_report(results, rows, args.out, command, what=CANDIDATE, say=precision_verdict, base="fp32")
    accepted = accepted_rows(results)
    decision = {"command": command, "rule": RULE.text, "rows": accepted}
    (args.weights / PRECISION_FILE).write_text(json.dumps(decision, indent=2) + "\n")
    routes = ", ".join(f"{r['modality']} {r['dims']}D" for r in accepted) or "none"
    print(f"precision gate: {CANDIDATE} on {routes}; report {args.out / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
