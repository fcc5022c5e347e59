"""``python -m train.distill.kit``: pack what a distillation on a lent GPU needs into one folder.

A device machine (the `device` tool) reaches nothing: no PyPI, no ``../shared``, and it takes at
most 64 MiB of working tree. The kit holds, for ``python -m train.distill.gpu`` there:

- ``views.npz``: every train-split image of ``splits/public.csv`` (2D images; up to
  ``--per-volume`` evenly spread non-empty slices of each volume), preprocessed exactly as the
  app does (``quantised_input``: longest side 256, min-max, zero padding below and right) and
  stored as uint8, unaugmented (the GPU augments on the fly). Grey views keep one channel
  (``grey`` (Ng, S, S)), colour ones three (``colour`` (Nc, 3, S, S)); ``*_source`` names each
  view's ``<dims>Box_<modality>_<source>``. Validation cases are never packed: the student is
  judged back here, on the CPU, by ``python -m train.distill --probe``.
- ``teacher_encoder_fp16.pt``: LiteMedSAM's image encoder (TinyViT) state dict in fp16 (the
  targets' weights, and the teacher-at-size students' starting point).
- ``kit.json``: what was packed from what, and the sizes.

The kit lives under ``build/`` (ignored: the data's licences keep it out of git).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common.paths import SPLIT_CSV
from evaluation.datasets import DEFAULT_DATA, as_one_folder
from modeling.checkpoint import sha256_file, state_fp16
from train.distill.frame import SIZE
from train.distill.gpu import KIT_CARD, KIT_TEACHER, KIT_VIEWS
from train.distill.loop import base_decoder_model
from train.distill.samples import case_pairs, quantised_input, view_source
from train.samples import split_paths

# What may travel: the device tool's 64 MiB, less room for the project's own code (~4 MiB).
KIT_BUDGET_BYTES = 56 * 2**20


def is_grey(view: np.ndarray) -> bool:
    """(3, S, S) uint8 -> whether its three channels are equal (stored as one)."""
    return bool(np.array_equal(view[0], view[1]) and np.array_equal(view[0], view[2]))


def case_inputs(path: Path, per_volume: int) -> list[np.ndarray]:
    """The app's uint8 (3, S, S) encoder inputs of a case's images (2D) or chosen slices (3D)."""
    return [quantised_input(image) for image, _ in case_pairs(path, per_volume)]


def pack_views(cases: list[Path], per_volume: int) -> dict[str, np.ndarray]:
    """Every view of ``cases``, split into grey (Ng, S, S) and colour (Nc, 3, S, S) uint8 arrays,
    with each view's source (``grey_source`` (Ng,), ``colour_source`` (Nc,))."""
    grey, colour, grey_source, colour_source = [], [], [], []
    for i, path in enumerate(cases, start=1):
        source = view_source(path.name)
        for view in case_inputs(path, per_volume):
            if is_grey(view):
                grey.append(view[0])
                grey_source.append(source)
            else:
                colour.append(view)
                colour_source.append(source)
        if i % 20 == 0 or i == len(cases):
            print(f"kit: {i}/{len(cases)} cases, {len(grey)} grey + {len(colour)} colour views",
                  file=sys.stderr)  # fmt: skip
    return {
        "grey": np.stack(grey) if grey else np.zeros((0, SIZE, SIZE), np.uint8),
        "colour": np.stack(colour) if colour else np.zeros((0, 3, SIZE, SIZE), np.uint8),
        "grey_source": np.asarray(grey_source, dtype=str),
        "colour_source": np.asarray(colour_source, dtype=str),
    }


def write_kit(
    out: Path, views: dict[str, np.ndarray], teacher_state: dict[str, torch.Tensor], card: dict
) -> int:
    """Write the three kit files into ``out`` (each through a temp file, then renamed); the bytes."""
    out.mkdir(parents=True, exist_ok=True)
    tmp_views = out / f".{KIT_VIEWS}.tmp.npz"
    np.savez_compressed(tmp_views, **views)
    tmp_views.replace(out / KIT_VIEWS)
    tmp_teacher = out / f".{KIT_TEACHER}.tmp"
    torch.save(state_fp16(teacher_state), tmp_teacher)
    tmp_teacher.replace(out / KIT_TEACHER)
    size = (out / KIT_VIEWS).stat().st_size + (out / KIT_TEACHER).stat().st_size
    card = {**card, "bytes": size, "teacher_sha256": sha256_file(out / KIT_TEACHER)}
    (out / KIT_CARD).write_text(json.dumps(card, indent=2) + "\n")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.distill.kit", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA), help="data folders")
    parser.add_argument("--split", type=Path, default=SPLIT_CSV)
    parser.add_argument("--out", type=Path, default=Path("build/gpu_kit"))
    parser.add_argument("--per-volume", type=int, default=24, help="slices per training volume")
    parser.add_argument(
        "--budget-mib", type=float, default=KIT_BUDGET_BYTES / 2**20,
        help="refuse a kit larger than this (the device tool takes 64 MiB in all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not any(d.is_dir() for d in args.data):
        parser.error(f"no data folder among {args.data}")
    cases = split_paths(args.split, as_one_folder(args.data))["train"]
    if not cases:
        parser.error(f"no train-split case of {args.split} in {args.data}")
    views = pack_views(cases, args.per_volume)
    card = {
        "split": str(args.split), "data": [str(d) for d in args.data], "train_cases": len(cases),
        "per_volume": args.per_volume, "grey_views": len(views["grey"]), "colour_views": len(views["colour"]),
        "sources": sorted(set(views["grey_source"]) | set(views["colour_source"])),
    }  # fmt: skip
    size = write_kit(args.out, views, base_decoder_model().image_encoder.state_dict(), card)
    print(f"kit: wrote {args.out} ({size / 2**20:.1f} MiB: {card['grey_views']} grey + "
          f"{card['colour_views']} colour views of {len(cases)} cases, the teacher in fp16)",
          file=sys.stderr)  # fmt: skip
    if size > args.budget_mib * 2**20:
        print(f"kit: {size / 2**20:.1f} MiB is over the {args.budget_mib:.0f} MiB budget: "
              "lower --per-volume", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
