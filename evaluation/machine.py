"""What machine a measurement ran on (CPU model, logical CPUs, Python), and writing a report."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    return f"{cpu_model_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def write_report(path: Path, lines: list[str]) -> None:
    """Write a Markdown report (creating its folder) and echo it to stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
