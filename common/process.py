"""Running a stage's CLI (``python -m app``, ``python -m baseline``, ...) as a fresh process and
timing it: the one place the harnesses (bench, startup, memcheck, eval runner, cohort bench,
container check) build the command line and read wall time, peak RSS and exit status."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRun:
    seconds: float  # wall clock, start to exit
    peak_rss_mb: float  # the process's own high-water mark (os.wait4), not its children's
    returncode: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def cli_command(module: str, inputs: Path, outputs: Path, *extra: str) -> list[str]:
    """``python -m <module> -i inputs -o outputs [extra]`` with this interpreter."""
    return [sys.executable, "-m", module, "-i", str(inputs), "-o", str(outputs), *extra]


def timed_process(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, log: Path | None = None
) -> ProcessRun:
    """Run ``cmd`` to its end: output discarded, or appended to ``log``."""
    t0 = time.perf_counter()
    sink = log.open("a") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=sink, stderr=sink)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if log is not None:
            sink.close()  # type: ignore[union-attr]
    return ProcessRun(time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status))
