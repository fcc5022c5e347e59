"""``make bench-screen``, ``make bench-decoder-batch``, ``make bench-decoder-window``, ``make
bench-encoder-snippets``: one speed lever, on and off, per case.

For each case set of a lever (``LEVERS``), ``make bench``'s protocol (``evaluation/bench.py``:
one fresh process per case, app and baseline alternating) runs twice: the shipped product (the
lever on), and the product with the lever off (other models, ``Lever.off_models``, or another
setting of the app, ``Lever.off_env``). Each run is a bench report of its own under the
lever's folder; its README sets their rows side by side. The two runs of a set are minutes
apart on a shared machine: compare their ratios to the baseline, each measured side by side.

A lever worth a few percent drowns in that machine's noise, so the README also times the app
alone, lever on and off alternating case by case for ``--rounds`` rounds (one fresh process per
case, each variant on its own warm cache): the median of each case's on/off seconds.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.machine import describe
from common.paths import MODELS
from common.process import timed_process
from common.reports import write_report
from evaluation.datasets import DATA_ROOTS
from evaluation.runner import without_screens


@dataclass(frozen=True)
class CaseSet:
    label: str
    data: Path
    group: str  # a bench group (evaluation/bench.py group_of), e.g. "US 2D"
    per_group: int
    what: str


@dataclass(frozen=True)
class Lever:
    title: str
    out: Path  # the lever's report folder
    on: str  # the shipped product's label
    off: str  # the label of the product without the lever
    off_what: str  # what "off" is, for the README
    case_sets: tuple[CaseSet, ...]
    off_env: dict[str, str] = field(default_factory=dict)  # the app's environment, lever off
    # (shipped models, work folder) -> the models without the lever (None: the shipped ones)
    off_models: Callable[[Path, Path], Path] | None = None


# The many-box images both decoder levers act on (the decoder's share of a case grows with its boxes).
MANY_BOX_SETS = (
    CaseSet(
        "microscopy",
        DATA_ROOTS["public"],
        "Microscopy 2D",
        5,
        "Microscopy, 92-132 boxes an image (the first 5 of ../shared/data/public)",
    ),
    CaseSet(
        "axondeepseg",
        DATA_ROOTS["public2"],
        "Microscopy 2D",
        3,
        "AxonDeepSegSEM, 346-1265 boxes an image (a source no model was tuned on)",
    ),
)

LEVERS: dict[str, Lever] = {
    "screen": Lever(
        "The image screen and per-case speed",
        Path("reports/bench/screen"),
        "screen",
        "no screen",
        "the same models without their image screens (every image goes to the specialist's router: "
        "the product before the screen)",
        (
            CaseSet(
                "busi",
                DATA_ROOTS["public2"],
                "US 2D",
                15,
                "BUSI (breast US): a source the US specialist never saw",
            ),
            CaseSet(
                "hc18",
                DATA_ROOTS["public"],
                "US 2D",
                5,
                "HC18 (fetal head US): the US specialist's own source",
            ),
        ),
        off_models=lambda models, work: without_screens(models, work / "models_no_screen"),
    ),
    "decoder-batch": Lever(
        "Decoder batches and per-case speed",
        Path("reports/bench/decoder_batch"),
        "batched",
        "one box per call",
        "the same models with `SEG_DECODER_BATCH=1` (every box a decoder call of its own: the product "
        "before decoder batches)",
        MANY_BOX_SETS,
        off_env={"SEG_DECODER_BATCH": "1"},
    ),
    "encoder-snippets": Lever(
        "Encoders compiled without snippets and per-case speed",
        Path("reports/bench/encoder_snippets"),
        "without snippets",
        "with snippets",
        "the same models with `SEG_ENCODER_SNIPPETS=1` (encoders compiled with the CPU plugin's "
        "snippets: the product before stop 42)",
        tuple(
            CaseSet(
                group.lower().replace(" ", "_"), DATA_ROOTS["public"], group, 3, f"{group}, the first 3 cases"
            )
            for group in ("CT 2D", "Dermoscopy 2D", "Microscopy 2D", "XRay 2D", "CT 3D")
        ),
        off_env={"SEG_ENCODER_SNIPPETS": "1"},
    ),
    "decoder-window": Lever(
        "Decoder windows and per-case speed",
        Path("reports/bench/decoder_window"),
        "windows",
        "whole",
        "the same models with `SEG_DECODER_WINDOW=0` (every box's logits upscaled on the whole frame: "
        "the product before decoder windows, batches kept)",
        MANY_BOX_SETS,
        off_env={"SEG_DECODER_WINDOW": "0"},
    ),
}


def slug(label: str) -> str:
    return label.replace(" ", "_")


def ratio_row(case_set: CaseSet, variant: str, runs_csv: Path) -> str:
    """One Markdown row from a bench run's ``runs.csv``: app and baseline medians, speed-up."""
    with runs_csv.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["ok"] == "True"]
    by_case: dict[str, dict[str, dict[str, str]]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["system"]] = r
    pairs = [v for v in by_case.values() if len(v) == 2]
    ratios = [float(p["baseline"]["seconds"]) / float(p["app"]["seconds"]) for p in pairs]
    app_s = statistics.median(float(p["app"]["seconds"]) for p in pairs)
    base_s = statistics.median(float(p["baseline"]["seconds"]) for p in pairs)
    rss = statistics.median(float(p["app"]["rss_mb"]) for p in pairs)
    return (
        f"| {case_set.what} | {variant} | {len(pairs)} | {app_s:.2f} | {base_s:.2f} | "
        f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] | {rss:.0f} |"
    )


