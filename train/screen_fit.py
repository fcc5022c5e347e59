"""``make screen``: fit a specialist's image screen (``app/screen.py``) and calibrate it against
its router, on every 2D image of the corpus.

Reference: the specialist's training images (the train rows of its routes whose source it was
trained on), their screen features standardised per block as the router's are
(``train/router_fit.py``). Threshold, in two steps:
1. ``margin`` x the largest distance of an in-source image: each training image to the other
   training images (leave one out) and each in-source validation image to the reference, so a
   new image of a training source is admitted with room to spare;
2. raised, if needed, to admit every image of the corpus (any source, any modality, named as
   the route) on which the shipped router accepted at least one box: on our corpus the screen
   then sends to LiteMedSAM only images whose boxes the router refused, which the cascade
   gives LiteMedSAM's masks anyway, so it changes no mask here.

Writes ``weights/<key>/screen.npz`` and the card's ``screen`` entry (``make export`` ships it),
and ``reports/screen/<key>/`` (per source: images screened out, images the router took boxes
of, the distances; a per-image CSV; a strip plot).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.novelty import Reference, nearest_distance
from app.npz_io import load_case
from app.routing import case_dims, modality, source_tag
from app.screen import SCREEN_BLOCKS, Screen, save_screen, screen_features
from app.sessions import SamSession, SessionCache, create_core
from common.paths import MODELS, SPLIT_CSV
from common.reports import write_csv, write_report
from evaluation.datasets import DEFAULT_DATA, as_one_folder, corpus_of
from evaluation.split import read_split
from modeling.checkpoint import sha256_file
from modeling.registry import CARD_NAME, WEIGHTS_DIR
from train.router_fit import acceptance, case_box_features, standardisation

SCREEN_FILE = "screen.npz"
ASPECT_MIN_SCALE = 0.1  # log units: images whose aspect ratios differ by ~10% count as alike


@dataclass(frozen=True)
class ScreenConfig:
    margin: float = 1.25  # threshold = margin x the farthest in-source image (step 1)
    min_scale: float = 0.05  # per block: std floor = min_scale x the block's median std


@dataclass(frozen=True)
class ImageRow:
    """One 2D image of the corpus, as the screen and the router see it."""

    case: str
    corpus: str
    modality: str
    source: str
    role: str  # reference | in-source (a training source, not a reference image) | other
    distance: float  # to the reference (a reference image: to the other reference images)
    boxes: int
    router_took: int  # boxes the shipped router accepts (fp32)


def leave_one_out(std: np.ndarray) -> np.ndarray:
    """(M, F) standardised reference rows -> (M,) each row's distance to its nearest other row."""
    return np.concatenate(
        [nearest_distance(std[i : i + 1], np.delete(std, i, axis=0), SCREEN_BLOCKS) for i in range(len(std))]
    )


def fit_reference(reference_raw: np.ndarray, cfg: ScreenConfig) -> tuple[Screen, np.ndarray]:
    """(M, F) raw features of the training images -> (screen with threshold 0, leave-one-out
    distances)."""
    if len(reference_raw) < 2:
        msg = f"an image screen needs at least 2 training images, got {len(reference_raw)}"
        raise ValueError(msg)
    center, scale = standardisation(reference_raw, cfg.min_scale, SCREEN_BLOCKS, {"aspect": ASPECT_MIN_SCALE})
    # as stored (fp16, app/novelty.py save_table): the distances calibrated here are the app's
    std = ((reference_raw - center) / scale).astype(np.float16).astype(np.float32)
    return Screen(std, center, scale, 0.0), leave_one_out(std)


def calibrated_threshold(rows: list[ImageRow], margin: float) -> tuple[float, dict[str, float]]:
    """Step 1 and 2 of the module's threshold from every image's row: (threshold, its parts)."""
    in_source = [r.distance for r in rows if r.role != "other"]
    took = [r.distance for r in rows if r.router_took > 0]
    step1 = margin * max(in_source)
    threshold = max([step1, *took])
    parts = {
        "farthest_in_source": round(max(in_source), 4),
        "margin_threshold": round(step1, 4),
        "farthest_router_accepted": round(max(took), 4) if took else 0.0,
    }
    return float(threshold), parts


