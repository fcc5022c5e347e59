"""Modality routing: case file name + dims -> modality -> model key.

Names follow ``<2DBox|3DBox>_<Modality>_<source>_<id>.npz``. Matching is on whole tokens
(split on ``_``, ``.`` and spaces, case-insensitive), never on substrings, so ``OCT`` can not
be read as ``CT`` and ``MR`` does not match inside ``MRI_smear``. The modality token right after
the prefix is tried first, then every other token left to right; no match -> DEFAULT_MODEL_KEY.

The routing table itself, ``(dims, modality) -> model key``, is data: ``make export`` writes it
into ``models/manifest.json`` (``routes``) from the specialists that passed their validation gate
(``weights/<key>/card.json``). Any (dims, modality) without a row goes to DEFAULT_MODEL_KEY, so
a 3D CT specialist never captures a 2D CT slice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Token (lower case) -> canonical modality. One row per accepted spelling.
MODALITY_ALIASES: dict[str, str] = {
    "ct": "CT",
    "mr": "MR",
    "mri": "MR",
    "pet": "PET",
    "us": "US",
    "ultrasound": "US",
    "ultra": "US",
    "x-ray": "XRay",
    "xray": "XRay",
    "xr": "XRay",
    "cxr": "XRay",
    "dermoscopy": "Dermoscopy",
    "dermoscope": "Dermoscopy",
    "endoscopy": "Endoscopy",
    "endoscope": "Endoscopy",
    "fundus": "Fundus",
    "microscopy": "Microscopy",
    "microscope": "Microscopy",
    "mammography": "Mammography",
    "mammo": "Mammography",
    "mamm": "Mammography",
    "oct": "OCT",
}

DEFAULT_MODEL_KEY = "lite_medsam"

# File-name prefix (lower case) -> number of spatial dimensions.
DIM_PREFIXES: dict[str, int] = {"2dbox": 2, "3dbox": 3}

_SPLIT = re.compile(r"[_.\s]+")


def _tokens(name: str) -> list[str]:
    stem = name[:-4] if name.lower().endswith(".npz") else name
    return [t for t in _SPLIT.split(stem.lower()) if t]


def case_dims(name: str) -> int | None:
    """2 or 3 from a ``2DBox_``/``3DBox_`` prefix (any case); None when the name does not say."""
    tokens = _tokens(name)
    return DIM_PREFIXES.get(tokens[0]) if tokens else None


def modality(name: str) -> str | None:
    """Canonical modality named by the file, or None."""
    tokens = _tokens(name)
    if tokens and tokens[0] in DIM_PREFIXES:
        tokens = tokens[1:]
    for token in tokens:
        if token in MODALITY_ALIASES:
            return MODALITY_ALIASES[token]
    return None


def source_tag(name: str) -> str:
    """``2DBox_US_HC18_007.npz`` -> ``HC18``: the token after the modality ("unknown" if none)."""
    parts = name.split("_")
    return parts[2] if len(parts) > 3 else "unknown"


# (spatial dims, canonical modality) -> model key; rows only where a specialist ships.
RouteTable = Mapping[tuple[int, str], str]


def route(name: str, dims: int, routes: RouteTable) -> str:
    """Model key for a case: its (dims, modality) row of ``routes``, else DEFAULT_MODEL_KEY."""
    found = modality(name)
    return DEFAULT_MODEL_KEY if found is None else routes.get((dims, found), DEFAULT_MODEL_KEY)


def routes_from_rows(rows: list[dict[str, object]]) -> dict[tuple[int, str], str]:
    """The manifest's ``routes`` rows ({dims, modality, model}) as a table; rejects a modality
    this module does not know and a (dims, modality) claimed twice."""
    table: dict[tuple[int, str], str] = {}
    known = set(MODALITY_ALIASES.values())
    for row in rows:
        dims, mod, key = int(row["dims"]), str(row["modality"]), str(row["model"])
        if mod not in known or dims not in DIM_PREFIXES.values():
            msg = f"route {row} names an unknown modality or dims; known: {sorted(known)}, 2 or 3"
            raise ValueError(msg)
        if (dims, mod) in table:
            msg = f"route ({dims}D, {mod}) is claimed by both {table[(dims, mod)]!r} and {key!r}"
            raise ValueError(msg)
        table[(dims, mod)] = key
    return table
