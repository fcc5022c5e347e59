"""``make train-specialists``: per modality group, fine-tune LiteMedSAM's mask decoder, fit its
router, then gate it per route and per source.

For every group of ``train/groups.py``: cache the frozen encoder's embeddings of the group's
train cases and in-source validation cases (``splits/public.csv``, over
``../shared/data/public`` and ``public2``), fine-tune the decoder (resumable), fit its router
(``train/router_fit.py``: the training boxes' features as the app computes them, and an
out-of-fold threshold), and write ``reports/train/<group>/{log.csv,loss.png}`` and
``build/train/<group>/decoder_fp16.pt``. The validation Dice logged during training is a fast
proxy (model frame, tight boxes, cached slices, in-source validation cases). Then the gate
(``train/source_gate.py``): every candidate is exported and run through the app on all its
validation cases (LiteMedSAM, specialist alone, specialist + router), scored per route and per
source; the routes that pass ship in ``weights/<group>/`` (``make export``), groups with none
are removed; ``reports/specialists/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from app.novelty import save_reference
from app.routing import source_tag
from app.sessions import SamSession, SessionCache, create_core
from common.paths import MODELS, SPLIT_CSV
from evaluation.datasets import DEFAULT_DATA, as_one_folder
from modeling.checkpoint import sha256_file, state_fp16
from modeling.registry import BASE_KEY, WEIGHTS_DIR, get_spec, load_model
from train.data import load_pool
from train.distill.gate import hand_over, read_cards
from train.gate import DECODER_FILE, candidate_card, verdict, write_candidate
from train.groups import GROUPS, group_of
from train.loop import TrainConfig, plot_log, train_decoder, write_log
from train.provenance import sources_of
from train.router_fit import RouterConfig, case_box_features, fit_reference
from train.samples import build_cache, split_paths
from train.source_gate import (
    ROUTER_FILE,
    contest_shipped,
    contest_students,
    drop_retired,
    load_references,
    read_case_rows,
    reported_verdicts,
    route_verdicts,
    router_acceptance,
    run_source_gate,
    settle_routes,
    with_earlier_rows,
    write_source_report,
)


def split_cases(split_csv: Path, data: Path, group: str) -> dict[str, list[Path]]:
    """{'train': [...], 'val': [...]} case paths of ``group`` present in ``data``."""
    return {
        part: [p for p in paths if group_of(p.name) == group]
        for part, paths in split_paths(split_csv, data).items()
    }


def in_source(cases: list[Path], train: list[Path]) -> list[Path]:
    """The cases whose source is among the training cases' sources."""
    seen = {source_tag(p.name) for p in train}
    return [p for p in cases if source_tag(p.name) in seen]


def train_group(
    group: str, cases: dict[str, list[Path]], session: SamSession, args: argparse.Namespace, cfg: TrainConfig
) -> tuple[Path, list[dict], int]:
    """Cache, train (resumable) and log one group: (fp16 decoder weights, log rows, objects)."""
    parts = {"train": cases["train"], "val": in_source(cases["val"], cases["train"])}
    pools = {
        part: load_pool(build_cache(paths, per_encoder(args, args.cache) / group, session, args.per_case))
        for part, paths in parts.items()
    }
    print(f"train: {group}: {len(parts['train'])} train cases ({len(pools['train'].objects)} objects), "
          f"{len(parts['val'])} in-source val ({len(pools['val'].objects)})", file=sys.stderr)  # fmt: skip
    model = load_model(get_spec(args.encoder))  # its decoder is LiteMedSAM's: the one fine-tuned
    torch.manual_seed(cfg.seed)
    log = train_decoder(model, pools["train"], pools["val"], per_encoder(args, args.out) / group, cfg)
    weights = per_encoder(args, args.out) / group / DECODER_FILE
    torch.save(state_fp16(model.mask_decoder.state_dict()), weights)
    report = per_encoder(args, args.report) / group  # a run over a student: beside, not over
    report.mkdir(parents=True, exist_ok=True)
    write_log(log, report / "log.csv")
    plot_log(log, report / "loss.png", group)
    print(f"train: {group}: wrote {weights}, {report}/log.csv, loss.png", file=sys.stderr)
    return weights, log, len(pools["train"].objects)


def per_encoder(args: argparse.Namespace, root: Path) -> Path:
    """``root`` for LiteMedSAM's encoder, else ``root/<encoder>``: caches, training states and
    logs of decoders trained over another encoder never mix with (or resume from, or overwrite)
    LiteMedSAM's."""
    return root if args.encoder == BASE_KEY else root / args.encoder


class BoxFeatures:
    """Router features of a case's boxes, computed once per case (``<cache>/<case>.npy``)."""

    def __init__(self, data: Path, session: SamSession, cache: Path) -> None:
        self.data, self.session, self.cache = data, session, cache

    def __call__(self, name: str) -> np.ndarray:
        path = self.cache / f"{name}.npy"
        if path.is_file():
            return np.load(path)
        feats = case_box_features(self.data / name, self.session)
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".{name}.tmp.npy"
        np.save(tmp, feats)
        tmp.replace(path)
        return feats


