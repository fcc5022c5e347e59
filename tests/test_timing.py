"""The shared in-process timer of the speed probes."""

from __future__ import annotations

import time

from evaluation.timing import alternating_medians


def test_alternating_medians_times_each_call_and_skips_the_warmup() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("slow")
        time.sleep(0.02)

    def fast() -> None:
        order.append("fast")

    got = alternating_medians({"slow": slow, "fast": fast}, repeats=3, warmup=1)
    assert order == ["slow", "fast"] * 4  # called in turn, warm-up round included
    assert got["slow"] >= 0.02 > got["fast"]
