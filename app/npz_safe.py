"""Reading a challenge npz without trusting it: sizes are known before any data is inflated.

An npz is a zip of ``<key>.npy`` members. A few MB on disk can claim any size once inflated
(a 60000 x 60000 x 3 image of zeros compresses to 3.6 MB), so before reading any array we read
each wanted member's npy header (``numpy.lib.format``: magic, version, shape, dtype; a few
hundred bytes inflated) and the zip's own record of the member's inflated size, and refuse:
- a member that is not an npy array, or whose header and zip record disagree about its size;
- two members with the same name (zip allows it; which one a reader takes is arbitrary);
- object dtypes (they need pickle: never unpickled) and structured dtypes;
- an ``imgs`` whose decompressed size, or the uint8 image the app makes of it, exceeds the
  image budget (``max_image_bytes``);
- a ``boxes`` larger than the object limit allows, a ``spacing`` beyond a few numbers.
Only ``imgs``, ``boxes`` and ``spacing`` are ever read; other members are never inflated.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import IO

import numpy as np

from app.errors import CaseError

# The largest image admitted, in bytes, both as stored (decompressed) and as the app counts it
# (processed_image_bytes): 1 GiB, e.g. a 1024 x 1024 x 1024 uint8 volume or an 18900 x 18900
# picture. With it the measured peak RSS of the largest admitted 2D and 3D cases stays well
# under the challenge's 8 GB (reports/memcheck.md). Change with --max-image-bytes or
# SEG_MAX_IMAGE_BYTES.
DEFAULT_MAX_IMAGE_BYTES = 1 << 30
MAX_IMAGE_BYTES_ENV = "SEG_MAX_IMAGE_BYTES"
MAX_BOX_VALUES = 65535 * 6  # the uint16 label limit times the widest box
MAX_SPACING_VALUES = 16
WANTED = ("imgs", "boxes", "spacing")
REQUIRED = ("imgs", "boxes")


@dataclass(frozen=True)
class Member:
    """One npy member as its header describes it (nothing inflated beyond the header)."""

    key: str
    name: str  # the zip member name
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_offset: int  # bytes of the npy header: the array data starts here
    file_size: int  # the zip's record of the inflated member size

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


def max_image_bytes(arg: int | None = None) -> int:
    """The image budget: ``arg``, else $SEG_MAX_IMAGE_BYTES, else DEFAULT_MAX_IMAGE_BYTES."""
    if arg is not None:
        return arg
    env = os.environ.get(MAX_IMAGE_BYTES_ENV)
    return int(env) if env else DEFAULT_MAX_IMAGE_BYTES


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def _read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, header length) of an npy stream, reading the header only."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10000)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10000)
    else:
        msg = f"npy format version {version} is not supported"
        raise ValueError(msg)
    return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), fh.tell()


def _member_names(zf: zipfile.ZipFile, case: str) -> dict[str, str]:
    """Wanted key -> member name (``imgs.npy`` or bare ``imgs``); duplicates refused."""
    names = zf.namelist()
    found: dict[str, str] = {}
    for key in WANTED:
        candidates = [n for n in names if n in (f"{key}.npy", key)]
        if len(candidates) > 1:
            msg = f"holds {len(candidates)} zip members for key '{key}' ({candidates[0]}): ambiguous, refused"
            raise CaseError(case, msg)
        if candidates:
            found[key] = candidates[0]
    return found


def inspect(zf: zipfile.ZipFile, case: str) -> dict[str, Member]:
    """Headers of the wanted members, validated against the zip's record (no data inflated)."""
    members = {}
    for key, name in _member_names(zf, case).items():
        info = zf.getinfo(name)
        try:
            with zf.open(info) as fh:
                shape, dtype, fortran, offset = _read_header(fh)
        except (ValueError, SyntaxError, EOFError) as exc:
            raise CaseError(case, f"member {name} is not an npy array ({exc})") from None
        except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, zlib.error) as exc:
            raise CaseError(case, f"member {name} cannot be read ({type(exc).__name__}: {exc})") from None
        member = Member(key, name, shape, dtype, fortran, offset, info.file_size)
        if dtype.hasobject:
            raise CaseError(case, f"{key} holds pickled/object arrays, which are refused (never unpickled)")
        if dtype.fields is not None:
            raise CaseError(case, f"{key} has a structured dtype {dtype}; expected plain numbers")
        if offset + member.nbytes != info.file_size:
            raise CaseError(
                case,
                f"{key}: the npy header claims shape {shape} {dtype} ({human(member.nbytes)}) but the zip "
                f"member holds {human(max(0, info.file_size - offset))} of data: a corrupt or forged file",
            )
        members[key] = member
    return members


