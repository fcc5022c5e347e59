"""The acceptance gate of a model that replaces LiteMedSAM on whole routes (a student encoder),
and the candidate-card helpers every gate shares. (Decoder specialists are gated per source,
behind their router: ``train/source_gate.py``.)

For every trained group: write a candidate card (``build/gate/weights/<group>/``), export all
candidates through the same export stage and parity gates (``build/gate/models``), run the app
with them on the group's validation cases of ``splits/public.csv``, and score with the
challenge metrics next to the app with LiteMedSAM alone (``build/runs/app``, shared with
``make eval``). A group is accepted by SPECIALIST_RULE: its validation mean DSC gains at least
one point and its mean NSD does not drop (a student encoder: STUDENT_RULE, within half a point of
LiteMedSAM in DSC and one in NSD on the route and on every validation source of it). Accepted routes
are copied to ``weights/<group>/`` (what ``make export`` ships and routes), rejected ones are
removed from there.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.routing import source_tag
from common.reports import write_csv
from evaluation.evaluate import score_one
from evaluation.runner import DEFAULT_MODELS, DEFAULT_WORK, base_only_models, output_folder, run_missing
from modeling.checkpoint import sha256_file
from modeling.registry import BASE, BASE_KEY, CARD_NAME, WEIGHTS_DIR, get_spec
from train.groups import GROUPS, group_of

DECODER_FILE = "decoder_fp16.pt"


@dataclass(frozen=True)
class Rule:
    """When a candidate replaces the general model for a group, on validation means."""

    min_dsc_gain: float  # candidate DSC - LiteMedSAM DSC must be at least this
    min_nsd_gain: float  # candidate NSD - LiteMedSAM NSD must be at least this
    text: str
    min_cases: int = 3  # fewer validation cases on a route than this cannot tell: keep LiteMedSAM
    per_source: bool = False  # every validation source of a route must pass as well (any case count)


SPECIALIST_RULE = Rule(
    0.01, 0.0, "validation mean DSC >= LiteMedSAM's + 0.01 and mean NSD >= LiteMedSAM's, on >= 3 cases"
)
# DSC within 0.5 point: the bound a decoder specialist's router must hold on every source it never
# trained on (train/source_gate.py); a student replaces LiteMedSAM on whole routes, held-out
# sources included, so it holds it on every source. (Stops 25-26 allowed one point: Dermoscopy
# shipped at -0.57 on the held-out PH2.)
STUDENT_RULE = Rule(
    -0.005,
    -0.01,
    "validation mean DSC >= LiteMedSAM's - 0.005 (within half a point) and mean NSD >= "
    "LiteMedSAM's - 0.01, on >= 3 cases, on the route and on every validation source of it",
    per_source=True,
)


ALL = "all"  # the modality field of a group's summary row (informational, never a decision)


@dataclass(frozen=True)
class GateResult:
    """Validation means of one route (dims, modality) of a group, or of the whole group (ALL)."""

    group: str
    dims: int
    modality: str
    cases: int
    base_dsc: float
    base_nsd: float
    spec_dsc: float
    spec_nsd: float
    rule: Rule = SPECIALIST_RULE
    source: str = ALL  # ALL: the route (or group) pooled; else one validation source of the route
    dsc_interval: tuple[float, float] = (math.nan, math.nan)  # change_interval of the DSC change

    @property
    def accepted(self) -> bool:
        """This row's means pass the rule (a route row also needs min_cases; a source row may be
        small, it is judged on what it has)."""
        if self.source == ALL and self.cases < self.rule.min_cases:
            return False
        return passes_gate(self.base_dsc, self.base_nsd, self.spec_dsc, self.spec_nsd, self.rule)

    @property
    def label(self) -> str:
        if self.modality == ALL:
            return f"{self.group}: {ALL}"
        route = f"{self.group}: {self.modality} {self.dims}D"
        return route if self.source == ALL else f"{route} / {self.source}"


def decisions(results: list[GateResult], group: str) -> list[GateResult]:
    """The accepted routes of ``group``: the route row passes and, under a per-source rule, so
    does every source row of it (summary rows never decide)."""
    routes = [r for r in results if r.group == group and r.modality != ALL and r.source == ALL]

    def sources_pass(route: GateResult) -> bool:
        rows = [r for r in results if r.group == group and r.modality == route.modality and r.source != ALL]
        return not route.rule.per_source or all(r.accepted for r in rows)

    return [r for r in routes if r.accepted and sources_pass(r)]


def passes_gate(
    base_dsc: float, base_nsd: float, spec_dsc: float, spec_nsd: float, rule: Rule = SPECIALIST_RULE
) -> bool:
    """The rule on the four means. NaN anywhere fails."""
    values = (base_dsc, base_nsd, spec_dsc, spec_nsd)
    if any(math.isnan(v) for v in values):
        return False
    return spec_dsc - base_dsc >= rule.min_dsc_gain - 1e-9 and spec_nsd - base_nsd >= rule.min_nsd_gain - 1e-9


def verdict(accepted: bool) -> str:
    """The one wording of a gate's decision on a route, in logs, tables and pictures."""
    return "shipped" if accepted else "keeps LiteMedSAM"


