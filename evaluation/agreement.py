"""``python -m evaluation.agreement``: does the app reproduce the baseline oracle?

Runs ``python -m app`` and ``python -m baseline`` on the same folder, then compares their label
maps case by case: per-label Dice between the two outputs (a label empty in both counts as 1),
averaged per case; reported separately for 2D and 3D. Writes CSV + Markdown.

``--between A B`` compares two output folders instead (two builds of the app on the same
inputs, e.g. before and after a change of the exported graphs), per modality group: how many
label maps are identical, the largest fraction of a case's pixels that differ, the lowest
per-case Dice. Nothing is run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from app.npz_io import load_case
from app.routing import case_dims
from common.paths import PUBLIC
from common.reports import write_csv
from evaluation.runner import DEFAULT_MODELS, DEFAULT_WORK, base_only_models, output_folder, run_missing

GATE = 0.98


def label_dice(a: np.ndarray, b: np.ndarray, n_labels: int) -> float:
    """Mean over labels 1..n of Dice(a == i, b == i); a label absent from both scores 1."""
    scores = []
    for i in range(1, n_labels + 1):
        ma, mb = a == i, b == i
        total = int(ma.sum()) + int(mb.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((ma & mb).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def compare(data: Path, app_out: Path, ref_out: Path) -> list[dict[str, object]]:
    rows = []
    for path in sorted(data.glob("*.npz")):
        a, b = app_out / path.name, ref_out / path.name
        if not (a.exists() and b.exists()):
            rows.append({"case": path.name, "dims": "?", "dice": "", "note": "missing output"})
            continue
        n = len(load_case(path).boxes)
        with np.load(a) as fa, np.load(b) as fb:
            d = label_dice(fa["segs"], fb["segs"], n)
        rows.append(
            {
                "case": path.name,
                "dims": f"{case_dims(path.name) or 2}D",
                "dice": round(d, 5),
                "note": "",
            }
        )
    return rows


def summarise(rows: list[dict[str, object]]) -> list[str]:
    lines = ["| cases | n | mean Dice app vs oracle | min | cases < 0.98 |", "|---|---|---|---|---|"]
    for dims in ("2D", "3D"):
        vals = [float(r["dice"]) for r in rows if r["dims"] == dims and r["dice"] != ""]
        if vals:
            lines.append(
                f"| {dims} | {len(vals)} | {np.mean(vals):.4f} | {min(vals):.4f} | "
                f"{sum(v < GATE for v in vals)} |"
            )
    missing = [str(r["case"]) for r in rows if r["note"]]
    if missing:
        lines.append(f"\nMissing outputs ({len(missing)}): {', '.join(missing[:20])}")
    return lines


def build_difference(data: Path, a: Path, b: Path) -> list[dict[str, object]]:
    """Per case of ``data`` present in both output folders: identical?, fraction of pixels that
    differ, mean per-label Dice (labels up to the case's box count)."""
    rows = []
    for path in sorted(data.glob("*.npz")):
        if not ((a / path.name).exists() and (b / path.name).exists()):
            continue
        with np.load(a / path.name) as fa, np.load(b / path.name) as fb:
            x, y = fa["segs"], fb["segs"]
        n = len(load_case(path).boxes)
        group = "_".join(path.name.split("_")[:2])  # e.g. 2DBox_US
        rows.append(
            {
                "case": path.name,
                "group": group,
                "identical": bool(np.array_equal(x, y)),
                "differing": float(np.mean(x != y)),
                "dice": label_dice(x, y, n),
            }  # fmt: skip
        )
    return rows


def summarise_difference(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        "| group | cases | identical | most pixels differing in a case | min Dice | mean Dice |",
        "|---|---|---|---|---|---|",
    ]
    for group in sorted({str(r["group"]) for r in rows}):
        g = [r for r in rows if r["group"] == group]
        dice = [float(r["dice"]) for r in g]
        lines.append(
            f"| {group} | {len(g)} | {sum(bool(r['identical']) for r in g)} | "
            f"{max(float(r['differing']) for r in g):.1e} | {min(dice):.5f} | {np.mean(dice):.6f} |"
        )
    return lines


def between(data: Path, a: Path, b: Path, out: Path) -> int:
    rows = build_difference(data, a, b)
    write_csv(out / "between.csv", rows, ["case", "group", "identical", "differing", "dice"])
    lines = [
        f"# Label maps of `{a}` vs `{b}`",
        "",
        f"Inputs: `{data}` ({len(rows)} cases with an output in both). Command: "
        f"`python -m evaluation.agreement --data {data} --between {a} {b} --out {out}`.",
        "",
        *summarise_difference(rows),
    ]
    (out / "between.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if rows else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.agreement", description=__doc__)
    parser.add_argument("--data", type=Path, default=PUBLIC)
    parser.add_argument("--out", type=Path, default=Path("reports/agreement"))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="outputs per system (resumable)")
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="exported models (LiteMedSAM used)"
    )
    parser.add_argument("--skip-run", action="store_true", help="compare existing outputs only")
    parser.add_argument(
        "--between", nargs=2, type=Path, metavar=("A", "B"), help="compare two output folders (runs nothing)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.between:
        return between(args.data, *args.between, args.out)
    # The oracle runs LiteMedSAM; so does the app here (shipped specialists left out).
    models = base_only_models(args.models, args.work / "models_lite_medsam")
    app_out, ref_out = output_folder("app", args.work, models), output_folder("baseline", args.work)
    if not args.skip_run:
        names = sorted(p.name for p in args.data.glob("*.npz"))
        for system in ("app", "baseline"):
            count, secs = run_missing(system, names, args.data, args.work, models)
            print(f"agreement: {system} ran {count} cases without an output in {secs:.0f} s", file=sys.stderr)
    rows = compare(args.data, app_out, ref_out)
    write_csv(args.out / "agreement.csv", rows, ["case", "dims", "dice", "note"])
    lines = [
        "# App vs baseline oracle agreement",
        "",
        f"Data: `{args.data}`. Command: `make agreement` "
        f"(`python -m evaluation.agreement --data {args.data}`).",
        "Per case: mean over its labels of Dice(app label i, oracle label i); gate: mean >= 0.98.",
        "",
        *summarise(rows),
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    means = [float(r["dice"]) for r in rows if r["dice"] != ""]
    ok = bool(means) and all(
        np.mean([float(r["dice"]) for r in rows if r["dims"] == d and r["dice"] != ""] or [1.0]) >= GATE
        for d in ("2D", "3D")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