def processed_image_bytes(shape: tuple[int, ...], dims: int) -> int:
    """What an image costs against the budget, in bytes of the app's uint8 image: a 3D volume
    as stored (1 or 3 channels; alpha and a single channel dropped); a 2D picture at 3 bytes a
    pixel whatever its channels, because a 2D pixel costs the app about three times a voxel
    (full-resolution float32 logits and a mask per box, next to the uint16 labels)."""
    spatial = prod(shape[:dims]) if len(shape) >= dims else prod(shape)
    if dims == 2:
        return spatial * 3
    channels = shape[dims] if len(shape) > dims else 1
    return spatial * (3 if channels in (3, 4) else 1)


def check_budget(members: dict[str, Member], dims: int, budget: int, case: str) -> None:
    """Refuse, before any inflation, what cannot be processed inside the memory budget."""
    imgs = members.get("imgs")
    if imgs is not None:
        used = max(imgs.nbytes, processed_image_bytes(imgs.shape, dims))
        if used > budget:
            raise CaseError(
                case,
                f"imgs claims shape {imgs.shape} {imgs.dtype} = {human(imgs.nbytes)} decompressed "
                f"({human(processed_image_bytes(imgs.shape, dims))} as the app counts it), over the "
                f"image budget of {human(budget)}; refused before reading (raise it with "
                f"--max-image-bytes or {MAX_IMAGE_BYTES_ENV} if this machine has the memory)",
            )
    boxes = members.get("boxes")
    if boxes is not None and prod(boxes.shape) > MAX_BOX_VALUES:
        raise CaseError(case, f"boxes claims shape {boxes.shape}: over {MAX_BOX_VALUES} values (65535 boxes)")


def read_member(zf: zipfile.ZipFile, member: Member) -> np.ndarray:
    """Inflate one checked member into an array of exactly its header's shape."""
    with zf.open(member.name) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def read_arrays(
    path: Path, case: str, budget: int, dims_of: Callable[[dict[str, Member]], int]
) -> tuple[dict[str, np.ndarray], int]:
    """(the wanted arrays, dims) of an npz, every size checked before inflation.
    ``dims_of(members)``: 2 or 3 from the name and the headers."""
    if not zipfile.is_zipfile(path):
        raise CaseError(case, "is not a readable npz file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = inspect(zf, case)
            missing = [k for k in REQUIRED if k not in members]
            if missing:
                found = sorted({n[:-4] if n.endswith(".npy") else n for n in zf.namelist()})
                raise CaseError(case, f"missing key(s) {missing}; found {found}")
            dims = dims_of(members)
            if "spacing" in members and prod(members["spacing"].shape) > MAX_SPACING_VALUES:
                members.pop("spacing")  # informational only: never inflate an oversized one
            check_budget(members, dims, budget, case)
            return {key: read_member(zf, m) for key, m in members.items()}, dims
    except CaseError:
        raise
    # zipfile raises NotImplementedError for an unknown zip version or method and RuntimeError
    # for an encrypted member: all of them mean "not a readable npz" here.
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        zlib.error,
    ) as exc:
        raise CaseError(case, f"is not a readable npz file ({type(exc).__name__}: {exc})") from None
