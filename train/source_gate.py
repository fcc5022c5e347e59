"""The specialists' gate, per route and per source: never worse than LiteMedSAM on a source the
specialist did not train on.

Three systems run through the real app on the validation cases of each group
(``splits/public.csv``, both corpora): LiteMedSAM alone (``base``), the specialist serving every
box of its routes (``alone``) and the product, the specialist behind its router (``routed``:
boxes the router finds unlike the training data go to LiteMedSAM). Every validation source of a
route is either *in-source* (the group trained on other cases of it) or *unseen*. A route ships
(SOURCE_RULE) when, with the router:
- in-source validation (pooled, >= 3 cases) gains >= 1 DSC point and loses no NSD, and
- on every unseen source the DSC is at most 0.5 point below LiteMedSAM's.
The router's acceptance (boxes it gave the specialist) is counted per source with the app's own
feature code, so the report shows how much of in-source data it keeps and of unseen data it
turns away.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.novelty import Reference, load_reference
from app.routing import source_tag
from evaluation.evaluate import score_one
from evaluation.runner import (
    DEFAULT_MODELS,
    DEFAULT_WORK,
    base_only_models,
    output_folder,
    run_missing,
    without_routers,
)
from modeling.registry import BASE_KEY, CARD_NAME, WEIGHTS_DIR
from train.distill.gate import STUDENT_KIND, card_routes, read_cards
from train.gate import (
    DECODER_FILE,
    INTERVAL_LEVEL,
    STUDENT_RULE,
    change_interval,
    export_candidates,
    paired_changes,
    write_candidate,
    write_cases_csv,
)
from train.groups import GROUPS, group_of

SYSTEMS = ("base", "alone", "routed")
SYSTEM_NAMES = {"base": "LiteMedSAM", "alone": "specialist alone", "routed": "specialist + router"}
ROUTER_FILE = "router.npz"


@dataclass(frozen=True)
class SourceRule:
    min_in_source_gain: float = 0.01
    max_unseen_loss: float = 0.005
    min_in_source_cases: int = 3
    text: str = (
        "with its router, in-source validation (>= 3 cases) gains >= 1 DSC point and keeps NSD, and "
        "every unseen source's DSC is >= LiteMedSAM's - 0.5 point"
    )


SOURCE_RULE = SourceRule()


@dataclass(frozen=True)
class SourceResult:
    """Validation means of one (group, route, source)."""

    group: str
    dims: int
    modality: str
    source: str
    seen: bool  # the group trained on other cases of this source
    cases: int
    means: dict[str, float]  # "<system>_<dsc|nsd>"
    accepted: int  # boxes the router gave the specialist
    boxes: int


@dataclass(frozen=True)
class RouteVerdict:
    group: str
    dims: int
    modality: str
    accepted: bool
    reason: str
    in_source: dict[str, float]  # pooled means over the in-source cases
    in_cases: int


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key, "") != "" and not math.isnan(float(r[key]))]
    return float(np.mean(vals)) if vals else float("nan")


def routed_change_text(rows: list[dict[str, Any]]) -> str:
    """The routed - LiteMedSAM DSC change in points with its paired-bootstrap interval
    (``train/gate.py: change_interval``), e.g. "+1.5 [+0.4, +2.6]"."""
    changes = paired_changes(rows, "base_dsc", "routed_dsc")  # (N,) the product - LiteMedSAM
    if np.isnan(changes).all():
        return "-"
    low, high = change_interval(changes)
    return f"{np.nanmean(changes) * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def system_means(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {f"{s}_{m}": _mean(rows, f"{s}_{m}") for s in SYSTEMS for m in ("dsc", "nsd")}


def route_of(row: dict[str, Any]) -> tuple[str, int, str]:
    """A case row's (group, dims, modality)."""
    return row["group"], int(row["dims_n"]), row["modality"]


