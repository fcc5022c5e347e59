"""Inference precision per route: fp32, or bf16 where its validation gate passed and the CPU runs
bf16 natively.

bf16 halves the encoder's arithmetic width: on CPUs with AVX512_BF16 or AMX the TinyViT encoder
runs up to 2.5x faster (Intel Xeon, AMX, `make precision-probe`), and the masks move a little
(`make precision-gate` measures how much, per route and source). A route runs either every graph
at bf16 (``bf16``) or, where that moved its masks too far, the encoder alone (``bf16_encoder``:
the decoder stays fp32). On a CPU without native bf16, OpenVINO would emulate it or fall back;
we never ask it to: such a host runs fp32 everywhere, so its masks are the fp32 product's
(LiteMedSAM's exactly wherever no specialist serves). The manifest's ``precision`` rows (written
by ``make export`` from ``weights/precision.json``, the gate's decisions) name the routes that
may run a narrower precision and which; any other route, and any case whose modality is
unknown, runs fp32."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import openvino as ov


@dataclass(frozen=True)
class Precision:
    """What a precision name compiles each graph at, and the CPU plugin's capability that runs
    its narrower type natively (``OPTIMIZATION_CAPABILITIES``)."""

    encoder: ov.Type
    decoder: ov.Type
    capability: str


# Precision name -> its graphs' inference types. ``bf16_encoder``: the encoder (nearly all of a
# case's arithmetic) at bf16, the decoder at fp32, for a route whose masks move too much when the
# decoder runs bf16 as well.
PRECISIONS: dict[str, Precision] = {
    "f32": Precision(ov.Type.f32, ov.Type.f32, "FP32"),
    "bf16": Precision(ov.Type.bf16, ov.Type.bf16, "BF16"),
    "bf16_encoder": Precision(ov.Type.bf16, ov.Type.f32, "BF16"),
}
GRAPHS = ("encoder", "decoder")
DEFAULT_PRECISION = "f32"
PRECISION_FILE = "precision.json"  # in weights/: the precision gate's decisions, read by the export
MODES = ("auto", "f32")
DEFAULT_MODE = "auto"

# (spatial dims, canonical modality) -> precision; rows only where one other than fp32 is allowed.
PrecisionTable = Mapping[tuple[int, str], str]


def inference_type(precision: str, graph: str = "encoder") -> ov.Type:
    """The OpenVINO type ``graph`` (encoder or decoder) compiles at under a precision name;
    ValueError listing the valid names."""
    if precision not in PRECISIONS or graph not in GRAPHS:
        msg = f"unknown precision {precision!r} for a {graph}; valid: {sorted(PRECISIONS)} for {list(GRAPHS)}"
        raise ValueError(msg)
    return getattr(PRECISIONS[precision], graph)


def native_precisions(capabilities: list[str]) -> set[str]:
    """The precisions a CPU runs natively, from its plugin's ``OPTIMIZATION_CAPABILITIES``."""
    return {name for name, precision in PRECISIONS.items() if precision.capability in capabilities}


def host_precisions(core: ov.Core) -> set[str]:
    """:func:`native_precisions` of this host's CPU plugin."""
    return native_precisions(list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))


def precision_table(rows: list[dict[str, object]]) -> dict[tuple[int, str], str]:
    """The manifest's ``precision`` rows ({dims, modality, precision}) as a table; rejects an
    unknown precision and a route named twice."""
    table: dict[tuple[int, str], str] = {}
    for row in rows:
        dims, mod, precision = int(row["dims"]), str(row["modality"]), str(row["precision"])
        inference_type(precision)
        if (dims, mod) in table:
            msg = f"precision row ({dims}D, {mod}) is given twice"
            raise ValueError(msg)
        table[(dims, mod)] = precision
    return table


def mode_from(arg: str | None) -> str:
    """``--precision``, else ``SEG_PRECISION``, else ``auto``; ValueError on anything else."""
    mode = arg or os.environ.get("SEG_PRECISION") or DEFAULT_MODE
    if mode not in MODES:
        msg = f"precision mode {mode!r} is not one of {list(MODES)}"
        raise ValueError(msg)
    return mode


def case_precision(
    dims: int, modality: str | None, table: PrecisionTable, mode: str, native: set[str]
) -> str:
    """The precision a case runs at: its route's row under ``auto`` when the host runs that
    precision natively, else fp32."""
    if mode != "auto" or modality is None:
        return DEFAULT_PRECISION
    wanted = table.get((dims, modality), DEFAULT_PRECISION)
    return wanted if wanted in native else DEFAULT_PRECISION
