"""``make precision-gate``: which routes may run a narrower precision (``app/precision.py``).

The product as shipped (specialists, routers, the cascade) runs the validation cases of
``splits/public.csv`` at fp32 and at each candidate of CANDIDATES in turn (every graph at bf16,
then the encoder alone at bf16 on the routes the first did not pass), and each is scored against
fp32 with the challenge metrics. A route (dims, modality) takes the first candidate under which
RULE holds on it (at least 3 cases) and on every validation source of it: within half a DSC
point and one NSD point of fp32. ``--derived`` adds 2D cases cut from validation volumes
(``make derived-slices``): CT 2D has 2 validation cases of its own, too few for any route to be
decided on, and its slices come from sources of their own (``IBSISTS-slices``). The routes
that pass are written to ``weights/precision.json``, which ``make export`` copies into the
manifest's ``precision`` rows; the reports go to ``reports/precision_gate/`` (the first
candidate) and ``reports/precision_gate/<candidate>/``.
Needs a CPU with native bf16 (on any other the product never runs bf16, so there is nothing to
gate) and ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import openvino as ov

from app.precision import PRECISION_FILE, host_precisions
from app.routing import modality
from common.machine import cpu_model_name
from common.paths import MODELS
from evaluation.datasets import DEFAULT_DATA, as_one_folder
from evaluation.derived_slices import derived_paths
from evaluation.evaluate import score_one
from evaluation.runner import DEFAULT_WORK, output_folder, run_missing, with_precision
from modeling.registry import WEIGHTS_DIR
from train.gate import (
    ALL,
    STUDENT_RULE,
    VALIDATION_CASES,
    GateResult,
    decisions,
    derived_flag,
    route_results,
    row_verdict,
    validation_cases,
    write_report,
)
from train.groups import GROUPS, group_of
from train.samples import split_paths

# The candidates in the order a route tries them (the faster first): it takes the first that passes.
CANDIDATES = ("bf16", "bf16_encoder")
# The student encoder's bounds (a change over whole routes, held-out sources included), said of a
# candidate precision.
RULE = replace(
    STUDENT_RULE,
    text="the candidate's validation mean DSC >= fp32's - 0.005 (within half a point) and mean NSD >= "
    "fp32's - 0.01, on >= 3 cases, on the route and on every validation source of it",
)
COMMAND = "python -m evaluation.precision_gate"


Route = tuple[int, str]  # (spatial dims, canonical modality)


def route_of(name: str) -> Route | None:
    """The route of a case file name, or None (no group)."""
    group = group_of(name)
    return None if group is None else (GROUPS[group].dims, str(modality(name)))


def every_route(names: list[str], precision: str) -> list[dict[str, Any]]:
    """A precision row for every route (dims, modality) of a group among ``names``."""
    routes = {(GROUPS[g].dims, m) for n in names if (g := group_of(n)) for m in GROUPS[g].modalities}
    return [{"dims": d, "modality": m, "precision": precision} for d, m in sorted(routes)]


def verdict_of(candidate: str) -> Callable[[list[GateResult], GateResult], str]:
    """A route row: whether it runs ``candidate``; a source row: whether it holds the rule."""

    def say(results: list[GateResult], r: GateResult) -> str:
        if r.modality == ALL or r.source != ALL:
            return row_verdict(results, r)
        return candidate if r in decisions(results, r.group) else "keeps fp32"

    return say


def accepted_rows(results: list[GateResult], candidate: str) -> list[dict[str, Any]]:
    """The precision rows of the routes that pass, each with its validation means."""
    return [
        {
            "dims": r.dims,
            "modality": r.modality,
            "precision": candidate,
            "cases": r.cases,
            "dsc_change": round(r.spec_dsc - r.base_dsc, 4),
            "nsd_change": round(r.spec_nsd - r.base_nsd, 4),
        }
        for group in sorted({r.group for r in results})
        for r in decisions(results, group)
    ]


def still_open(names: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The cases of ``names`` whose route no row of ``rows`` has decided yet."""
    decided = {(int(r["dims"]), str(r["modality"])) for r in rows}
    return [n for n in names if route_of(n) not in decided]


def report_folder(out: Path, candidate: str) -> Path:
    """The first candidate reports in ``out``, each later one in ``out/<candidate>``."""
    return out if candidate == CANDIDATES[0] else out / candidate


def gate_candidate(
    candidate: str,
    names: list[str],
    data: Path,
    work: Path,
    models: Path,
    out: Path,
    command: str,
    cases: str = VALIDATION_CASES,
) -> list[dict[str, Any]]:
    """Run ``names`` at fp32 and at ``candidate`` (runs kept in ``work``, resumable), score both,
    write the candidate's report, and return the precision rows of the routes that pass."""
    systems = {
        "base": with_precision(models, work / "models_f32", []),
        "spec": with_precision(models, work / f"models_{candidate}", every_route(names, candidate)),
    }
    for system, derived in systems.items():
        count, secs = run_missing("app", names, data, work, derived)
        print(f"precision gate: {candidate}: {system} ran {count} cases without an output in {secs:.0f} s",
              file=sys.stderr)  # fmt: skip
    outputs = {system: output_folder("app", work, derived) for system, derived in systems.items()}
    rows = [{**score_one(data / n, outputs, "zyx"), "group": group_of(n)} for n in names]
    val_names = {g: [n for n in names if group_of(n) == g] for g in GROUPS}
    results = route_results(rows, {g: v for g, v in val_names.items() if v}, RULE)
    folder, say = report_folder(out, candidate), verdict_of(candidate)
    write_report(results, rows, folder, command, what=candidate, say=say, base="fp32", cases=cases)
    return accepted_rows(results, candidate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.precision_gate", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=Path("splits/public.csv"))
    parser.add_argument(
        "--derived",
        type=Path,
        nargs="*",
        default=[],
        help="folders of 2D cases cut from validation volumes (make derived-slices): all join validation",
    )
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="app runs (shared, resumable)")
    parser.add_argument("--out", type=Path, default=Path("reports/precision_gate"))
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="where precision.json goes")
    args = parser.parse_args(argv)
    if not set(CANDIDATES) <= host_precisions(ov.Core()):
        print(f"precision gate: this CPU ({cpu_model_name()}) has no native bf16; the product runs fp32 "
              "on it, so there is nothing to gate here", file=sys.stderr)  # fmt: skip
        return 2
    if not any(d.is_dir() for d in args.data):
        parser.error(f"no data folder among {args.data}")
    data = as_one_folder([*args.data, *args.derived])
    try:
        derived = [p.name for p in derived_paths(args.derived, args.split, data)]
    except ValueError as exc:
        parser.error(str(exc))
    names = sorted([p.name for p in split_paths(args.split, data)["val"]] + derived)
    names = [n for n in names if group_of(n)]
    run = COMMAND + derived_flag(args.derived)
    where = f"{date.today().isoformat()}, {cpu_model_name()}, OpenVINO {ov.__version__}"
    command = f"make precision-gate ({run}), {where}"
    accepted: list[dict[str, Any]] = []
    folders, cases = (data, args.work, args.models, args.out), validation_cases(args.derived)
    for candidate in CANDIDATES:
        todo = still_open(names, accepted)
        if todo:
            accepted += gate_candidate(candidate, todo, *folders, command, cases)
    decision = {"command": command, "rule": RULE.text, "rows": accepted}
    (args.weights / PRECISION_FILE).write_text(json.dumps(decision, indent=2) + "\n")
    routes = ", ".join(f"{r['modality']} {r['dims']}D ({r['precision']})" for r in accepted) or "none"
    print(f"precision gate: {routes}; reports {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