def row_verdict(results: list[GateResult], r: GateResult) -> str:
    """What a row of ``results`` says: a route's decision, a source's pass or fail, or nothing
    (a group's summary)."""
    if r.modality == ALL:
        return "(group mean)"
    if r.source != ALL:
        return "within the rule" if r.accepted else "fails the rule"
    return verdict(r in decisions(results, r.group))


def probe_verdict(results: list[GateResult], r: GateResult) -> str:
    """:func:`row_verdict` for a gate that decides nothing (a probe): what the route would get."""
    said = row_verdict(results, r)
    return {verdict(True): "would ship", verdict(False): "would keep LiteMedSAM"}.get(said, said)


def candidate_card(
    group: str,
    decoder: Path,
    training: dict[str, Any],
    encoder: str = BASE_KEY,
    weights_dir: Path = WEIGHTS_DIR,
) -> dict[str, Any]:
    """The card of a decoder specialist for ``group`` (validation filled in by the gate), trained
    over ``encoder``'s embeddings: LiteMedSAM's, or a student encoder's of ``weights_dir``, which
    the card then names (``encoder``) and shares (its ``image_encoder`` overlay, by a path into the
    student's folder: one copy of the weights in git, one encoder IR in the export)."""
    spec_group = GROUPS[group]
    card: dict[str, Any] = {
        "key": group,
        "kind": "decoder specialist",
        "architecture": BASE.architecture,
        "base": BASE_KEY,
        "overlays": {"mask_decoder": {"file": DECODER_FILE, "sha256": sha256_file(decoder)}},
        "routes": [{"dims": spec_group.dims, "modality": m} for m in spec_group.modalities],
        "licence": (
            "Apache-2.0, fine-tuned from LiteMedSAM (Apache-2.0, bowang-lab/MedSAM); trained on the "
            "research-licence data named in training.sources (their terms apply to any use)"
        ),
        "training": training,
    }
    if encoder != BASE_KEY:
        spec = get_spec(encoder, weights_dir)
        (overlay,) = [o for o in spec.overlays if o.module == "image_encoder"]
        card["architecture"] = spec.architecture
        card["encoder"] = encoder
        card["overlays"]["image_encoder"] = {
            "file": f"../{encoder}/{overlay.path.name}",
            "sha256": overlay.sha256,
        }
    return card


def own_overlay(card: dict[str, Any]) -> dict[str, str]:
    """The one overlay a card's folder holds itself (a shared encoder's lives in its own folder)."""
    (overlay,) = [o for o in card["overlays"].values() if "/" not in o["file"]]
    return overlay


