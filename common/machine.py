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


# The instruction-set extensions that choose torch's and OpenVINO's CPU kernels (and so, through
# constant folding, the last bits of an exported IR).
KERNEL_ISA = (
    "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"
)  # fmt: skip


def cpu_isa() -> str:
    """The ``KERNEL_ISA`` flags this CPU has, in that order, comma-joined ("" where unknown)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return ",".join(f for f in KERNEL_ISA if f in flags)


def describe() -> str:
    return f"{cpu_model_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
