"""``make train-specialists``: per modality group, fine-tune LiteMedSAM's mask decoder, then gate.

For every group of ``train/groups.py``: cache the frozen encoder's embeddings of the group's
train and validation cases (``splits/public.csv``), fine-tune the decoder (resumable), and
write ``reports/train/<group>/{log.csv,loss.png}`` and ``build/train/<group>/decoder_fp16.pt``.
The validation Dice logged during training is a fast proxy (model frame, tight boxes, cached
slices). Then the gate (``train/gate.py``): every trained group is exported and run through the
app on its validation cases with the challenge metrics; the groups that pass are written to
``weights/<group>/`` (shipped by ``make export``), the others removed; ``reports/specialists/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch

from app.sessions import SamSession, SessionCache, create_core
from export.specs import BASE_KEY, WEIGHTS_DIR, get_spec, load_model
from train.data import load_pool
from train.gate import ALL, DECODER_FILE, candidate_card, run_gate, settle, write_candidate, write_report
from train.groups import GROUPS, group_of
from train.loop import TrainConfig, plot_log, train_decoder, write_log
from train.provenance import sources_of
from train.samples import build_cache, split_paths


def split_cases(split_csv: Path, data: Path, group: str) -> dict[str, list[Path]]:
    """{'train': [...], 'val': [...]} case paths of ``group`` present in ``data``."""
    return {
        part: [p for p in paths if group_of(p.name) == group]
        for part, paths in split_paths(split_csv, data).items()
    }


def train_group(
    group: str, cases: dict[str, list[Path]], session: SamSession, args: argparse.Namespace, cfg: TrainConfig
) -> tuple[Path, list[dict], int]:
    """Cache, train (resumable) and log one group: (fp16 decoder weights, log rows, objects)."""
    pools = {
        part: load_pool(build_cache(paths, args.cache / group, session, args.per_case))
        for part, paths in cases.items()
    }
    print(f"train: {group}: {len(cases['train'])} train cases ({len(pools['train'].objects)} objects), "
          f"{len(cases['val'])} val ({len(pools['val'].objects)})", file=sys.stderr)  # fmt: skip
    model = load_model(get_spec(BASE_KEY))
    torch.manual_seed(cfg.seed)
    log = train_decoder(model, pools["train"], pools["val"], args.out / group, cfg)
    weights = args.out / group / DECODER_FILE
    torch.save({k: v.half() for k, v in model.mask_decoder.state_dict().items()}, weights)
    report = args.report / group
    report.mkdir(parents=True, exist_ok=True)
    write_log(log, report / "log.csv")
    plot_log(log, report / "loss.png", group)
    print(f"train: {group}: wrote {weights}, {report}/log.csv, loss.png", file=sys.stderr)
    return weights, log, len(pools["train"].objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/public"))
    parser.add_argument("--split", type=Path, default=Path("splits/public.csv"))
    parser.add_argument("--groups", nargs="*", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--cache", type=Path, default=Path("build/train_cache"), help="embedding cache")
    parser.add_argument("--out", type=Path, default=Path("build/train"), help="states and weights")
    parser.add_argument("--report", type=Path, default=Path("reports/train"))
    parser.add_argument("--per-case", type=int, default=8, help="3D: slices cached per volume")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="where accepted specialists go")
    parser.add_argument("--gate-dir", type=Path, default=Path("build/gate"))
    parser.add_argument("--no-gate", action="store_true", help="train only")
    for f in fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"no data folder {args.data}")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    session = SessionCache(create_core(None), args.models).get(BASE_KEY)
    candidates: dict[str, dict] = {}
    val_names: dict[str, list[str]] = {}
    for group in args.groups:
        cases = split_cases(args.split, args.data, group)
        if not cases["train"] or not cases["val"]:
            print(f"train: {group}: no train or no validation cases, skipped", file=sys.stderr)
            continue
        weights, log, objects = train_group(group, cases, session, args, cfg)
        training = {
            "command": "make train-specialists",
            "data": f"{args.data}, train rows of {args.split}",
            "cases": len(cases["train"]),
            "objects": objects,
            "sources": sources_of([p.name for p in cases["train"]]),
            "config": asdict(cfg),
            "proxy_val_dice": {"start": log[0]["val_dice"], "end": log[-1]["val_dice"]},
        }
        card = candidate_card(group, weights, training)
        write_candidate(args.gate_dir / "weights" / group, card, weights)
        candidates[group] = card
        val_names[group] = [p.name for p in cases["val"]]
    if args.no_gate or not candidates:
        return 0
    for stale in (args.gate_dir / "weights").glob("*"):
        if stale.name not in candidates:
            shutil.rmtree(stale)
    command = f"make train-specialists (python -m train --groups {' '.join(sorted(candidates))})"
    results, rows = run_gate(val_names, args.data, args.gate_dir)
    settle(results, args.gate_dir / "weights", args.weights, command)
    write_report(results, rows, args.report.parent / "specialists", command)
    for r in results:
        verdict = "(group mean)" if r.modality == ALL else ("shipped" if r.accepted else "keeps LiteMedSAM")
        print(f"gate: {r.label}: DSC {r.base_dsc:.4f} -> {r.spec_dsc:.4f}, NSD {r.base_nsd:.4f} -> "
              f"{r.spec_nsd:.4f} on {r.cases} val cases: {verdict}", file=sys.stderr)  # fmt: skip
    print("gate: now `make export` ships the accepted specialists and their routes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