def write_candidate(folder: Path, card: dict[str, Any], weights: Path) -> None:
    """The one card writer: ``folder/card.json`` and the overlay file the card holds itself (a
    decoder specialist's or a student encoder's fp16 weights, copied from ``weights``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / own_overlay(card)["file"])
    (folder / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


# Each report row's mean DSC change comes with an interval: a paired bootstrap over the row's
# cases (cases resampled with replacement, each keeping both systems' scores), the spread that
# other cases of the same kind could give. It informs the reader (a -0.57 point change on a source
# of 12 noisy cases is not a -0.57 point change on 200); the rule alone decides.
INTERVAL_LEVEL = 0.9
INTERVAL_RESAMPLES = 2000


def change_interval(
    changes: np.ndarray, level: float = INTERVAL_LEVEL, resamples: int = INTERVAL_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """(N,) per-case changes (candidate - base; NaN skipped) -> the (low, high) central ``level``
    percentile interval of their mean over ``resamples`` bootstrap resamples of the cases, seeded
    (the same changes give the same interval); (NaN, NaN) without a case."""
    changes = changes[~np.isnan(changes)]
    if len(changes) == 0:
        return math.nan, math.nan
    picks = np.random.default_rng(seed).integers(0, len(changes), size=(resamples, len(changes)))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(changes[picks].mean(axis=1), [tail, 100 - tail])
    return float(low), float(high)


def paired_changes(rows: list[dict[str, Any]], base: str, candidate: str) -> np.ndarray:
    """(N,) per row: ``row[candidate] - row[base]``, NaN where either score is missing ('')."""
    pairs = [(r.get(base, ""), r.get(candidate, "")) for r in rows]
    return np.array([float(c) - float(b) if "" not in (b, c) else math.nan for b, c in pairs], dtype=float)


def dsc_changes(rows: list[dict[str, object]], names: list[str]) -> np.ndarray:
    """(N,) specialist DSC - base DSC of the cases of ``names`` scored by both (NaN otherwise)."""
    chosen = [r for r in rows if r["case"] in set(names)]
    return paired_changes(chosen, "base_dsc", "spec_dsc")


def group_means(rows: list[dict[str, object]], names: list[str]) -> tuple[float, float, float, float]:
    """(base DSC, base NSD, specialist DSC, specialist NSD) means over ``names`` (NaN NSD skipped)."""
    chosen = [r for r in rows if r["case"] in set(names)]

    def mean(key: str) -> float:
        vals = [float(r[key]) for r in chosen if r[key] != "" and not math.isnan(float(r[key]))]
        return float(np.mean(vals)) if vals else float("nan")

    return mean("base_dsc"), mean("base_nsd"), mean("spec_dsc"), mean("spec_nsd")


def export_candidates(weights: Path, models: Path, onnx: Path) -> None:
    cmd = [sys.executable, "-m", "export", "--weights", str(weights), "--models", str(models),
           "--build-dir", str(onnx)]  # fmt: skip
    subprocess.run(cmd, check=True)


def run_gate(
    val_names: dict[str, list[str]],
    data: Path,
    gate_dir: Path,
    rule: Rule = SPECIALIST_RULE,
    base_work: Path = DEFAULT_WORK,
    models: Path = DEFAULT_MODELS,
) -> tuple[list[GateResult], list[dict[str, object]]]:
    """Export every candidate card in ``gate_dir/weights`` (their routes say which cases they
    take), run the app with them and with LiteMedSAM alone on the validation cases of the groups
    in ``val_names`` and score both; (per-group results, per-case rows)."""
    export_candidates(gate_dir / "weights", gate_dir / "models", gate_dir / "onnx")
    names = sorted({n for g in val_names for n in val_names[g]})
    base = base_only_models(models, base_work / "models_lite_medsam")
    count, secs = run_missing("app", names, data, base_work, base)
    print(f"gate: LiteMedSAM app ran {count} cases without an output in {secs:.0f} s", file=sys.stderr)
    count, secs = run_missing("app", names, data, base_work, gate_dir / "models")
    print(
        f"gate: app with the candidates ran {count} cases without an output in {secs:.0f} s", file=sys.stderr
    )
    outputs = {
        "base": output_folder("app", base_work, base),
        "spec": output_folder("app", base_work, gate_dir / "models"),
    }
    rows = []
    for name in names:
        row = score_one(data / name, outputs, "zyx")
        rows.append({**row, "group": group_of(name)})
    return route_results(rows, val_names, rule), rows


def route_results(
    rows: list[dict[str, object]], val_names: dict[str, list[str]], rule: Rule
) -> list[GateResult]:
    """Per group: one row per modality with validation cases (the decisions: a model serves only
    the routes where it passes, so one modality of a group cannot pay for another), under a
    per-source rule followed by one row per validation source of it, then the group's summary row."""
    results = []
    for group in sorted(val_names):
        dims, names = GROUPS[group].dims, set(val_names[group])
        by_mod: dict[str, list[str]] = {}
        for r in rows:
            if r["case"] in names:
                by_mod.setdefault(str(r["modality"]), []).append(str(r["case"]))
        for mod, cases in sorted(by_mod.items()):
            spread = change_interval(dsc_changes(rows, cases))
            results.append(
                GateResult(group, dims, mod, len(cases), *group_means(rows, cases), rule, ALL, spread)
            )
            if not rule.per_source:
                continue
            by_source: dict[str, list[str]] = {}
            for case in cases:
                by_source.setdefault(source_tag(case), []).append(case)
            for source, picked in sorted(by_source.items()):
                means, spread = group_means(rows, picked), change_interval(dsc_changes(rows, picked))
                results.append(GateResult(group, dims, mod, len(picked), *means, rule, source, spread))
        everything = sorted(names)
        means, spread = group_means(rows, everything), change_interval(dsc_changes(rows, everything))
        results.append(GateResult(group, dims, ALL, len(names), *means, rule, ALL, spread))
    return results


