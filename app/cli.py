"""``python -m app -i INPUT_DIR -o OUTPUT_DIR``: segment every ``*.npz`` in INPUT_DIR.

Each case is written to ``OUTPUT_DIR/<same name>.npz`` (key ``segs``, uint16). A bad case is
reported by name on stderr and skipped; the others still run. Exit code: 0 all cases of the
shard written (or skipped as done), 1 some case failed, 2 the folders, models or shard settings
are unusable. Cohorts: ``--num-shards N --shard-index K`` (or the scheduler's variables, see
app/shards.py) runs one shard; ``--skip-done`` skips finished outputs; every case's result is
appended to ``OUTPUT_DIR/.medseg-results[-shard-K-of-N].jsonl``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.inputs import scan_inputs
from app.npz_io import remove_stale_temps
from app.pipeline import run_case
from app.precision import DEFAULT_PRECISION, MODES, mode_from
from app.sessions import (
    SessionCache,
    cache_dir_from,
    contract_mismatches,
    create_core,
    decoder_batch_from,
    decoder_window_from,
    default_threads,
    read_manifest,
)
from app.shards import append_record, shard_from

log = logging.getLogger("app")

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# What --warmup says of the graphs OpenVINO loaded from the cache rather than compiled (a second
# warm-up, or one inside the image, finds every graph there: `make container-test` checks it).
WARM_HITS = "loaded from the cache"
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-i", "--input", type=Path, help="folder of *.npz cases")
    parser.add_argument("-o", "--output", type=Path, help="folder for the segmentations")
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="compile every model into the cache and exit (container build step)",
    )
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR, help="exported models folder")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="OpenVINO compiled-model cache (default: $SEG_CACHE_DIR, else "
        "~/.cache/medseg-appliance/openvino; the blobs go in a subfolder named by the compile "
        "settings); 'none' disables it",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=None,
        help="largest decompressed image admitted, in bytes, checked before reading (default: "
        "$SEG_MAX_IMAGE_BYTES, else 1 GiB: the largest admitted cases stay far under 8 GB)",
    )
    parser.add_argument(
        "--precision",
        choices=MODES,
        default=None,
        help="'auto': bf16 on the routes whose gate passed, on a CPU with native bf16, else fp32; "
        "'f32': fp32 everywhere, masks independent of the CPU (default: $SEG_PRECISION, else auto)",
    )
    parser.add_argument(
        "--decoder-batch",
        default=None,
        help="boxes per decoder call where one model serves many boxes of an image; 1: one box per "
        "call (default: $SEG_DECODER_BATCH, else 8)",
    )
    parser.add_argument(
        "--decoder-window",
        default=None,
        help="where boxes are decoded in batches, upscale each box's logits on a window of this "
        "many embedding cells per side around it (exact inside; a mask reaching the window's rim "
        "is decoded whole); 0: never (default: $SEG_DECODER_WINDOW, else 16)",
    )
    parser.add_argument("--num-shards", type=int, default=None, help="split the folder into N shards")
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="the shard to run, 0..N-1 (default: JOB_COMPLETION_INDEX + SEG_NUM_SHARDS, or "
        "SLURM_ARRAY_TASK_ID + SLURM_ARRAY_TASK_COUNT; else the whole folder)",
    )
    parser.add_argument("--skip-done", action="store_true", help="skip cases whose output is complete")
    parser.add_argument(
        "--results",
        default="auto",
        help="JSON-lines log of every case's result: a path, 'none', or 'auto' "
        "(OUTPUT_DIR/.medseg-results[-shard-K-of-N].jsonl)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v progress, -vv details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")
    return parser


def _setting(
    parser: argparse.ArgumentParser, name: str, parse: Callable[[str | None], T], arg: str | None
) -> T:
    """``parse(arg)`` (a flag's value, else its environment variable), a ValueError being a usage
    error naming ``name`` (exit 2)."""
    try:
        return parse(arg)
    except ValueError as exc:
        parser.error(f"{name}: {exc}")
        raise  # parser.error exits; never reached


def _check_dirs(input_dir: Path, output_dir: Path) -> str | None:
    if not input_dir.is_dir():
        return f"input folder {input_dir} does not exist"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create output folder {output_dir}: {exc}"
    if not os.access(output_dir, os.W_OK):
        return f"output folder {output_dir} is not writable"
    return None


def warmup(
    models: Path, cache_arg: Path | None, precision_mode: str, decoder_batch: int = 1, window: int = 0
) -> int:
    """Check every model's IR against the manifest (its rt_info), then compile it once at every
    precision this host would run it at, so later runs load compiled blobs (each precision in
    its own subfolder, ``precision_cache``); a model a 2D image
    can reach also gets its decoder for ``decoder_batch`` boxes per call (many-box images), on
    ``window``-cell windows when that is set.
    Exit 2 when the IR and the manifest disagree."""
    cache = cache_dir_from(cache_arg)
    if cache is None or not os.access(cache, os.W_OK):
        log.error("--warmup needs a writable cache folder (--cache-dir or SEG_CACHE_DIR)")
        return 2
    core = create_core(cache)
    problems = [p for entry in read_manifest(models).values() for p in contract_mismatches(core, entry)]
    if problems:
        print(
            "app: the IR and the manifest disagree (re-run `make export`):",
            *problems,
            sep="\n  ",
            file=sys.stderr,
        )
        return 2
    sessions = SessionCache(core, models, default_threads(), precision_mode)
    precisions = {DEFAULT_PRECISION} | {sessions.precision_for(*route) for route in sessions.precisions}
    for key in sessions.keys:
        batch = decoder_batch if key in sessions.keys_2d else 1
        for precision in sorted(precisions):
            t0 = time.perf_counter()
            session = sessions.get(key, precision)
            session.compile_all(batch, window)
            graphs, hits = session.cache_hits()
            print(f"app: {key} ({precision}) in {cache}: {graphs} graphs, {hits} {WARM_HITS}, "
                  f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    precision_mode = _setting(parser, "SEG_PRECISION", mode_from, args.precision)
    decoder_batch = _setting(
        parser, "--decoder-batch / SEG_DECODER_BATCH", decoder_batch_from, args.decoder_batch
    )
    window = _setting(
        parser, "--decoder-window / SEG_DECODER_WINDOW", decoder_window_from, args.decoder_window
    )
    if args.warmup:
        return warmup(args.models, args.cache_dir, precision_mode, decoder_batch, window)
    if args.input is None or args.output is None:
        parser.error("-i/--input and -o/--output are required")
    level = (
        logging.ERROR if args.quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    )
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)
    problem = _check_dirs(args.input, args.output)
    if problem:
        log.error(problem)
        return 2
    try:
        shard = shard_from(args.shard_index, args.num_shards)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    for stale in remove_stale_temps(args.output):
        log.info("removed %s, left by an interrupted run", stale.name)
    found, unread = scan_inputs(args.input)
    cases = [p for p in found if shard.holds(p.name)]
    if shard.count > 1:
        log.info("shard %d of %d: %d of %d cases", shard.index, shard.count, len(cases), len(found))
    t0 = time.perf_counter()
    try:
        core = create_core(cache_dir_from(args.cache_dir))
        sessions = SessionCache(core, args.models, default_threads(), precision_mode, decoder_batch, window)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    results = {"auto": args.output / shard.results_name, "none": None}.get(args.results, Path(args.results))
    counts = {"done": 0, "failed": 0, "skipped": 0}
    for path in cases:
        record = run_case(path, args.output, sessions, args.max_image_bytes, skip_done=args.skip_done)
        counts[record.status] += 1
        if results is not None:
            append_record(results, record)
    print(summary_text(counts, unread, time.perf_counter() - t0), file=sys.stderr)
    return 1 if counts["failed"] else 0


def summary_text(counts: dict[str, int], unread: list[tuple[str, str]], seconds: float) -> str:
    """``app: 3 done, 1 failed, 2.5 s`` and, when the folder held other entries, what was not
    read and why (never skipped silently)."""
    text = (
        f"app: {counts['done']} done, {counts['failed']} failed"
        + (f", {counts['skipped']} skipped (done before)" if counts["skipped"] else "")
        + f", {seconds:.1f} s"
    )
    if unread:
        text += "\napp: not read: " + "; ".join(f"{name} ({why})" for name, why in unread)
    return text