def source_results(rows: list[dict[str, Any]]) -> list[SourceResult]:
    """Per (group, dims, modality, source) of the scored case rows."""
    keys = sorted({(*route_of(r), r["source"]) for r in rows})
    out = []
    for group, dims, mod, source in keys:
        sub = [r for r in rows if (*route_of(r), r["source"]) == (group, dims, mod, source)]
        out.append(SourceResult(
            group, dims, mod, source, bool(sub[0]["seen"]), len(sub), system_means(sub),
            sum(int(r["accepted"]) for r in sub), sum(int(r["boxes"]) for r in sub),
        ))  # fmt: skip
    return out


def route_verdicts(rows: list[dict[str, Any]], rule: SourceRule = SOURCE_RULE) -> list[RouteVerdict]:
    """One verdict per (group, dims, modality) with validation rows."""
    out = []
    for group, dims, mod in sorted({route_of(r) for r in rows}):
        sub = [r for r in rows if route_of(r) == (group, dims, mod)]
        seen = [r for r in sub if r["seen"]]
        m = system_means(seen)
        losses = [
            (s.source, s.means["routed_dsc"] - s.means["base_dsc"])
            for s in source_results([r for r in sub if not r["seen"]])
        ]
        bad = [f"{src} {d * 100:+.1f}" for src, d in losses if not d >= -rule.max_unseen_loss - 1e-9]
        gain = m["routed_dsc"] - m["base_dsc"]
        if len(seen) < rule.min_in_source_cases:
            ok, why = False, f"{len(seen)} in-source validation cases (< {rule.min_in_source_cases})"
        elif not (gain >= rule.min_in_source_gain - 1e-9 and m["routed_nsd"] >= m["base_nsd"]):
            ok, why = (
                False,
                f"in-source DSC {gain * 100:+.1f} points, NSD {(m['routed_nsd'] - m['base_nsd']) * 100:+.1f}",
            )
        elif bad:
            ok, why = False, f"loses on unseen sources: {', '.join(bad)} DSC points"
        else:
            unseen = (
                f"; unseen sources {', '.join(f'{s} {d * 100:+.1f}' for s, d in losses)}"
                if losses
                else "; no unseen source to test"
            )
            ok, why = True, f"in-source DSC {gain * 100:+.1f} points{unseen}"
        out.append(RouteVerdict(group, dims, mod, ok, why, m, len(seen)))
    return out


def case_rows(
    names: list[str],
    data: Path,
    outputs: dict[str, Path],
    train_sources: dict[str, set[str]],
    acceptance_of: Callable[[str, str], tuple[int, int]],
) -> list[dict[str, Any]]:
    """Scored rows for the validation cases: metrics of every system, group, source, whether the
    group trained on the source, and the router's (accepted, boxes) for the case."""
    rows = []
    for name in names:
        group = group_of(name)
        row = score_one(data / name, outputs, "zyx")
        accepted, boxes = acceptance_of(group, name)
        rows.append({
            **row, "group": group, "dims_n": GROUPS[group].dims, "source": source_tag(name),
            "seen": source_tag(name) in train_sources[group], "accepted": accepted, "boxes": boxes,
        })  # fmt: skip
    return rows


def run_source_gate(
    val_names: dict[str, list[str]],
    train_sources: dict[str, set[str]],
    data: Path,
    gate_dir: Path,
    acceptance_of: Callable[[str, str], tuple[int, int]],
    base_work: Path = DEFAULT_WORK,
    models: Path = DEFAULT_MODELS,
) -> list[dict[str, Any]]:
    """Export the candidates in ``gate_dir/weights``, run the three systems on the validation
    cases and score them: the case rows.

    The product's output of a case whose boxes the router decides unanimously is, bit for bit,
    another system's (every box rejected: LiteMedSAM's; every box accepted: the specialist
    alone's; same IR, same embedding, same decoder per box), so it is copied from there and
    only the cases with mixed decisions run the product (the app's decisions use the same
    feature code as ``acceptance_of``)."""
    export_candidates(gate_dir / "weights", gate_dir / "models", gate_dir / "onnx")
    names = sorted({n for g in val_names for n in val_names[g]})
    systems = {
        "base": base_only_models(models, base_work / "models_lite_medsam"),
        "alone": without_routers(gate_dir / "models", gate_dir / "models_alone"),
        "routed": gate_dir / "models",
    }
    outputs = {s: output_folder("app", base_work, f) for s, f in systems.items()}
    for system in ("base", "alone"):
        count, secs = run_missing("app", names, data, base_work, systems[system])
        print(f"gate: {SYSTEM_NAMES[system]}: ran {count} cases without an output in {secs:.0f} s")
    mixed = []
    outputs["routed"].mkdir(parents=True, exist_ok=True)
    for name in names:
        accepted, boxes = acceptance_of(group_of(name), name)
        same_as = "base" if accepted == 0 else ("alone" if accepted == boxes else None)
        if same_as is None:
            mixed.append(name)
        elif not (outputs["routed"] / name).is_file():
            shutil.copyfile(outputs[same_as] / name, outputs["routed"] / name)
    count, secs = run_missing("app", mixed, data, base_work, systems["routed"])
    print(f"gate: specialist + router: {len(names) - len(mixed)} cases decided unanimously (copied), "
          f"ran {count} with mixed decisions in {secs:.0f} s")  # fmt: skip
    return case_rows(names, data, outputs, train_sources, acceptance_of)


