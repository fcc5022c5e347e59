"""``make cohort-bench DATA=<folder>``: cohort throughput on this machine, four ways.

On the same sample of cases (``--per-group`` per modality x dims group of DATA, sorted names):
- ``per-case processes``: one fresh ``python -m app`` per case, one after another (the challenge's
  protocol: every case pays interpreter start, imports and model load);
- ``one process``: one ``python -m app`` over the whole folder (models loaded once);
- ``N shard processes``: N ``python -m app --num-shards N --shard-index K`` at once, each with
  cores / N OpenVINO threads (what a Kubernetes Indexed Job or a SLURM array does per node);
- ``Dask, N workers``: ``python -m cohort --workers N`` (cores / N threads each).
Every mode starts from an empty output folder and a warm compiled-model cache. Reports cases per
minute, the wall time, and the per-case overhead (wall minus the cases' own seconds from the
results log, per case), then, on paper, the wall-clock hours of a 10^5-case cohort on k machines
like this one at the best measured rate. Writes ``reports/cohort.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common.machine import describe
from common.process import cli_command
from common.reports import write_report
from evaluation.bench import sample_cases
from evaluation.datasets import DEFAULT_DATA

COHORT_SIZE = 100_000
MACHINES = (1, 8, 64)


@dataclass(frozen=True)
class Mode:
    name: str
    wall: float
    cases: int
    case_seconds: float  # sum of the cases' own seconds (results logs)
    failed: int
    longest: float  # the slowest case's own seconds: a lower bound on any parallel wall time
    workers: int = 1  # processes running cases at once

    @property
    def per_minute(self) -> float:
        return 60 * self.cases / self.wall

    @property
    def overhead(self) -> float:
        """Process-seconds per case not spent in a case (start-up, imports, loads, scheduling,
        and with several workers the time one waits for the other's last case)."""
        return (self.wall * self.workers - self.case_seconds) / self.cases


def app_cmd(inputs: Path, outputs: Path, *extra: str) -> list[str]:
    return cli_command("app", inputs, outputs, "-q", *extra)


def results_of(outputs: Path) -> list[dict]:
    """Every per-case record under ``outputs`` (all shards' logs)."""
    return [
        json.loads(line)
        for log in sorted(outputs.glob(".medseg-results*.jsonl"))
        for line in log.read_text().splitlines()
        if line.strip()
    ]


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def timed(commands: list[list[str]], env: dict[str, str]) -> float:
    """Wall seconds of ``commands`` run at once (exit 1, some case failed, is counted from the
    results; anything else stops the measurement)."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands
    ]
    for proc, cmd in zip(procs, commands, strict=True):
        _, err = proc.communicate()
        if proc.returncode not in (0, 1):
            msg = f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {err.decode()[-500:]}"
            raise RuntimeError(msg)
    return time.perf_counter() - t0


def mode(name: str, wall: float, outputs: Path, workers: int = 1) -> Mode:
    records = results_of(outputs)
    failed = sum(r["status"] == "failed" for r in records)
    seconds = [r["seconds"] for r in records]
    mode = Mode(name, wall, len(records), sum(seconds), failed, max(seconds, default=0.0), workers)
    print(
        f"cohort-bench: {name}: {mode.cases} cases in {wall:.1f} s ({mode.per_minute:.1f}/min)",
        file=sys.stderr,
    )
    return mode


def per_case_processes(inputs: Path, work: Path, env: dict[str, str]) -> Mode:
    """One fresh process per case, sequential; the records of all go to one log."""
    outputs, single = fresh(work / "per_case_out"), work / "single_in"
    wall = 0.0
    for case in sorted(inputs.glob("*.npz")):
        fresh(single)
        (single / case.name).symlink_to(case.resolve())
        wall += timed([app_cmd(single, outputs)], env)
    return mode("per-case processes", wall, outputs)


def run_modes(inputs: Path, work: Path, workers: int) -> list[Mode]:
    cores = os.cpu_count() or 1
    env = {**os.environ}
    threads = {**env, "SEG_THREADS": str(max(1, cores // workers))}
    modes = [per_case_processes(inputs, work, env)]
    out = fresh(work / "one_out")
    modes.append(mode("one process", timed([app_cmd(inputs, out)], env), out))
    out = fresh(work / "shards_out")
    shards = [
        app_cmd(inputs, out, "--num-shards", str(workers), "--shard-index", str(k)) for k in range(workers)
    ]
    modes.append(mode(f"{workers} shard processes", timed(shards, threads), out, workers))
    out = fresh(work / "dask_out")
    dask = cli_command("cohort", inputs, out, "--workers", str(workers))
    modes.append(mode(f"Dask, {workers} workers", timed([dask], env), out, workers))
    return modes


def report_lines(modes: list[Mode], cases: int, data: list[Path], per_group: int) -> list[str]:
    best = max(modes, key=lambda m: m.per_minute)
    lines = [
        "# Cohort throughput",
        "",
        f"Command: `make cohort-bench` (`python -m evaluation.cohort_bench --per-group {per_group}`). "
        f"Machine: {describe()}. Cases: {cases} ({per_group} per modality x dims group of "
        f"{', '.join(map(str, data))}, sorted names), warm compiled-model cache, empty outputs.",
        "",
        "| mode | cases | failed | wall s | cases / min | sum of cases' s | slowest case s | "
        "overhead s / case |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in modes:
        lines.append(
            f"| {m.name} | {m.cases} | {m.failed} | {m.wall:.1f} | {m.per_minute:.1f} | "
            f"{m.case_seconds:.1f} | {m.longest:.1f} | {m.overhead:.2f} |"
        )
    lines += [
        "",
        "Cases' seconds are each case's own time from the results log. Overhead: process-seconds "
        "per case not spent in a case (wall x processes running at once, minus the cases' sum): "
        "interpreter start, imports and model loading for a fresh process per case; scheduling for "
        "Dask; and, with several workers, the idle time while one finishes the last case. Several "
        "workers on one machine share its cores (threads = cores / workers), so each case runs "
        "slower, and the wall time can be no shorter than the slowest case: on a sample this small "
        "that bound decides.",
        "",
        f"## On paper: {COHORT_SIZE:,} cases of this mix",
        "",
        f"At the best measured rate ({best.name}, {best.per_minute:.1f} cases / min per machine "
        "like this one):",
        "",
        "| machines | wall-clock hours |",
        "|---|---|",
    ]
    for k in MACHINES:
        lines.append(f"| {k} | {COHORT_SIZE / (best.per_minute * k) / 60:.1f} |")
    lines += [
        "",
        "Assumes the cases' mix of this sample and machines that do not share cores; shared "
        "storage bandwidth and a scheduler's own limits are not measured here.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.cohort_bench", description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", default=list(DEFAULT_DATA))
    parser.add_argument("--per-group", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="shard processes and Dask workers")
    parser.add_argument("--out", type=Path, default=Path("reports/cohort.md"))
    args = parser.parse_args(argv)
    data = [d for d in args.data if d.is_dir()]
    if not data:
        parser.error(f"no data folder among {args.data}")
    cases = [p for d in data for p in sample_cases(d, args.per_group)]
    with tempfile.TemporaryDirectory(prefix="cohort_bench_") as tmp:
        inputs = fresh(Path(tmp) / "in")
        for case in cases:
            (inputs / case.name).symlink_to(case.resolve())
        subprocess.run([sys.executable, "-m", "app", "--warmup"], check=True, capture_output=True)
        modes = run_modes(inputs, Path(tmp), args.workers)
    write_report(args.out, report_lines(modes, len(cases), data, args.per_group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
