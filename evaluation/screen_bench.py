"""``make bench-screen``: what the image screen (``app/screen.py``) does to per-case speed, on a
source its specialist never saw and on the one it was trained on.

For each case set of ``CASE_SETS``, ``make bench``'s protocol (``evaluation/bench.py``: one fresh
process per case, app and baseline alternating) runs twice: the app with the shipped models, and
the app with the same models without their screens (``evaluation.runner.without_screens``: the
product before the screen). Each run is a bench report of its own under ``--out``; this
module's README sets their rows side by side. The two runs of a set are minutes apart on a
shared machine: compare their ratios to the baseline, each measured side by side.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.paths import MODELS
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


CASE_SETS: tuple[CaseSet, ...] = (
    CaseSet(
        "busi", DATA_ROOTS["public2"], "US 2D", 15, "BUSI (breast US): a source the US specialist never saw"
    ),
    CaseSet("hc18", DATA_ROOTS["public"], "US 2D", 5, "HC18 (fetal head US): the US specialist's own source"),
)
VARIANTS = ("screen", "no_screen")  # the shipped models; the same without their screens


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
        f"| {case_set.what} | {variant.replace('_', ' ')} | {len(pairs)} | {app_s:.2f} | {base_s:.2f} | "
        f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] | {rss:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.screen_bench", description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/screen"))
    parser.add_argument(
        "--work", type=Path, default=Path("build/screen_bench"), help="the models without screens"
    )
    args = parser.parse_args(argv)
    models = {
        "screen": args.models,
        "no_screen": without_screens(args.models, args.work / "models_no_screen"),
    }
    rows = []
    for case_set in CASE_SETS:
        if not case_set.data.is_dir():
            print(f"screen bench: no {case_set.data}: {case_set.label} skipped", file=sys.stderr)
            continue
        for variant in VARIANTS:
            out = args.out / f"{case_set.label}_{variant}" / "REPORT.md"
            picked = [
                "--data",
                str(case_set.data),
                "--groups",
                case_set.group,
                "--per-group",
                str(case_set.per_group),
            ]
            # a process of its own: forked children would otherwise inherit this harness's memory
            # high-water mark from an earlier run (bench measures encoders in-process at its end)
            cmd = [sys.executable, "-m", "evaluation.bench", *picked, "--no-large"]
            subprocess.run([*cmd, "--models", str(models[variant]), "--out", str(out)], check=True)
            rows.append(ratio_row(case_set, variant, out.parent / "runs.csv"))
    write_report(args.out / "README.md", [
        "# The image screen and per-case speed",
        "",
        "Command: `make bench-screen` (`python -m evaluation.screen_bench`). Each row is one "
        "`evaluation.bench` run (its report in the folder named `<set>_<variant>/`): one fresh process "
        "per case, app and baseline alternating. *screen*: the shipped models; *no screen*: the same "
        "models without their image screens (every image goes to the specialist's router: the product "
        "before the screen). Compare the speed-ups (each against the baseline run beside it), not the "
        "seconds of two runs minutes apart.",
        "",
        "| cases | app | cases timed | app s (median) | baseline s (median) | speed-up median [min, max] | "
        "app peak RSS MB (median) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