def router_acceptance(references: dict[str, Reference], features_of: Callable[[str], np.ndarray]):
    """(group, case name) -> (accepted, boxes) by the group's reference."""

    def acceptance_of(group: str, name: str) -> tuple[int, int]:
        feats = features_of(name)
        if group not in references or len(feats) == 0:
            return 0, len(feats)
        ref = references[group]
        return int((ref.novelty(feats) <= ref.threshold).sum()), len(feats)

    return acceptance_of


def load_references(weights: Path) -> dict[str, Reference]:
    return {p.parent.name: load_reference(p) for p in sorted(weights.glob(f"*/{ROUTER_FILE}"))}


def route_gain(rows: list[dict[str, Any]], group: str, dims: int, mod: str) -> float:
    """The product's DSC gain over LiteMedSAM on every validation case of one route."""
    sub = [r for r in rows if route_of(r) == (group, dims, mod)]
    m = system_means(sub)
    return m["routed_dsc"] - m["base_dsc"]


def gate_facts(card: dict) -> dict[str, dict]:
    """A student card's gate figures by label ("CT 3D", "CT 3D / IBSISTS", ...)."""
    groups = card.get("validation", {}).values()
    return {label: f for v in groups for label, f in v.items() if isinstance(f, dict)}


def student_routes(cards: dict[str, dict]) -> dict[tuple[int, str], tuple[str, dict[str, dict]]]:
    """(dims, modality) -> (student key, its gate figures by label) for every route a shipped
    student encoder serves."""
    return {
        route: (key, gate_facts(card))
        for key, card in cards.items()
        if card.get("kind") == STUDENT_KIND
        for route in card_routes(card)
    }


def student_gains(cards: dict[str, dict]) -> dict[tuple[int, str], tuple[str, float]]:
    """(dims, modality) -> (student key, its validation DSC gain over LiteMedSAM) for every route
    a shipped student encoder serves (its gate's route-wide means, on the same validation cases)."""
    out = {}
    for (dims, mod), (key, facts) in student_routes(cards).items():
        f = facts.get(f"{mod} {dims}D", {})
        out[(dims, mod)] = (key, float(f["dsc"]) - float(f["baseline_dsc"]) if f else float("inf"))
    return out


def contest_students(
    verdicts: list[RouteVerdict], rows: list[dict[str, Any]], cards: dict[str, dict]
) -> tuple[list[RouteVerdict], dict[str, set[tuple[int, str]]]]:
    """A route a decoder specialist passed that a student encoder already serves goes to the one
    with the larger validation DSC gain over LiteMedSAM (the same cases; a tie stays with the
    faster student). Returns the verdicts (the routes lost to a student turned down) and each
    student's remaining routes."""
    held = student_gains(cards)
    remaining = {k: card_routes(c) for k, c in cards.items() if c.get("kind") == STUDENT_KIND}
    out = []
    for v in verdicts:
        route = (v.dims, v.modality)
        if not v.accepted or route not in held:
            out.append(v)
            continue
        student, theirs = held[route]
        ours = route_gain(rows, v.group, v.dims, v.modality)
        if ours > theirs:
            remaining[student] = remaining[student] - {route}
            out.append(replace(v, reason=f"{v.reason}; takes the route from {student} (DSC gain "
                                         f"{ours * 100:+.1f} vs {theirs * 100:+.1f} points)"))  # fmt: skip
        else:
            out.append(replace(v, accepted=False, reason=f"{v.reason}, but {student} serves the route with "
                                                         f"a DSC gain of {theirs * 100:+.1f} points "
                                                         f"(this: {ours * 100:+.1f})"))  # fmt: skip
    return out, remaining