def at_least_as_stored(threshold: float) -> float:
    """The smallest float32 (the stored threshold's type) not below ``threshold``: an image at
    exactly the calibrated distance stays admitted after the threshold is saved."""
    stored = np.float32(threshold)
    return float(stored if float(stored) >= threshold else np.nextafter(stored, np.float32(np.inf)))


def image_rows(
    cases: list[Path], sources: set[str], modalities: set[str], screen: Screen,
    loo: dict[str, float], session: SamSession, router_ref: Reference,
) -> list[ImageRow]:  # fmt: skip
    """A row per 2D case: its role for the specialist, its screen distance and router decision."""
    rows = []
    for i, path in enumerate(cases, start=1):
        case = load_case(path)
        own = modality(path.name) in modalities and source_tag(path.name) in sources
        role = "reference" if path.name in loo else ("in-source" if own else "other")
        feats = screen_features(case.image, session.input_size)
        distance = loo[path.name] if path.name in loo else float(screen.distance(feats)[0])
        took, boxes = acceptance(router_ref, case_box_features(path, session))
        rows.append(ImageRow(path.name, corpus_of(path), modality(path.name) or "?", source_tag(path.name),
                             role, distance, boxes, took))  # fmt: skip
        if i % 50 == 0:
            print(f"screen: {i}/{len(cases)} images", file=sys.stderr)
    return rows


