"""In-process timing shared by the speed probes: calls timed in turn, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternating_medians(
    calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Name -> median wall seconds of ``repeats`` calls. Every round calls each in turn (a drift
    of a shared, noisy machine hits all alike); ``warmup`` rounds first, not timed."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}