def _route_rows(rows: list[dict[str, Any]], group: str, dims: int, mod: str) -> list[dict[str, Any]]:
    return [r for r in rows if route_of(r) == (group, dims, mod)]


def _routed_delta(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(DSC, NSD) of the product with ``ours`` less with ``theirs`` on ``ours``' cases (None:
    ``theirs`` lacks some of them)."""
    names = {r["case"] for r in ours}
    prev = [r for r in theirs if r["case"] in names]
    if len(prev) != len(ours):
        return None
    new, old = system_means(ours), system_means(prev)
    return new["routed_dsc"] - old["routed_dsc"], new["routed_nsd"] - old["routed_nsd"]


def _shortfalls(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Where the product with ``ours`` falls short of the student rule against ``theirs``: the
    route, then each source."""
    parts = [("route", ours)] + [
        (s, [r for r in ours if r["source"] == s]) for s in sorted({r["source"] for r in ours})
    ]
    out = []
    for label, sub in parts:
        delta = _routed_delta(sub, theirs)
        if delta is None:
            out.append(f"{label}: no earlier rows of the shipped specialist")
        elif delta[0] < STUDENT_RULE.min_dsc_gain or delta[1] < STUDENT_RULE.min_nsd_gain:
            out.append(f"{label}: DSC {delta[0] * 100:+.1f}, NSD {delta[1] * 100:+.1f} points")
    return out


def contest_shipped(
    verdicts: list[RouteVerdict],
    rows: list[dict[str, Any]],
    shipped_rows: list[dict[str, Any]],
    cards: dict[str, dict],
    encoder: str,
) -> tuple[list[RouteVerdict], set[str]]:
    """A candidate over ``encoder`` replaces its group's shipped specialist trained over another
    encoder (LiteMedSAM's, or another student's) only where the product with it holds the
    student rule against the product with the shipped one (``shipped_rows``: its earlier gate
    rows, the same validation cases): mean DSC within half a point and NSD within one point or
    above, on the route and on every source. Returns the verdicts (a route lost turned down) and
    the groups whose shipped specialist stays untouched."""
    keep: set[str] = set()
    out = []
    for v in verdicts:
        card = cards.get(v.group)
        previous = None if card is None else card.get("encoder", BASE_KEY)
        if not v.accepted or previous in (None, encoder):
            out.append(v)
            continue
        ours = _route_rows(rows, v.group, v.dims, v.modality)
        shortfalls = _shortfalls(ours, _route_rows(shipped_rows, v.group, v.dims, v.modality))
        if shortfalls:
            keep.add(v.group)
            why = f"{v.reason}, but the shipped specialist over {previous} keeps it ({'; '.join(shortfalls)})"
            out.append(replace(v, accepted=False, reason=why))
            continue
        dsc, nsd = _routed_delta(ours, shipped_rows) or (math.nan, math.nan)
        gain = f"DSC {dsc * 100:+.1f}, NSD {nsd * 100:+.1f} points"
        why = f"{v.reason}; replaces the one over {previous} ({gain})"
        out.append(replace(v, reason=why))
    return out, keep


def reported_verdicts(
    everything: list[RouteVerdict], this_run: list[RouteVerdict], keep: set[str] | frozenset[str]
) -> list[RouteVerdict]:
    """The report's verdicts: ``everything`` (from the report's rows) with this run's in place of
    its groups' (their contests' reasons), except for the groups in ``keep``, whose shipped
    specialist stays and is reported from its own rows, with the lost contest added to the
    reason."""
    ours = {(v.group, v.dims, v.modality): v for v in this_run}
    out = []
    for v in everything:
        mine = ours.get((v.group, v.dims, v.modality))
        if mine is None:
            out.append(v)
        elif v.group in keep:
            out.append(replace(v, reason=f"{v.reason}; kept against this run's candidate: {mine.reason}"))
        else:
            out.append(mine)
    return out


