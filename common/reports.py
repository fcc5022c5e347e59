"""Writing reports: Markdown (echoed to stdout) and CSV tables, folders created as needed."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path


def write_report(path: Path, lines: list[str]) -> None:
    """Write a Markdown report (creating its folder) and echo it to stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_csv(path: Path, rows: Iterable[Mapping[str, object]], fields: list[str] | None = None) -> None:
    """``rows`` as CSV with a header: ``fields``, else the first row's keys (no rows and no
    fields: an empty file)."""
    rows = list(rows)
    columns = fields if fields is not None else (list(rows[0]) if rows else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        if not columns:
            return
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
