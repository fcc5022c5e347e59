"""``make batching``: does batching slices through the encoder pay on this CPU?

Times the exported encoder IR (fp32, the runtime's compile settings) at batch 1, 2, 4 and 8 on
random 256x256 inputs, interleaved round by round; reports the median seconds per image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from app.routing import DEFAULT_MODEL_KEY
from app.sessions import SessionCache, create_core, default_threads
from common.machine import describe
from common.paths import MODELS
from common.reports import write_report

BATCHES = (1, 2, 4, 8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.batching", description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--key", default=DEFAULT_MODEL_KEY)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/batching.md"))
    args = parser.parse_args(argv)
    session = SessionCache(create_core(None), args.models, default_threads()).get(args.key)
    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, 3, 256, 256), dtype=np.float32) for b in BATCHES}
    for b in BATCHES:
        session.encode(inputs[b])  # first call allocates for the shape
    per_image: dict[int, list[float]] = {b: [] for b in BATCHES}
    for _ in range(args.rounds):
        for b in BATCHES:
            t0 = time.perf_counter()
            session.encode(inputs[b])
            per_image[b].append((time.perf_counter() - t0) / b)
    base = statistics.median(per_image[1])
    lines = [
        f"# Encoder batching ({args.key})",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make batching`, {time.strftime('%Y-%m-%d')}, {args.rounds} rounds, "
        "median seconds per image.",
        "",
        "| batch | s / image | vs batch 1 |",
        "|---|---|---|",
        *(
            f"| {b} | {statistics.median(v):.3f} | {statistics.median(v) / base:.2f}x |"
            for b, v in per_image.items()
        ),
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