def settle_routes(
    verdicts: list[RouteVerdict],
    rows: list[dict[str, Any]],
    candidates: Path,
    weights: Path,
    command: str,
    keep: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Ship each gated group's candidate (decoder + router) into ``weights`` with the routes it
    passed and the per-source validation facts; a group that passed no route is removed, except
    those in ``keep`` (their shipped specialist won :func:`contest_shipped`: left as it is)."""
    for group in sorted({v.group for v in verdicts} - set(keep)):
        target = weights / group
        shutil.rmtree(target, ignore_errors=True)
        passed = [v for v in verdicts if v.group == group and v.accepted]
        if not passed:
            continue
        card = json.loads((candidates / group / CARD_NAME).read_text())
        card["routes"] = [{"dims": v.dims, "modality": v.modality} for v in passed]
        card["validation"] = validation_facts(verdicts, source_results(rows), group, command)
        write_candidate(target, card, candidates / group / DECODER_FILE)
        shutil.copyfile(candidates / group / ROUTER_FILE, target / ROUTER_FILE)


def drop_retired(weights: Path) -> list[str]:
    """Remove shipped decoder specialists whose group no longer exists in GROUPS (e.g. the shared
    3D model that per-modality 3D groups replaced); their keys."""
    gone = []
    for card_path in sorted(weights.glob(f"*/{CARD_NAME}")):
        card = json.loads(card_path.read_text())
        if card.get("kind") == "decoder specialist" and card_path.parent.name not in GROUPS:
            shutil.rmtree(card_path.parent)
            gone.append(card_path.parent.name)
    return gone


def validation_facts(
    verdicts: list[RouteVerdict], sources: list[SourceResult], group: str, command: str
) -> dict[str, Any]:
    """A card's ``validation``: the rule, per route its verdict and per source its means."""

    def rounded(means: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 4) for k, v in means.items()}

    return {
        "command": command,
        "rule": SOURCE_RULE.text,
        **{
            f"{v.modality} {v.dims}D": {
                "accepted": v.accepted,
                "reason": v.reason,
                "in_source_cases": v.in_cases,
                "in_source": rounded(v.in_source),
                "sources": {
                    s.source: {
                        "seen": s.seen,
                        "cases": s.cases,
                        "router_accepted": f"{s.accepted}/{s.boxes}",
                        **rounded(s.means),
                    }  # fmt: skip
                    for s in sources
                    if (s.group, s.dims, s.modality) == (v.group, v.dims, v.modality)
                },
            }
            for v in verdicts
            if v.group == group
        },
    }


