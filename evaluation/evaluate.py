"""``make eval DATA=<folder>``: challenge DSC/NSD per case and per modality, app vs baseline.

Runs ``python -m app`` and the baseline oracle (``python -m baseline``) on the same cases (one
process each), scores both against ``gts`` with :mod:`evaluation.metrics`, and writes
``OUT/cases.csv``, ``OUT/README.md`` (per-modality table), ``OUT/modalities.png`` (bars) and
overlays of the app's worst cases (image, ground truth in white, prediction in colour).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from app.routing import modality, source_tag
from common.overlay import montage_3d, overlay_2d, write_png
from common.reports import write_csv
from evaluation.datasets import DATA_ROOTS, as_one_folder
from evaluation.metrics import SPACING_ORDERS, score_case, spacing_for_axes
from evaluation.runner import DEFAULT_MODELS, DEFAULT_WORK, output_folder, run_missing
from evaluation.split import read_split

SYSTEMS = ("app", "baseline")


def select_cases(data: Path, split: Path | None, subset: str) -> list[str]:
    names = sorted(p.name for p in data.glob("*.npz"))
    if split is None or subset == "all":
        return names
    assignment = read_split(split)
    return [n for n in names if assignment.get(n) == subset]


def score_one(case: Path, outputs: dict[str, Path], order: str) -> dict[str, object]:
    with np.load(case) as c:
        gts = c["gts"]
        spacing = spacing_for_axes(tuple(c["spacing"]), order) if gts.ndim == 3 else None
    row: dict[str, object] = {
        "case": case.name,
        "modality": modality(case.name) or "unknown",
        "dims": "3D" if gts.ndim == 3 else "2D",
    }
    for system, folder in outputs.items():
        out = folder / case.name
        if not out.is_file():
            row[f"{system}_dsc"], row[f"{system}_nsd"] = "", ""
            continue
        with np.load(out) as o:
            s = score_case(gts, o["segs"], spacing)
        row[f"{system}_dsc"], row[f"{system}_nsd"] = round(s.dsc, 4), round(s.nsd, 4)
    return row


def _mean(rows: list[dict[str, object]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r[key] != "" and not math.isnan(float(r[key]))]
    return float(np.mean(vals)) if vals else float("nan")


def source_table(rows: list[dict[str, object]]) -> list[str]:
    """Per (modality, dims, source): cases and mean DSC/NSD of both systems."""
    lines = [
        "| modality | source | cases | DSC app | DSC baseline | diff | NSD app | NSD baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(f"{r['modality']} {r['dims']}", source_tag(str(r["case"]))) for r in rows})
    for group, source in keys:
        sub = [
            r
            for r in rows
            if f"{r['modality']} {r['dims']}" == group and source_tag(str(r["case"])) == source
        ]
        m = {k: _mean(sub, k) for k in ("app_dsc", "baseline_dsc", "app_nsd", "baseline_nsd")}
        lines.append(
            f"| {group} | {source} | {len(sub)} | {m['app_dsc']:.4f} | {m['baseline_dsc']:.4f} | "
            f"{m['app_dsc'] - m['baseline_dsc']:+.4f} | {m['app_nsd']:.4f} | {m['baseline_nsd']:.4f} |"
        )
    return lines


def table(rows: list[dict[str, object]]) -> tuple[list[str], dict[str, dict[str, float]]]:
    groups = sorted({str(r["modality"]) + " " + str(r["dims"]) for r in rows})
    lines = [
        "| modality | cases | DSC app | DSC baseline | diff | NSD app | NSD baseline | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    means: dict[str, dict[str, float]] = {}
    for g in [*groups, "all"]:
        sub = rows if g == "all" else [r for r in rows if f"{r['modality']} {r['dims']}" == g]
        m = {k: _mean(sub, k) for k in ("app_dsc", "baseline_dsc", "app_nsd", "baseline_nsd")}
        means[g] = m
        lines.append(
            f"| {g} | {len(sub)} | {m['app_dsc']:.4f} | {m['baseline_dsc']:.4f} | "
            f"{m['app_dsc'] - m['baseline_dsc']:+.4f} | {m['app_nsd']:.4f} | {m['baseline_nsd']:.4f} | "
            f"{m['app_nsd'] - m['baseline_nsd']:+.4f} |"
        )
    return lines, means


def plot_modalities(means: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in means if g != "all"]
    x = np.arange(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, metric in zip(axes, ("dsc", "nsd"), strict=True):
        for offset, system in ((-0.2, "app"), (0.2, "baseline")):
            ax.bar(x + offset, [means[g][f"{system}_{metric}"] for g in groups], 0.4, label=system)
        ax.set_xticks(x, groups, rotation=45, ha="right")
        ax.set_title(metric.upper())
        ax.set_ylim(0, 1)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def worst_overlays(
    rows: list[dict[str, object]], data: Path, app_out: Path, folder: Path, n: int
) -> list[str]:
    scored = [r for r in rows if r["app_dsc"] != "" and not math.isnan(float(r["app_dsc"]))]
    lines = []
    for r in sorted(scored, key=lambda r: float(r["app_dsc"]))[:n]:
        name = str(r["case"])
        with np.load(data / name) as c, np.load(app_out / name) as o:
            imgs, boxes, gts, segs = c["imgs"], c["boxes"], c["gts"], o["segs"]
        pic = montage_3d(imgs, segs, boxes, gts) if gts.ndim == 3 else overlay_2d(imgs, segs, boxes, gts)
        png = folder / f"worst_{Path(name).stem}.png"
        write_png(png, pic)
        lines.append(f"- `{name}`: app DSC {r['app_dsc']}, baseline {r['baseline_dsc']} -> ![]({png.name})")
    return lines


def command_args(args: argparse.Namespace, folders: list[Path]) -> str:
    parts = [f"--data {' '.join(map(str, folders))}", f"--spacing-order {args.spacing_order}"]
    if args.split is not None:
        parts.append(f"--split {args.split} --subset {args.subset}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.evaluate", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=[DATA_ROOTS["public"]], help="data folders")
    parser.add_argument("--out", type=Path, default=Path("reports/eval"))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="outputs per system (resumable)")
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="the app's models (with its routes)"
    )
    parser.add_argument("--split", type=Path, default=None, help="split CSV (see make split)")
    parser.add_argument("--subset", choices=("all", "train", "val"), default="all")
    parser.add_argument("--spacing-order", choices=SPACING_ORDERS, default="zyx")
    parser.add_argument("--worst", type=int, default=4, help="overlays of the app's worst cases")
    parser.add_argument("--skip-run", action="store_true", help="score existing outputs only")
    args = parser.parse_args(argv)
    folders, args.data = args.data, as_one_folder(args.data)
    names = select_cases(args.data, args.split, args.subset)
    outputs = {s: output_folder(s, args.work, args.models) for s in SYSTEMS}
    if not args.skip_run:
        for system in SYSTEMS:
            count, secs = run_missing(system, names, args.data, args.work, args.models)
            print(f"eval: {system} ran {count} cases without an output in {secs:.0f} s")
    rows = [score_one(args.data / n, outputs, args.spacing_order) for n in names]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "cases.csv", rows)
    lines, means = table(rows)
    plot_modalities(means, args.out / "modalities.png")
    subset = "all cases" if args.split is None else f"{args.subset} subset of `{args.split}`"
    report = [
        "# Accuracy: app vs LiteMedSAM baseline oracle",
        "",
        f"Data: `{' '.join(map(str, folders))}`, {subset}, {len(names)} cases. "
        f"Spacing order: {args.spacing_order}. {time.strftime('%Y-%m-%d')}. "
        f"Command: `python -m evaluation.evaluate {command_args(args, folders)}`.",
        "Challenge metrics: case DSC = mean over labels; NSD at 2 px (2D) / 2 mm (3D), "
        "0 when the case DSC <= 0.2.",
        "",
        *lines,
        "",
        "Per source:",
        "",
        *source_table(rows),
        "",
        "![per-modality DSC and NSD](modalities.png)",
        "",
        "## The app's worst cases (white: ground truth, colour: prediction)",
        *worst_overlays(rows, args.data, outputs["app"], args.out, args.worst),
    ]
    (args.out / "README.md").write_text("\n".join(report) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
