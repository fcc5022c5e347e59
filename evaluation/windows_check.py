"""``make windows-check``: do decoder windows (``app/windows.py``) change any label map?

Picks every 2D case with at least ``BATCHED_FROM`` boxes (the only images whose boxes are
decoded on windows) from the corpora given, runs ``python -m app`` over them twice, windows off
(``--decoder-window 0``) and at the shipped setting, one process per run over all picked cases,
and compares the two outputs case by case (``evaluation.agreement``'s comparison), per source.
Also reports the two runs' wall seconds (one process each; the machine's load at the time moves
them, so they are a sign, not a benchmark: ``make bench`` times cases).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from app.infer_2d import BATCHED_FROM
from app.routing import source_tag
from app.windows import MARGIN, WINDOW
from common.machine import describe
from common.paths import BUILD, PUBLIC, PUBLIC2
from common.reports import write_csv
from evaluation.agreement import build_difference
from evaluation.runner import link_cases, run_cli

SETTINGS = {"whole": "0", "windows": str(WINDOW)}  # run name -> --decoder-window
# The check fails (exit 1) when a case's two label maps agree less than this (mean per-label Dice):
# windows may drop a far blob of a mask (app/windows.py), never reshape a mask near its box.
MIN_DICE = 0.999


def many_box_cases(data: Path) -> list[str]:
    """Names of the 2D cases in ``data`` with at least BATCHED_FROM boxes (sorted)."""
    names = []
    for path in sorted(data.glob("2D*.npz")):
        with np.load(path) as case:
            if len(case["boxes"]) >= BATCHED_FROM:
                names.append(path.name)
    return names


def source_table(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        "| source | cases | identical label maps | most pixels differing in a case | min per-case Dice |",
        "|---|---|---|---|---|",
    ]
    for source in sorted({str(r["source"]) for r in rows}):
        g = [r for r in rows if r["source"] == source]
        lines.append(
            f"| {source} | {len(g)} | {sum(bool(r['identical']) for r in g)} | "
            f"{max(float(r['differing']) for r in g):.1e} | {min(float(r['dice']) for r in g):.5f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.windows_check", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=[PUBLIC, PUBLIC2])
    parser.add_argument("--work", type=Path, default=BUILD / "windows_check")
    parser.add_argument("--out", type=Path, default=Path("reports/windows"))
    parser.add_argument("--skip-run", action="store_true", help="compare the outputs already in --work")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []
    seconds = dict.fromkeys(SETTINGS, 0.0)
    for data in [d for d in args.data if d.is_dir()]:
        names = many_box_cases(data)
        if not names:
            continue
        inputs = link_cases(names, data, args.work / "in" / data.name)
        for run, window in ({} if args.skip_run else SETTINGS).items():
            out = args.work / run / data.name
            for old in out.glob("*.npz"):
                old.unlink()
            log = args.work / f"{run}.log"
            seconds[run] += run_cli("app", inputs, out, log, ["-q", "--decoder-window", window])
        for row in build_difference(
            inputs, args.work / "whole" / data.name, args.work / "windows" / data.name
        ):
            rows.append({**row, "source": source_tag(str(row["case"]))})
    if not rows:
        print(f"windows-check: no 2D case with >= {BATCHED_FROM} boxes in {[str(d) for d in args.data]}")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "cases.csv", rows, ["case", "source", "group", "identical", "differing", "dice"])
    lines = [
        "# Decoder windows: label maps with and without",
        "",
        "Command: `make windows-check` (`python -m evaluation.windows_check`), "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Machine: {describe()}.",
        "",
        f"Inputs: every 2D case with at least {BATCHED_FROM} boxes (the images whose boxes go on windows) "
        f"of {', '.join(f'`{d}`' for d in args.data)}: {len(rows)} cases. Each run: one `python -m app` "
        f"process over them, windows off (`--decoder-window 0`) vs the shipped {WINDOW}-cell windows with "
        f"a {MARGIN}-cell margin. The window and margin were chosen on validation boxes of these sources "
        "(an ad hoc probe of how far masks reach beyond their box): a check on the cases it was set on.",
        "",
        *source_table(rows),
        "",
        f"The check passes when every case's label maps agree at a mean per-label Dice >= {MIN_DICE}.",
        "",
        (
            "Not run here (`--skip-run`): the outputs already in the work folder were compared."
            if args.skip_run
            else "Wall seconds of the two runs (one process each, all cases; a sign only, `make bench` "
            f"times cases): whole {seconds['whole']:.1f} s, windows {seconds['windows']:.1f} s."
        ),
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if min(float(r["dice"]) for r in rows) >= MIN_DICE else 1


if __name__ == "__main__":
    raise SystemExit(main())
