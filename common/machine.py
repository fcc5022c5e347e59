"""What machine a measurement ran on: CPU model, logical CPUs, Python."""

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
