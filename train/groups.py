"""Modality groups for specialists: (dims, canonical modalities) -> one specialist each.

The one table of groups. Thin 2D modalities share a group. Each 3D modality has its own: the
shared 3D model DAFT used helped PET but made CT and MR worse here (stop 10's gate), PET paying
for CT. Modality names are app/routing.py's canonical ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.routing import case_dims, modality


@dataclass(frozen=True)
class Group:
    dims: int
    modalities: tuple[str, ...]


GROUPS: dict[str, Group] = {
    "ct_3d": Group(3, ("CT",)),
    "mr_3d": Group(3, ("MR",)),
    "pet_3d": Group(3, ("PET",)),
    "us_2d": Group(2, ("US",)),
    "mammography_2d": Group(2, ("Mammography",)),
    "fundus_2d": Group(2, ("Fundus",)),
    "microscopy_2d": Group(2, ("Microscopy",)),
    "thin_2d": Group(2, ("XRay", "Dermoscopy", "Endoscopy", "CT", "OCT", "MR", "PET")),
}


def group_of(name: str) -> str | None:
    """The group of a case file name, or None (no modality token or no dims prefix)."""
    dims, mod = case_dims(name), modality(name)
    for key, group in GROUPS.items():
        if group.dims == dims and mod in group.modalities:
            return key
    return None