def bench_command(case_set: CaseSet, models: Path, out: Path) -> list[str]:
    """``evaluation.bench`` on ``case_set`` with ``models``, its report at ``out``."""
    return [
        sys.executable, "-m", "evaluation.bench", "--data", str(case_set.data), "--groups", case_set.group,
        "--per-group", str(case_set.per_group), "--no-large", "--models", str(models), "--out", str(out),
    ]  # fmt: skip


Variants = dict[str, tuple[Path, dict[str, str]]]  # label -> (models, the app's extra environment)


def paired_app_seconds(
    case_set: CaseSet, variants: Variants, rounds: int, work: Path
) -> dict[str, dict[str, list[float]]]:
    """case name -> variant -> the app's seconds in each round, the variants alternating case by
    case (one fresh process per case, as ``make bench``; each variant on a cache it warmed)."""
    from evaluation.bench import run_case, sample_cases

    envs = {}
    for variant, (models, env) in variants.items():
        envs[variant] = {**os.environ, **env, "SEG_CACHE_DIR": str(work / slug(variant) / "ov_cache")}
        timed_process([sys.executable, "-m", "app", "--warmup", "--models", str(models)], envs[variant])
    seconds: dict[str, dict[str, list[float]]] = {}
    for case in sample_cases(case_set.data, case_set.per_group, [case_set.group]):
        for _ in range(rounds):
            for variant, (models, _) in variants.items():
                secs, _, ok = run_case(
                    case, "app", work / slug(variant), envs[variant], ("--models", str(models))
                )
                if ok:
                    seconds.setdefault(case.name, {}).setdefault(variant, []).append(secs)
    return seconds


def paired_rows(case_set: CaseSet, lever: Lever, seconds: dict[str, dict[str, list[float]]]) -> list[str]:
    """One Markdown row per case (median seconds lever on and off, their ratio), then the set's
    median ratio; a case missing a variant's runs (failed) is left out of the median."""
    rows, ratios = [], []
    for case, by_variant in seconds.items():
        on, off = by_variant.get(lever.on), by_variant.get(lever.off)
        if not on or not off:
            rows.append(f"| {case_set.label} | {case} | failed | | |")
            continue
        ratio = statistics.median(on) / statistics.median(off)
        ratios.append(ratio)
        rows.append(f"| {case_set.label} | {case} | {statistics.median(on):.2f} ({len(on)}) | "
                    f"{statistics.median(off):.2f} ({len(off)}) | {ratio:.2f}x |")  # fmt: skip
    if ratios:
        rows.append(
            f"| {case_set.label} | **median of the cases** | | | **{statistics.median(ratios):.2f}x** |"
        )
    return rows


def readme(
    name: str, lever: Lever, rows: list[str], paired: list[str], rounds: int, argv: list[str]
) -> list[str]:
    return [
        f"# {lever.title}",
        "",
        f"Command: `make bench-{name}` (`python -m evaluation.lever_bench {' '.join(argv)}`), "
        f"{datetime.date.today().isoformat()}. Machine: {describe()}. Each row is one "
        "`evaluation.bench` run (its report in the folder named `<set>_<variant>/`): one fresh process "
        f"per case, app and baseline alternating. *{lever.on}*: the shipped product; *{lever.off}*: "
        f"{lever.off_what}. Compare the speed-ups (each against the baseline run beside it), not the "
        "seconds of two runs minutes apart."
        + (" With `--app-only` no such run is made: the table below is the result." if not rows else ""),
        "",
        "| cases | app | cases timed | app s (median) | baseline s (median) | speed-up median [min, max] | "
        "app peak RSS MB (median) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"## The app alone, *{lever.on}* and *{lever.off}* alternating",
        "",
        f"Each case run {rounds} times per variant, the variants alternating case by case (one fresh "
        "process per case, each variant on its own warm compiled-model cache): median seconds (runs), "
        f"and *{lever.on}* / *{lever.off}* (below 1.00x: the lever saves time).",
        "",
        f"| set | case | {lever.on} s | {lever.off} s | {lever.on} / {lever.off} |",
        "|---|---|---|---|---|",
        *paired,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.lever_bench", description=__doc__)
    parser.add_argument("lever", choices=sorted(LEVERS))
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: the lever's)")
    parser.add_argument("--work", type=Path, default=Path("build/lever_bench"), help="derived models")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the app alone, on and off alternating"
    )
    parser.add_argument("--app-only", action="store_true", help="skip the runs against the baseline")
    args = parser.parse_args(argv)
    lever = LEVERS[args.lever]
    out = args.out or lever.out
    work = args.work / args.lever
    off_models = args.models if lever.off_models is None else lever.off_models(args.models, work)
    variants: Variants = {lever.on: (args.models, {}), lever.off: (off_models, lever.off_env)}
    rows: list[str] = []
    paired: list[str] = []
    for case_set in lever.case_sets:
        if not case_set.data.is_dir():
            print(f"lever bench: no {case_set.data}: {case_set.label} skipped", file=sys.stderr)
            continue
        seconds = paired_app_seconds(case_set, variants, args.rounds, work / "paired")
        paired += paired_rows(case_set, lever, seconds)
        for variant, (models, env) in [] if args.app_only else variants.items():
            report = out / f"{case_set.label}_{slug(variant)}" / "REPORT.md"
            # a process of its own: forked children would otherwise inherit this harness's memory
            # high-water mark from an earlier run (bench measures encoders in-process at its end)
            subprocess.run(bench_command(case_set, models, report), check=True, env={**os.environ, **env})
            rows.append(ratio_row(case_set, variant, report.parent / "runs.csv"))
    argv_used = sys.argv[1:] if argv is None else argv
    write_report(out / "README.md", readme(args.lever, lever, rows, paired, args.rounds, argv_used))
    return 0


if __name__ == "__main__":
    sys.exit(main())
