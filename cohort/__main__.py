"""``python -m cohort -i IN -o OUT [--workers N | --scheduler ADDRESS]``: segment a folder of
cases on Dask. Exit code: 0 every case written (or skipped as done), 1 some case failed (listed
by name), 2 the folders, models or cluster are unusable."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from distributed import Client, LocalCluster

from app.cli import DEFAULT_MODELS_DIR
from app.npz_io import remove_stale_temps
from app.sessions import read_manifest
from app.shards import Record
from cohort.runner import RESULTS_NAME, ProgressLine, input_cases, run_cohort
from cohort.worker import SessionsPlugin


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cohort", description=__doc__)
    parser.add_argument("-i", "--input", type=Path, required=True, help="folder of *.npz cases")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the label maps")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="OpenVINO threads per worker (default: local cores / workers; with --scheduler OpenVINO's)",
    )  # fmt: skip
    parser.add_argument("--memory-limit", default="auto", help="per local worker (Dask syntax, e.g. 4GB)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="OpenVINO compiled-model cache (as python -m app: $SEG_CACHE_DIR, else ~/.cache/...; 'none')",
    )  # fmt: skip
    parser.add_argument("--skip-done", action="store_true", help="skip cases whose output is complete")
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=None,
        help="as python -m app (default $SEG_MAX_IMAGE_BYTES, else 1 GiB)",
    )
    parser.add_argument(
        "--results", default="auto", help=f"JSON-lines log: auto (OUT/{RESULTS_NAME}), none, PATH"
    )
    return parser


def setup_problem(args: argparse.Namespace) -> str | None:
    """What makes the run impossible before any worker starts (None: nothing)."""
    if not args.input.is_dir():
        return f"input folder {args.input} does not exist"
    if args.workers < 1:
        return f"--workers {args.workers}: need at least 1"
    try:
        read_manifest(args.models)
    except (FileNotFoundError, ValueError) as exc:
        return str(exc)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"output folder {args.output}: {exc.strerror or exc}"
    return None


def connect(args: argparse.Namespace, stack: ExitStack) -> Client:
    """A client of the given scheduler, or of a local cluster of ``--workers`` processes with one
    task each and ``cores // workers`` OpenVINO threads (workers x threads = cores)."""
    if args.scheduler:
        return stack.enter_context(Client(args.scheduler, timeout="20s"))
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.workers)
    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=args.memory_limit,
        dashboard_address=None,
    )
    stack.enter_context(cluster)
    return stack.enter_context(Client(cluster))


def report(records: list[Record], stream=sys.stderr) -> int:  # noqa: ANN001
    counts = {s: sum(r.status == s for r in records) for s in ("done", "failed", "skipped")}
    for r in sorted((r for r in records if r.status == "failed"), key=lambda r: r.case):
        print(f"cohort: failed: {r.case}: {r.error}", file=stream)
    print(
        f"cohort: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped", file=stream
    )
    return 1 if counts["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = setup_problem(args)
    if problem:
        print(f"cohort: {problem}", file=sys.stderr)
        return 2
    remove_stale_temps(args.output)
    cases = input_cases(args.input)
    results = {"auto": args.output / RESULTS_NAME, "none": None}.get(args.results, Path(args.results))
    with ExitStack() as stack:
        try:
            client = connect(args, stack)
        except OSError as exc:
            print(f"cohort: cannot reach the Dask scheduler {args.scheduler}: {exc}", file=sys.stderr)
            return 2
        client.register_plugin(SessionsPlugin(args.models.resolve(), args.cache_dir, args.threads))
        progress = ProgressLine(len(cases))
        records = run_cohort(
            client,
            cases,
            args.output,
            max_image_bytes=args.max_image_bytes,
            skip_done=args.skip_done,
            results=results,
            on_record=progress.update,
        )
    return report(records)


if __name__ == "__main__":
    raise SystemExit(main())
