"""Submit a folder's cases to a Dask client and collect their records as they finish."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from distributed import Client, as_completed

from app.shards import Record, append_record, is_done
from cohort.worker import segment_task

RESULTS_NAME = ".medseg-results.jsonl"
TASK_RETRIES = 1  # a task that raised (not a bad case: those return a record) runs once more


def input_cases(folder: Path) -> list[Path]:
    """The ``*.npz`` files of ``folder``, sorted by name (what ``python -m app`` segments)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".npz" and p.is_file())


class ProgressLine:
    """``[#####.....] 12/40 cases, 1 failed, 9.6 cases/min`` on one rewritten stderr line (a
    terminal) or one line per tenth of the cohort (a log file)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self.tty = stream.isatty()
        self._last_tenth = -1

    def text(self) -> str:
        filled = self.width * self.done // max(1, self.total)
        minutes = (time.perf_counter() - self.t0) / 60
        rate = self.done / minutes if minutes > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {self.done}/{self.total} cases, {self.failed} failed, {rate:.1f} cases/min"

    def update(self, record: Record) -> None:
        self.done += 1
        self.failed += record.status == "failed"
        if self.tty:
            end = "\n" if self.done == self.total else ""
            self.stream.write("\r" + self.text() + end)
        elif (tenth := 10 * self.done // max(1, self.total)) != self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(self.text() + "\n")
        self.stream.flush()


def record_of(future: object) -> Record:
    """A finished future's record; a task that failed outright (e.g. its worker died more often
    than the scheduler allows) becomes a failed record naming the case."""
    case = future.key.split("/", 1)[1]  # type: ignore[attr-defined]
    if future.status == "finished":  # type: ignore[attr-defined]
        return Record(**future.result())  # type: ignore[attr-defined]
    exc = future.exception()  # type: ignore[attr-defined]
    return Record(case, "failed", 0.0, error=f"{type(exc).__name__}: {exc}")


def run_cohort(
    client: Client,
    cases: list[Path],
    out_dir: Path,
    *,
    max_image_bytes: int | None = None,
    skip_done: bool = False,
    results: Path | None = None,
    on_record: Callable[[Record], None] = lambda _: None,
) -> list[Record]:
    """Segment ``cases`` into ``out_dir`` on ``client``'s workers; every case's record (skipped
    ones included), in completion order, appended to ``results`` as it arrives."""
    records: list[Record] = []

    def keep(record: Record) -> None:
        records.append(record)
        if results is not None:
            append_record(results, record)
        on_record(record)

    todo = []
    for path in cases:
        if skip_done and is_done(out_dir / path.name):
            keep(Record(path.name, "skipped", 0.0))
        else:
            todo.append(path)
    futures = [
        client.submit(
            segment_task,
            str(path.resolve()),
            str(out_dir.resolve()),
            max_image_bytes,
            key=f"segment/{path.name}",
            retries=TASK_RETRIES,
            pure=False,
        )
        for path in todo
    ]
    for future in as_completed(futures):
        keep(record_of(future))
        future.release()
    return records
