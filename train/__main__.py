"""``make train-specialists``: per modality group, fine-tune LiteMedSAM's mask decoder.

For every group of ``train/groups.py``: cache the frozen encoder's embeddings of the group's
train and validation cases (``splits/public.csv``), fine-tune the decoder (resumable), and
write ``reports/train/<group>/{log.csv,loss.png}`` and ``build/train/<group>/decoder_fp16.pt``.
The validation Dice logged here is a fast proxy (model frame, tight boxes, cached slices);
the acceptance gate is ``make eval`` on the validation split with the exported specialist.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import fields
from pathlib import Path

import torch

from app.sessions import SessionCache, create_core
from export.specs import get_spec, load_model
from train.data import load_pool
from train.groups import GROUPS, group_of
from train.loop import TrainConfig, plot_log, train_decoder, write_log
from train.samples import build_cache


def split_cases(split_csv: Path, data: Path, group: str) -> dict[str, list[Path]]:
    """{'train': [...], 'val': [...]} case paths of ``group`` present in ``data``."""
    out: dict[str, list[Path]] = {"train": [], "val": []}
    with split_csv.open() as fh:
        for row in csv.DictReader(fh):
            path = data / row["case"]
            if group_of(row["case"]) == group and path.is_file():
                out[row["split"]].append(path)
    return out


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
    for f in fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"no data folder {args.data}")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    torch.manual_seed(cfg.seed)
    session = SessionCache(create_core(None), args.models).get("lite_medsam")
    for group in args.groups:
        cases = split_cases(args.split, args.data, group)
        if not cases["train"] or not cases["val"]:
            print(f"train: {group}: no train or no validation cases, skipped", file=sys.stderr)
            continue
        pools = {
            part: load_pool(build_cache(paths, args.cache / group, session, args.per_case))
            for part, paths in cases.items()
        }
        print(f"train: {group}: {len(cases['train'])} train cases ({len(pools['train'].objects)} objects), "
              f"{len(cases['val'])} val ({len(pools['val'].objects)})", file=sys.stderr)  # fmt: skip
        model = load_model(get_spec("lite_medsam"))
        log = train_decoder(model, pools["train"], pools["val"], args.out / group, cfg)
        weights = args.out / group / "decoder_fp16.pt"
        torch.save({k: v.half() for k, v in model.mask_decoder.state_dict().items()}, weights)
        report = args.report / group
        report.mkdir(parents=True, exist_ok=True)
        write_log(log, report / "log.csv")
        plot_log(log, report / "loss.png", group)
        print(f"train: {group}: wrote {weights}, {report}/log.csv, loss.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
