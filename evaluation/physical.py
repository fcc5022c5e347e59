"""The physical limit: encoder GFLOPs per slice vs this CPU's sustained fp32 GFLOP/s."""

from __future__ import annotations

import time

import numpy as np


def measured_gflops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """Sustained fp32 GFLOP/s of a large matmul (numpy's BLAS, all cores); best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9