def validation_facts(results: list[GateResult], r: GateResult) -> dict[str, Any]:
    return {
        "cases": r.cases,
        "dsc": round(r.spec_dsc, 4),
        "nsd": round(r.spec_nsd, 4),
        "baseline_dsc": round(r.base_dsc, 4),
        "baseline_nsd": round(r.base_nsd, 4),
        "verdict": row_verdict(results, r),
    }


def group_validation(results: list[GateResult], group: str, command: str) -> dict[str, Any]:
    """A card's ``validation``: the command, the rule, every route's and the group's means."""
    return {
        "command": command,
        "rule": results[0].rule.text + ", per (dims, modality) route",
        **{r.label.split(": ", 1)[1]: validation_facts(results, r) for r in results if r.group == group},
    }


def write_cases_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """A gate's per-case rows as CSV (columns: the first row's keys)."""
    write_csv(path, rows)


def interval_text(interval: tuple[float, float]) -> str:
    """``[-0.0123, +0.0045]``; a dash when there is none."""
    low, high = interval
    return "-" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"


# What a gate's validation cases are, as its report says it.
VALIDATION_CASES = "the `val` rows of `splits/public.csv` per group (split by source image / patient)"
# ... when ``--derived`` adds the 2D cases cut from the validation volumes.
DERIVED_CASES = (
    VALIDATION_CASES + ", and 2D cases cut from the validation volumes (`make derived-slices`: a few "
    "middle slices of each CT validation volume, its objects boxed tightly; their sources end in `-slices`)"
)


def validation_cases(derived: list[Path]) -> str:
    """A gate report's account of its cases: with ``--derived`` folders or without."""
    return DERIVED_CASES if derived else VALIDATION_CASES


