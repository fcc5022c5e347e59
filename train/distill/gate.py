"""The student's gate: export it, run the app on the validation cases of every route no
specialist serves, ship it (``weights/student_<name>/``) for the routes that pass."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from app.routing import modality
from modeling.checkpoint import sha256_file
from modeling.registry import BASE_KEY, CARD_NAME
from train.gate import (
    STUDENT_RULE,
    decisions,
    group_validation,
    row_verdict,
    run_gate,
    write_candidate,
    write_report,
)
from train.groups import GROUPS, group_of

ENCODER_FILE = "encoder_fp16.pt"


def routes_taken(weights: Path, student_key: str) -> set[tuple[int, str]]:
    """(dims, modality) routes served by the trained models in ``weights`` other than the student
    itself (a student shipped by an earlier gate must not keep its own routes from this one)."""
    taken: set[tuple[int, str]] = set()
    for card_path in sorted(weights.glob(f"*/{CARD_NAME}")):
        if card_path.parent.name != student_key:
            card = json.loads(card_path.read_text())
            taken |= {(int(r["dims"]), str(r["modality"])) for r in card.get("routes", [])}
    return taken


def gate_student(
    key: str, weights: Path, val_cases: list[Path], data: Path, args: argparse.Namespace, training: dict
) -> None:
    """Export the student, run the gate on every route (dims, modality) no specialist serves,
    ship it for the routes that pass."""
    taken = routes_taken(args.weights, key)
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
    shutil.rmtree(args.gate_dir / "weights", ignore_errors=True)
    write_candidate(args.gate_dir / "weights" / key, card, weights)
    command = f"make distill (python -m train.distill --student {args.student} --gate)"
    results, rows = run_gate(val_names, data, args.gate_dir, STUDENT_RULE)
    write_report(results, rows, args.report / "gate", command, "student", set(training["sources"]))
    accepted = [r for g in val_names for r in decisions(results, g)]
    target = args.weights / key
    shutil.rmtree(target, ignore_errors=True)
    for r in results:
        print(
            f"distill gate: {r.label}: DSC {r.base_dsc:.4f} -> {r.spec_dsc:.4f}, "
            f"NSD {r.base_nsd:.4f} -> {r.spec_nsd:.4f}: {row_verdict(results, r)}",
            file=sys.stderr,
        )
    if not accepted:
        print("distill gate: no route passed; no student ships", file=sys.stderr)
        return
    card["routes"] = [{"dims": r.dims, "modality": r.modality} for r in accepted]
    card["validation"] = {g: group_validation(results, g, command) for g in val_names}
    write_candidate(target, card, weights)