def fit_router(cases: list[Path], features: BoxFeatures, folder: Path, cfg: RouterConfig) -> dict:
    """Fit and write ``folder/router.npz`` from the training cases; the card's ``router`` entry."""
    ref = fit_reference([features(p.name) for p in cases], cfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_reference(folder / ROUTER_FILE, ref)
    print(f"train: router for {folder.name}: {ref.facts}", file=sys.stderr)
    facts = {**ref.facts, "config": asdict(cfg), "fit": "train/router_fit.py"}
    return {"file": ROUTER_FILE, "sha256": sha256_file(folder / ROUTER_FILE), "facts": facts}


def config_flags(cfg: TrainConfig) -> str:
    """The command-line flags of ``cfg``'s non-default settings (for the reports' command)."""
    default = TrainConfig()
    changed = [f for f in fields(TrainConfig) if getattr(cfg, f.name) != getattr(default, f.name)]
    return "".join(f" --{f.name.replace('_', '-')} {getattr(cfg, f.name)}" for f in changed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=SPLIT_CSV)
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--cache", type=Path, default=Path("build/train_cache"), help="embedding cache")
    parser.add_argument("--out", type=Path, default=Path("build/train"), help="states and weights")
    parser.add_argument("--report", type=Path, default=Path("reports/train"))
    parser.add_argument("--per-case", type=int, default=8, help="3D: slices cached per volume")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="where accepted specialists go")
    parser.add_argument("--gate-dir", type=Path, default=Path("build/gate"))
    parser.add_argument("--no-gate", action="store_true", help="train only")
    encoder_help = "the frozen encoder the decoders train over: LiteMedSAM's, or a student's key in weights/"
    parser.add_argument("--encoder", default=BASE_KEY, help=encoder_help)
    for f in fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    if not any(d.is_dir() for d in args.data):
        parser.error(f"no data folder among {args.data}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = as_one_folder(args.data)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    session = SessionCache(create_core(None), args.models).get(args.encoder)
    features = BoxFeatures(data, session, per_encoder(args, args.cache) / "router")
    val_names: dict[str, list[str]] = {}
    train_sources: dict[str, set[str]] = {}
    for group in args.groups:
        cases = split_cases(args.split, data, group)
        if not cases["train"] or not cases["val"]:
            print(f"train: {group}: no train or no validation cases, skipped", file=sys.stderr)
            continue
        weights, log, objects = train_group(group, cases, session, args, cfg)
        training = {
            "command": "make train-specialists",
            "data": f"{' + '.join(map(str, args.data))}, train rows of {args.split}",
            "cases": len(cases["train"]),
            "objects": objects,
            "sources": sources_of([p.name for p in cases["train"]]),
            "config": asdict(cfg),
            "proxy_val_dice": {"start": log[0]["val_dice"], "end": log[-1]["val_dice"]},
        }
        card = candidate_card(group, weights, training, args.encoder, WEIGHTS_DIR)
        folder = args.gate_dir / "weights" / group
        card["router"] = fit_router(cases["train"], features, folder, RouterConfig())
        write_candidate(folder, card, weights)
        val_names[group] = [p.name for p in cases["val"]]
        train_sources[group] = {source_tag(p.name) for p in cases["train"]}
    if args.no_gate or not val_names:
        return 0
    for stale in (args.gate_dir / "weights").glob("*"):
        if stale.name not in val_names:
            shutil.rmtree(stale)
    if args.encoder != BASE_KEY:  # the candidates' shared encoder, exported beside them
        shared = args.gate_dir / "weights" / args.encoder
        shutil.copytree(WEIGHTS_DIR / args.encoder, shared, dirs_exist_ok=True)
    command = (
        f"make train-specialists (python -m train --groups {' '.join(sorted(val_names))}{config_flags(cfg)}"
        f"{'' if args.encoder == BASE_KEY else f' --encoder {args.encoder}'})"
    )
    acceptance_of = router_acceptance(load_references(args.gate_dir / "weights"), features)
    rows = run_source_gate(val_names, train_sources, data, args.gate_dir, acceptance_of)
    cards = read_cards(args.weights)
    report = args.report.parent / "specialists"
    shipped_rows = read_case_rows(report / "gate_cases.csv") if (report / "gate_cases.csv").is_file() else []
    verdicts, keep = contest_shipped(route_verdicts(rows), rows, shipped_rows, cards, args.encoder)
    verdicts, students = contest_students(verdicts, rows, cards)
    settle_routes(verdicts, rows, args.gate_dir / "weights", args.weights, command, keep)
    hand_over(args.weights, students, cards)
    if keep:  # the report keeps the shipped specialists' measured cases
        rows = [r for r in rows if r["group"] not in keep]
    rows = with_earlier_rows(rows, report / "gate_cases.csv")
    for key in drop_retired(args.weights):
        print(f"gate: removed {args.weights / key}: no such group in train/groups.py", file=sys.stderr)
    everything, _ = contest_students(route_verdicts(rows), rows, cards)
    everything = reported_verdicts(everything, verdicts, keep)
    gated = sorted(set(val_names) - keep)
    write_source_report(rows, everything, report, command, gated=gated)
    for v in verdicts:
        outcome = "keeps the shipped specialist" if v.group in keep else verdict(v.accepted)
        print(f"gate: {v.group}: {v.modality} {v.dims}D: {outcome} ({v.reason})", file=sys.stderr)
    print("gate: now `make export` ships the accepted specialists, their routers and routes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
