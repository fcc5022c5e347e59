"""Modality routing: case file name -> modality -> model key. The one routing table.

Names follow ``<2DBox|3DBox>_<Modality>_<source>_<id>.npz``. Matching is on whole tokens
(split on ``_``, ``.`` and spaces, case-insensitive), never on substrings, so ``OCT`` can not
be read as ``CT`` and ``MR`` does not match inside ``MRI_smear``. The modality token right after
the prefix is tried first, then every other token left to right; no match -> DEFAULT_MODEL_KEY.
"""

from __future__ import annotations

import re

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

# Canonical modality -> model key in models/manifest.json. Specialists plug in here.
MODALITY_MODEL: dict[str, str] = {
    "CT": "lite_medsam",
    "MR": "lite_medsam",
    "PET": "lite_medsam",
    "US": "lite_medsam",
    "XRay": "lite_medsam",
    "Dermoscopy": "lite_medsam",
    "Endoscopy": "lite_medsam",
    "Fundus": "lite_medsam",
    "Microscopy": "lite_medsam",
    "Mammography": "lite_medsam",
    "OCT": "lite_medsam",
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


def route(name: str) -> str:
    """Model key for a case file name (DEFAULT_MODEL_KEY when no modality is named)."""
    found = modality(name)
    return DEFAULT_MODEL_KEY if found is None else MODALITY_MODEL[found]
