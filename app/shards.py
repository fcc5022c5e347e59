"""The shard contract: which cases of a folder one process segments, what is already done, and
the per-case results log, so one container image can run a cohort as N independent tasks
(Kubernetes Indexed Job, SLURM array, or N processes on a workstation).

- A case belongs to shard ``sha256(file name) mod N``: every case in exactly one shard, the same
  shard whatever else the folder holds (adding cases never moves the others).
- The shard comes from ``--num-shards N --shard-index K``, else from the scheduler's environment
  (SHARD_ENV): Kubernetes' ``JOB_COMPLETION_INDEX`` with ``SEG_NUM_SHARDS``, SLURM's
  ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (offset by ``SLURM_ARRAY_TASK_MIN``).
- ``--skip-done``: a case whose output exists and is a readable npz holding ``segs`` is skipped
  (outputs are written by atomic rename, so an existing one is complete).
- Results: one JSON line per case (case, status, seconds, model, error) appended to
  ``<output>/.medseg-results[-shard-K-of-N].jsonl`` (one file per shard: no two processes append
  to the same file).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            msg = f"shard index {self.index} is not in 0..{self.count - 1} (of {self.count} shards)"
            raise ValueError(msg)

    def holds(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index

    @property
    def results_name(self) -> str:
        suffix = "" if self.count == 1 else f"-shard-{self.index}-of-{self.count}"
        return f".medseg-results{suffix}.jsonl"


ALL = Shard(0, 1)

# Scheduler -> (index variable, count variable, offset variable or None).
SHARD_ENV: dict[str, tuple[str, str, str | None]] = {
    "kubernetes": ("JOB_COMPLETION_INDEX", "SEG_NUM_SHARDS", None),
    "slurm": ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
}


def shard_of(name: str, count: int) -> int:
    """The shard of a case file name among ``count``: stable, independent of the folder."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) % count


def shard_from(index: int | None, count: int | None, env: Mapping[str, str] = os.environ) -> Shard:
    """The shard from the flags, else the first scheduler whose variables are set, else ALL."""
    if index is not None or count is not None:
        if index is None or count is None:
            msg = "--num-shards and --shard-index go together"
            raise ValueError(msg)
        return Shard(index, count)
    for scheduler, (index_var, count_var, offset_var) in SHARD_ENV.items():
        if index_var in env and count_var in env:
            offset = int(env.get(offset_var, "0")) if offset_var else 0
            try:
                return Shard(int(env[index_var]) - offset, int(env[count_var]))
            except ValueError as exc:
                msg = f"{scheduler} shard variables {index_var}/{count_var}: {exc}"
                raise ValueError(msg) from None
    return ALL


def is_done(output: Path) -> bool:
    """True when ``output`` is a readable npz holding ``segs`` (written by atomic rename)."""
    try:
        with zipfile.ZipFile(output) as zf:
            return "segs.npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


@dataclass(frozen=True)
class Record:
    case: str
    status: str  # done | failed | skipped
    seconds: float
    model: str | None = None
    error: str | None = None


def append_record(log: Path, record: Record) -> None:
    """One JSON line per case, flushed at once (a killed run keeps what it finished)."""
    with log.open("a") as fh:
        fh.write(json.dumps(asdict(record)) + "\n")
        fh.flush()


def read_records(log: Path) -> list[Record]:
    if not log.is_file():
        return []
    return [Record(**json.loads(line)) for line in log.read_text().splitlines() if line.strip()]
