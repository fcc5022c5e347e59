"""The student's gate: export it, run the app on the validation cases of every route no
specialist serves, ship it (``weights/student_<name>/``) for the routes that pass."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from app.routing import modality
from evaluation.derived_slices import derived_source
from modeling.architectures.sam import build_architecture, encoder_gflops
from modeling.checkpoint import same_weights, sha256_file
from modeling.registry import BASE_KEY, CARD_NAME
from train.gate import (
    STUDENT_RULE,
    decisions,
    derived_flag,
    group_validation,
    probe_verdict,
    row_verdict,
    run_gate,
    validation_cases,
    write_candidate,
    write_report,
)
from train.groups import GROUPS, group_of

ENCODER_FILE = "encoder_fp16.pt"


STUDENT_KIND = "student encoder"
Route = tuple[int, str]  # (dims, modality)


def read_cards(weights: Path) -> dict[str, dict]:
    """Model key -> card of every trained model in ``weights``."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(weights.glob(f"*/{CARD_NAME}"))}


def card_routes(card: dict) -> set[Route]:
    return {(int(r["dims"]), str(r["modality"])) for r in card.get("routes", [])}


def routes_taken(cards: dict[str, dict]) -> set[Route]:
    """Routes served by decoder specialists. A student encoder holds no route against another
    student: both are gated against LiteMedSAM, and a route both pass goes to the cheaper one
    (``arbitrate``)."""
    return {r for card in cards.values() if card.get("kind") != STUDENT_KIND for r in card_routes(card)}


def arbitrate(
    students: dict[str, tuple[float, set[Route]]], new_key: str, new_gflops: float, passed: set[Route]
) -> tuple[set[Route], dict[str, set[Route]]]:
    """Who serves the routes the new student passed. ``students``: the other shipped students,
    key -> (encoder GFLOP per slice, routes). A route goes to the new student unless a student
    at most as expensive already serves it. Returns (the new student's routes, every other
    student's remaining routes)."""
    rivals = {key: v for key, v in students.items() if key != new_key}
    kept_by_cheaper = {r for gflops, routes in rivals.values() if gflops <= new_gflops for r in routes}
    won = passed - kept_by_cheaper
    others = {
        key: (routes if gflops <= new_gflops else routes - won) for key, (gflops, routes) in rivals.items()
    }
    return won, others


def student_gflops(card: dict) -> float:
    """Encoder GFLOP per 256 slice of a student card (recorded by its gate, else counted)."""
    if "encoder_gflops" in card:
        return float(card["encoder_gflops"])
    return encoder_gflops(build_architecture(card["architecture"]), 256)


def hand_over(weights: Path, remaining: dict[str, set[Route]], cards: dict[str, dict]) -> None:
    """Rewrite the other students' cards with their remaining routes; a student left with none
    is removed (its carry in ``checkpoints/`` keeps the run), unless a decoder specialist was
    trained over its encoder (the card's ``encoder``): then it stays, serving no route itself."""
    encoders_in_use = {card.get("encoder") for card in cards.values()}
    for key, routes in remaining.items():
        if routes == card_routes(cards[key]):
            continue
        if not routes and key not in encoders_in_use:
            shutil.rmtree(weights / key)
            print(f"distill gate: {key} serves no route any more: removed from {weights}", file=sys.stderr)
            continue
        card = {**cards[key], "routes": [{"dims": d, "modality": m} for d, m in sorted(routes)]}
        (weights / key / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        print(f"distill gate: {key} keeps {sorted(routes)}", file=sys.stderr)


def trained_on(sources: Iterable[str]) -> set[str]:
    """The source tags a student has seen: its training sources, and the slices cut from their
    validation volumes (``IBSISTS-slices``: other patients of a source it trained on, not unseen)."""
    return {tag for source in sources for tag in (source, derived_source(source))}


def keep_shipped_bytes(weights: Path, shipped: Path) -> None:
    """Overwrite the run's ``weights`` with the ``shipped`` file when both hold the same weights
    (``same_weights``): a rerun of a finished carry then ships the very bytes, and the sha256, that
    the specialists trained over this student name in their cards, not a copy differing in an
    unused buffer."""
    if shipped.is_file() and shipped.resolve() != weights.resolve() and same_weights(weights, shipped):
        shutil.copyfile(shipped, weights)


def gate_student(
    key: str,
    weights: Path,
    val_cases: list[Path],
    data: Path,
    args: argparse.Namespace,
    training: dict,
    run: str,
) -> None:
    """Export the student, run the gate on every route (dims, modality) no specialist serves,
    ship it for the routes that pass. ``args.probe``: the same on every route, specialists' too,
    into ``<report>/probe/``; nothing ships (how far the student is from serving them).
    ``training``: the card's account of the run (``sources``: the sources it trained on, the
    report's *unseen* marks); ``run``: the command that judges it again, named in the report."""
    shipped = read_cards(args.weights)
    if args.gate_groups and key in shipped and not args.probe:
        msg = (f"distill gate: {key} already ships ({sorted(card_routes(shipped[key]))}); a gate of only "
               f"{args.gate_groups} would replace its routes and report with those groups' alone: gate "
               "every group (drop --gate-groups)")  # fmt: skip
        raise SystemExit(msg)
    keep_shipped_bytes(weights, args.weights / key / ENCODER_FILE)
    cards = {k: c for k, c in shipped.items() if k != key}
    taken = set() if args.probe else routes_taken(cards)
    gflops = encoder_gflops(build_architecture(f"student_{args.student}"), 256)
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
        "key": key, "kind": STUDENT_KIND, "architecture": f"student_{args.student}", "base": BASE_KEY,
        "encoder_gflops": round(gflops, 2),
        "overlays": {"image_encoder": {"file": ENCODER_FILE, "sha256": sha256_file(weights)}},
        "routes": routes,
        "licence": "Apache-2.0; distilled from LiteMedSAM's encoder (Apache-2.0) on the research-licence "
        "data named in training.sources (their terms apply to any use)",
        "training": training,
    }  # fmt: skip
    gate_dir = args.gate_dir / "probe" if args.probe else args.gate_dir
    shutil.rmtree(gate_dir / "weights", ignore_errors=True)
    write_candidate(gate_dir / "weights" / key, card, weights)
    run += derived_flag(args.derived)
    command = f"{run} --probe (every route; ships nothing)" if args.probe else f"make distill ({run} --gate)"
    results, rows = run_gate(val_names, data, gate_dir, STUDENT_RULE, models=args.models)
    report = args.report / ("probe" if args.probe else "gate")
    say = probe_verdict if args.probe else row_verdict
    cases = validation_cases(args.derived)
    write_report(results, rows, report, command, "student", trained_on(training["sources"]), say, cases=cases)
    if args.probe:
        print(f"distill probe: wrote {report}/README.md; nothing shipped", file=sys.stderr)
        return
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
    students = {
        k: (student_gflops(c), card_routes(c)) for k, c in cards.items() if c.get("kind") == STUDENT_KIND
    }
    won, remaining = arbitrate(students, key, gflops, {(r.dims, r.modality) for r in accepted})
    hand_over(args.weights, remaining, cards)
    if not won:
        print("distill gate: a cheaper student serves every route it passed; not shipped", file=sys.stderr)
        return
    card["routes"] = [{"dims": d, "modality": m} for d, m in sorted(won)]
    card["validation"] = {g: group_validation(results, g, command) for g in val_names}
    write_candidate(target, card, weights)