def write_source_report(
    rows: list[dict[str, Any]],
    verdicts: list[RouteVerdict],
    out: Path,
    command: str,
    gated: list[str] | None = None,
) -> None:
    """``out/README.md`` (per route and per source), ``gate_cases.csv``, ``gate.json``, ``sources.png``."""
    out.mkdir(parents=True, exist_ok=True)
    write_cases_csv(out / "gate_cases.csv", rows)
    sources = source_results(rows)
    kept_note = kept_groups_note(rows, gated)
    lines = [
        "# Specialists: validation gate, per route and per source",
        "",
        f"Command: `{command}`. Validation: the `val` rows of `splits/public.csv` "
        "(`../shared/data/public` and `public2`), split by source image / patient, with whole "
        "sources held out. All three systems are the app (OpenVINO) with the challenge metrics: "
        "LiteMedSAM = the general model; alone = the specialist on every box of its route; "
        "routed = the product, the specialist behind its router (boxes unlike its training data "
        f"go to LiteMedSAM). Rule: {SOURCE_RULE.text}. Decided per route (dims, modality).",
        "",
        "Routed outputs of cases whose boxes the router decided unanimously are copied from the "
        "LiteMedSAM or the specialist-alone run (identical by construction); cases with mixed "
        "decisions run the product itself.",
        "",
        "The router's threshold is set on the training cases (out-of-fold), never on these; but the "
        "decoders were trained for a fixed number of steps and the same validation cases decide "
        "whether a route ships and are reported here, which flatters small in-source gains.",
        "",
        *kept_note,
        "## Routes",
        "",
        "| group: route | shipped | why | in-source cases | LiteMedSAM DSC | alone DSC | routed DSC | "
        f"routed - LiteMedSAM, DSC points [{INTERVAL_LEVEL:.0%} interval] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        m = v.in_source
        seen = [r for r in rows if route_of(r) == (v.group, v.dims, v.modality) and r["seen"]]
        lines.append(
            f"| {v.group}: {v.modality} {v.dims}D | {'yes' if v.accepted else 'no'} | {v.reason} | "
            f"{v.in_cases} | {m['base_dsc']:.4f} | {m['alone_dsc']:.4f} | {m['routed_dsc']:.4f} | "
            f"{routed_change_text(seen)} |"
        )
    lines += [
        "",
        "## Per source (seen = the group trained on other cases of the source)",
        "",
        "| group: route | source | seen | cases | router took (boxes) | DSC LiteMedSAM | DSC alone | "
        "DSC routed | routed - LiteMedSAM, DSC points [interval] | NSD LiteMedSAM | NSD alone | NSD routed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sources:
        m = s.means
        took = f"{s.accepted}/{s.boxes} ({100 * s.accepted / max(1, s.boxes):.0f}%)"
        cases = [r for r in rows if (*route_of(r), r["source"]) == (s.group, s.dims, s.modality, s.source)]
        lines.append(
            f"| {s.group}: {s.modality} {s.dims}D | {s.source} | {'yes' if s.seen else 'no'} | {s.cases} | "
            f"{took} | {m['base_dsc']:.4f} | {m['alone_dsc']:.4f} | {m['routed_dsc']:.4f} | "
            f"{routed_change_text(cases)} | "
            f"{m['base_nsd']:.4f} | {m['alone_nsd']:.4f} | {m['routed_nsd']:.4f} |"
        )
    lines += ["", "![validation DSC per source](sources.png)", ""]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    facts = {"command": command, "gated": gated, "routes": [asdict(v) for v in verdicts]}
    (out / "gate.json").write_text(json.dumps(facts, indent=2) + "\n")
    plot_sources(sources, out / "sources.png")


def rewrite_source_report(out: Path) -> None:
    """``out/README.md``, ``gate.json`` and ``sources.png`` again from the gate run's own
    ``gate_cases.csv`` and ``gate.json`` (its verdicts, command and gated groups): a report-format
    change reaches an existing report without rerunning the gate."""
    facts = json.loads((out / "gate.json").read_text())
    verdicts = [RouteVerdict(**v) for v in facts["routes"]]
    rows = read_case_rows(out / "gate_cases.csv")
    write_source_report(rows, verdicts, out, facts["command"], facts["gated"])


def plot_sources(sources: list[SourceResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(sources))
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(sources)), 4.5))
    for offset, system in zip((-0.27, 0.0, 0.27), SYSTEMS, strict=True):
        ax.bar(x + offset, [s.means[f"{system}_dsc"] for s in sources], 0.27, label=SYSTEM_NAMES[system])
    ticks = [f"{s.modality} {s.dims}D\n{s.source}\n{'seen' if s.seen else 'UNSEEN'}" for s in sources]
    ax.set_xticks(x, ticks, fontsize=6)
    ax.set(
        ylim=(0, 1), ylabel="validation mean DSC", title="Specialists per source: LiteMedSAM, alone, routed"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def kept_groups_note(rows: list[dict[str, Any]], gated: list[str] | None) -> list[str]:
    """Report lines naming the groups whose rows came from an earlier gate run (none: [])."""
    earlier = sorted({r["group"] for r in rows} - set(gated or [])) if gated else []
    if not earlier:
        return []
    return [
        f"Groups gated by this command: {', '.join(sorted(gated))}; the cases of {', '.join(earlier)} "
        "are kept from the earlier gate run (their verdicts stand).",
        "",
    ]


def with_earlier_rows(rows: list[dict[str, Any]], previous: Path) -> list[dict[str, Any]]:
    """``rows`` plus the rows of ``previous`` (an earlier ``gate_cases.csv``) whose group this
    run did not gate: gating some groups keeps the others' measured cases in the report."""
    if not previous.is_file():
        return rows
    gated = {r["group"] for r in rows}
    return [r for r in read_case_rows(previous) if r["group"] not in gated] + rows


def read_case_rows(path: Path) -> list[dict[str, Any]]:
    """``gate_cases.csv`` back into case rows (types restored)."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["seen"] = r["seen"] == "True"
        r["dims_n"], r["accepted"], r["boxes"] = int(r["dims_n"]), int(r["accepted"]), int(r["boxes"])
    return rows


def student_sources(cards: dict[str, dict]) -> dict[tuple[int, str], tuple[str, dict[str, dict]]]:
    """(dims, modality) -> (student key, source -> its gate's facts) for each route a student serves."""
    out = {}
    for (dims, mod), (key, facts) in student_routes(cards).items():
        prefix = f"{mod} {dims}D / "
        out[(dims, mod)] = (key, {k[len(prefix) :]: f for k, f in facts.items() if k.startswith(prefix)})
    return out


def shipped_table(rows: list[dict[str, Any]], cards: dict[str, dict] | None = None) -> list[str]:
    """Markdown: per source of every route, LiteMedSAM, the specialist alone, the specialist with
    its router, and the product (routed where the route ships; the student encoder's gate figures
    where a student serves the route (``cards``: the shipped models' cards); else LiteMedSAM),
    with the router's acceptance; shipped routes first."""
    verdicts = {(v.group, v.dims, v.modality): v for v in route_verdicts(rows)}
    students = student_sources(cards or {})
    lines = [
        "| route | shipped | source | seen in training | cases | router took | DSC LiteMedSAM | "
        "DSC alone | DSC routed | DSC product | NSD LiteMedSAM | NSD product |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def order(s: SourceResult) -> tuple:
        return (not verdicts[(s.group, s.dims, s.modality)].accepted, s.modality, not s.seen, s.source)

    for s in sorted(source_results(rows), key=order):
        v, m = verdicts[(s.group, s.dims, s.modality)], s.means
        product = "routed" if v.accepted else "base"  # a route that does not ship serves LiteMedSAM
        dsc, nsd, shipped = m[f"{product}_dsc"], m[f"{product}_nsd"], "yes" if v.accepted else "no"
        student, by_source = students.get((s.dims, s.modality), (None, {}))
        if not v.accepted and student is not None and s.source in by_source:
            dsc, nsd = float(by_source[s.source]["dsc"]), float(by_source[s.source]["nsd"])
            shipped = f"no: {student} serves it"
        lines.append(
            f"| {s.modality} {s.dims}D | {shipped} | {s.source} | "
            f"{'yes' if s.seen else 'no'} | {s.cases} | {s.accepted}/{s.boxes} | {m['base_dsc']:.3f} | "
            f"{m['alone_dsc']:.3f} | {m['routed_dsc']:.3f} | {dsc:.3f} | "
            f"{m['base_nsd']:.3f} | {nsd:.3f} |"
        )
    return lines


def update_readme(readme: Path, report: Path, cards: dict[str, dict] | None = None) -> None:
    """Replace the table between the specialists-table markers with :func:`shipped_table`."""
    start, end = "<!-- specialists-table:start -->\n", "\n<!-- specialists-table:end -->"
    text = readme.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    table = "\n".join(shipped_table(read_case_rows(report / "gate_cases.csv"), cards))
    readme.write_text(head + start + table + end + tail)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m train.source_gate",
        description="README's per-source table from reports/specialists/gate_cases.csv; "
        "--rewrite-report: the gate report itself again from its gate_cases.csv and gate.json",
    )
    parser.add_argument("--report", type=Path, default=Path("reports/specialists"))
    parser.add_argument("--rewrite-report", action="store_true")
    args = parser.parse_args(argv)
    if args.rewrite_report:
        rewrite_source_report(args.report)
    update_readme(Path("README.md"), args.report, read_cards(WEIGHTS_DIR))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