def source_table(rows: list[ImageRow], threshold: float) -> list[str]:
    """Markdown rows per (corpus, modality, source): what the screen and the router do there."""
    out = [
        "| corpus | modality | source | role | images | router took a box | screened out | "
        "screened out though the router took a box | distance min / median / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r.corpus, r.modality, r.source) for r in rows})
    for corpus, mod, source in keys:
        group = [r for r in rows if (r.corpus, r.modality, r.source) == (corpus, mod, source)]
        d = np.array([r.distance for r in group])
        out_ = [r for r in group if r.distance > threshold]
        roles = "/".join(sorted({r.role for r in group}))
        took, took_out = sum(r.router_took > 0 for r in group), sum(r.router_took > 0 for r in out_)
        out.append(
            f"| {corpus} | {mod} | {source} | {roles} | {len(group)} | {took} | {len(out_)} | {took_out} | "
            f"{d.min():.2f} / {np.median(d):.2f} / {d.max():.2f} |"
        )
    return out


def plot_distances(rows: list[ImageRow], threshold: float, path: Path, key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({f"{r.modality} {r.source}" for r in rows})
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(labels) + 1.5))
    for y, label in enumerate(labels):
        group = [r for r in rows if f"{r.modality} {r.source}" == label]
        d = np.array([r.distance for r in group])
        took = np.array([r.router_took > 0 for r in group])
        jitter = np.random.default_rng(y).uniform(-0.2, 0.2, len(d))
        ax.scatter(
            d[~took], y + jitter[~took], s=10, c="tab:gray", label="router took no box" if y == 0 else None
        )
        ax.scatter(
            d[took], y + jitter[took], s=10, c="tab:blue", label="router took a box" if y == 0 else None
        )
    ax.axvline(threshold, color="tab:red", label=f"threshold {threshold:.2f}")
    title = f"{key}: image screen (right of the line: LiteMedSAM, no student encode)"
    ax.set(yticks=range(len(labels)), xscale="log", xlabel="screen distance to the nearest training image",
           title=title)  # fmt: skip
    ax.set_yticklabels(labels, fontsize=7)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_card(folder: Path, screen_path: Path, facts: dict[str, object]) -> None:
    """The card's ``screen`` entry: the file, its sha256 and how it was fitted."""
    card_path = folder / CARD_NAME
    card = json.loads(card_path.read_text())
    card["screen"] = {"file": screen_path.name, "sha256": sha256_file(screen_path), "facts": facts}
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.screen_fit", description=__doc__)
    parser.add_argument("--key", default="us_2d", help="a shipped specialist over another encoder")
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=SPLIT_CSV)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--report", type=Path, default=Path("reports/screen"))
    parser.add_argument("--margin", type=float, default=ScreenConfig.margin)
    args = parser.parse_args(argv)
    if not any(d.is_dir() for d in args.data):
        parser.error(f"no data folder among {args.data}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = ScreenConfig(margin=args.margin)
    folder = args.weights / args.key
    card = json.loads((folder / CARD_NAME).read_text())
    modalities = {r["modality"] for r in card["routes"] if int(r["dims"]) == 2}
    sources = set(card["training"]["sources"])
    if not modalities:
        print(f"screen: {args.key} serves no 2D route: nothing to screen", file=sys.stderr)
        return 2
    data = as_one_folder(args.data)
    split = read_split(args.split)
    cases = sorted(p for p in data.glob("*.npz") if case_dims(p.name) == 2)
    references = [p for p in cases if split.get(p.name) == "train" and modality(p.name) in modalities
                  and source_tag(p.name) in sources]  # fmt: skip
    sessions = SessionCache(create_core(None), args.models)
    session, router_ref = sessions.get(args.key), sessions.reference(args.key)
    if router_ref is None:
        print(f"screen: {args.key} has no router: nothing to calibrate against", file=sys.stderr)
        return 2
    print(
        f"screen: {args.key}: {len(references)} training images, {len(cases)} 2D images in all",
        file=sys.stderr,
    )
    raw = np.stack([screen_features(load_case(p).image, session.input_size) for p in references])
    screen, loo = fit_reference(raw, cfg)
    loo_of = dict(zip([p.name for p in references], loo.tolist(), strict=True))
    rows = image_rows(cases, sources, modalities, screen, loo_of, session, router_ref)
    threshold, parts = calibrated_threshold(rows, cfg.margin)
    threshold = at_least_as_stored(threshold)
    screen = Screen(screen.features, screen.center, screen.scale, threshold)
    out = folder / SCREEN_FILE
    save_screen(out, screen)
    facts = {"threshold": round(threshold, 4), **parts, "reference_images": len(references),
             "config": asdict(cfg), "fit": "train/screen_fit.py", "command": "make screen"}  # fmt: skip
    update_card(folder, out, facts)
    report = args.report / args.key
    report.mkdir(parents=True, exist_ok=True)
    write_csv(report / "images.csv", [asdict(r) for r in rows])
    plot_distances(rows, threshold, report / "distances.png", args.key)
    screened = [r for r in rows if r.distance > threshold]
    changed = sum(r.router_took > 0 for r in screened)
    write_report(report / "README.md", [
        f"# Image screen of {args.key}",
        "",
        f"Command: `make screen` (`python -m train.screen_fit --key {args.key} --data "
        f"{' '.join(map(str, args.data))}`). Module `train/screen_fit.py` says how it is fitted.",
        "",
        f"Reference: {len(references)} training images ({', '.join(sorted(sources))}). Threshold "
        f"{threshold:.4f}: {cfg.margin} x the farthest in-source image ({parts['farthest_in_source']:.4f}) "
        f"= {parts['margin_threshold']:.4f}, raised to the farthest image the router took a box of "
        f"({parts['farthest_router_accepted']:.4f}) if larger. Router decisions at fp32.",
        "",
        f"Of {len(rows)} 2D images (every modality, as if named {'/'.join(sorted(modalities))}), "
        f"{len(screened)} are screened out (LiteMedSAM, no student encode), {changed} of them with a "
        "box the router took" + (": on this corpus the screen changes no mask." if changed == 0 else
                                 ": their masks change (LiteMedSAM's instead of the specialist's)."),
        "",
        *source_table(rows, threshold),
        "",
        "![screen distances per source](distances.png)",
    ])  # fmt: skip
    print(f"screen: wrote {out} and the card's screen entry; `make export` ships it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