def derived_flag(folders: list[Path]) -> str:
    """The ``--derived`` part of a gate's command line ('' without derived cases)."""
    return f" --derived {' '.join(map(str, folders))}" if folders else ""


def write_report(
    results: list[GateResult],
    rows: list[dict[str, object]],
    out: Path,
    command: str,
    what: str = "specialist",
    trained_on: set[str] | None = None,
    say: Callable[[list[GateResult], GateResult], str] = row_verdict,
    base: str = "LiteMedSAM",
    cases: str = VALIDATION_CASES,
) -> None:
    """``out/README.md`` (one table row per result; with ``trained_on``, the sources the candidate
    trained on, every other source row is marked *unseen*), ``gate_cases.csv``, ``gate.json``,
    ``gate.png``. ``say``: each row's verdict (``probe_verdict`` when nothing is decided);
    ``base``: what the candidate is measured against (the general model, or fp32); ``cases``: which
    validation cases these are, said in the report."""
    out.mkdir(parents=True, exist_ok=True)
    write_cases_csv(out / "gate_cases.csv", rows)
    reference = "the general model" if base == "LiteMedSAM" else "the reference"
    lines = [
        f"# {what.capitalize()}: validation gate",
        "",
        f"Command: `{command}`. Validation cases: {cases}. Both columns are the app (OpenVINO) with "
        f"the challenge metrics; {base} = {reference}, "
        f"{what} = the candidate. Rule: {results[0].rule.text}, "
        + (
            "decided per route (dims, modality): a group's model serves only the routes that pass."
            if base == "LiteMedSAM"
            else f"decided per route (dims, modality): only the routes that pass run {what}."
        )
        + (" *Unseen*: a source the candidate never trained on." if trained_on is not None else "")
        + f" *{INTERVAL_LEVEL:.0%} interval*: of the DSC gain, a paired bootstrap over the row's cases "
        f"({INTERVAL_RESAMPLES} resamples, seeded): how far other cases of the same kind could move it; "
        "it informs, the rule decides.",
        "",
        f"| group: route | val cases | {base} DSC | {what} DSC | gain | {INTERVAL_LEVEL:.0%} interval | "
        f"{base} NSD | {what} NSD | shipped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        decided = say(results, r)
        unseen = trained_on is not None and r.source != ALL and r.source not in trained_on
        label = f"{r.label} (*unseen*)" if unseen else r.label
        lines.append(
            f"| {label} | {r.cases} | {r.base_dsc:.4f} | {r.spec_dsc:.4f} | "
            f"{r.spec_dsc - r.base_dsc:+.4f} | {interval_text(r.dsc_interval)} | {r.base_nsd:.4f} | "
            f"{r.spec_nsd:.4f} | {decided} |"
        )
    lines += ["", "![validation DSC and NSD per group](gate.png)", ""]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    facts = [{**asdict(r), "rule": r.rule.text, "verdict": say(results, r)} for r in results]
    (out / "gate.json").write_text(json.dumps(facts, indent=2) + "\n")
    plot_gate(results, out / "gate.png", what, say, base)


def plot_gate(
    results: list[GateResult],
    path: Path,
    what: str,
    say: Callable[[list[GateResult], GateResult], str] = row_verdict,
    base_label: str = "LiteMedSAM",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.modality != ALL]  # routes and their sources
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(shown)), 7))
    x = np.arange(len(shown))
    for ax, metric in zip(axes, ("dsc", "nsd"), strict=True):
        base = [getattr(r, f"base_{metric}") for r in shown]
        spec = [getattr(r, f"spec_{metric}") for r in shown]
        ax.bar(x - 0.2, base, 0.4, label=base_label)
        ax.bar(x + 0.2, spec, 0.4, label=what)
        ticks = [
            f"{r.modality} {r.dims}D\n{r.group if r.source == ALL else r.source}\n{say(results, r)}"
            for r in shown
        ]
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set(ylim=(0, 1), ylabel=f"validation mean {metric.upper()}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
