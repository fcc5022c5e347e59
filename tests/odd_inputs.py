"""The catalogue of odd and bad inputs: one row per input, with the behaviour we promise.

Each row builds an npz (or a broken file), runs it through the real pipeline (with a fake model,
see tests/test_odd_inputs.py) and states the outcome: ``ok`` plus a check of ``segs``, or the
CaseError text. ``python -m tests.odd_inputs --update-readme`` rewrites the README table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.synthetic import npy_bytes, write_bomb, write_lying_npy, write_members

Arrays = dict[str, np.ndarray]
RGB = np.zeros((40, 50, 3), np.uint8)
VOL = np.zeros((6, 40, 50), np.uint8)
BOX = np.array([[5, 5, 20, 20]])
BOX3 = np.array([[5, 5, 1, 20, 20, 4]])


@dataclass(frozen=True)
class Odd:
    """One catalogue row. ``arrays`` (None: ``raw`` bytes are written instead)."""

    name: str  # file name of the case
    what: str  # the input, for people
    outcome: str  # what happens, for people
    arrays: Callable[[], Arrays] | None = None
    raw: bytes | None = None
    error: str | None = None  # CaseError text expected (None: the case succeeds)
    check: Callable[[np.ndarray], bool] = lambda segs: True
    writer: Callable[[Path], Path] | None = None  # crafted archives (demo/synthetic.py)

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        if self.writer is not None:
            self.writer(path)
        elif self.arrays is None:
            path.write_bytes(self.raw or b"")
        else:
            with path.open("wb") as fh:  # a file object: np.savez would append ".npz" to ".NPZ"
                np.savez(fh, **self.arrays())
        return path


def labelled_slices(segs: np.ndarray) -> list[int]:
    return [int(z) for z in np.flatnonzero(segs.reshape(segs.shape[0], -1).any(1))]


def _obj_boxes() -> Arrays:
    return {"imgs": RGB, "boxes": np.array([[1, 2, 3, 4]], dtype=object)}


CATALOGUE: list[Odd] = [
    # --- images, 2D
    Odd(
        "2DBox_US_grey.npz",
        "grey 2D image (H, W)",
        "segmented; grey repeated to 3 channels after the resize",
        lambda: {"imgs": RGB[..., 0], "boxes": BOX},
        check=lambda s: s.shape == (40, 50) and s.max() == 1,
    ),
    Odd(
        "2DBox_US_onechannel.npz",
        "(H, W, 1) image",
        "segmented as grey",
        lambda: {"imgs": RGB[..., :1], "boxes": BOX},
        check=lambda s: s.shape == (40, 50),
    ),
    Odd(
        "2DBox_Dermoscopy_rgba.npz",
        "RGBA (H, W, 4)",
        "segmented; alpha dropped",
        lambda: {"imgs": np.zeros((40, 50, 4), np.uint8), "boxes": BOX},
        check=lambda s: s.shape == (40, 50),
    ),
    Odd(
        "2DBox_XRay_float.npz",
        "float32 image in [0, 1]",
        "segmented; min-max rescaled to uint8",
        lambda: {"imgs": np.random.default_rng(0).random((40, 50, 3), dtype=np.float32), "boxes": BOX},
    ),
    Odd(
        "2DBox_CT_int16.npz",
        "int16 image with negative values (HU)",
        "segmented; min-max rescaled to uint8",
        lambda: {"imgs": np.full((40, 50), -1000, np.int16), "boxes": BOX},
    ),
    Odd(
        "2DBox_Microscopy_uint16.npz",
        "uint16 image",
        "segmented; min-max rescaled to uint8",
        lambda: {"imgs": np.full((40, 50, 3), 4000, np.uint16), "boxes": BOX},
    ),
    Odd(
        "2DBox_US_bool.npz",
        "bool image",
        "error: unsupported dtype",
        lambda: {"imgs": np.zeros((40, 50), bool), "boxes": BOX},
        error="imgs has unsupported dtype bool",
    ),
    Odd(
        "2DBox_US_nan.npz",
        "image with NaN",
        "error: NaN or infinite values",
        lambda: {"imgs": np.full((40, 50), np.nan, np.float32), "boxes": BOX},
        error="NaN or infinite",
    ),
    Odd(
        "2DBox_US_complex.npz",
        "complex image",
        "error: unsupported dtype",
        lambda: {"imgs": np.zeros((40, 50), np.complex64), "boxes": BOX},
        error="unsupported dtype complex64",
    ),
    Odd(
        "2DBox_US_twochannel.npz",
        "(H, W, 2) image",
        "error: channel axis must be 1, 3 or 4",
        lambda: {"imgs": np.zeros((40, 50, 2), np.uint8), "boxes": BOX},
        error="optional channel axis",
    ),
    Odd(
        "2DBox_US_5d.npz",
        "5-D array as a 2D image",
        "error: wrong shape",
        lambda: {"imgs": np.zeros((2, 2, 2, 2, 2), np.uint8), "boxes": BOX},
        error="imgs has shape (2, 2, 2, 2, 2)",
    ),
    Odd(
        "2DBox_US_emptyaxis.npz",
        "image with a zero-length axis",
        "error: imgs is empty",
        lambda: {"imgs": np.zeros((0, 50, 3), np.uint8), "boxes": BOX},
        error="imgs is empty",
    ),
    Odd(
        "2DBox_US_tiny.npz",
        "tiny image (5 x 7)",
        "segmented (upscaled to the model input)",
        lambda: {"imgs": np.zeros((5, 7, 3), np.uint8), "boxes": np.array([[1, 1, 4, 3]])},
        check=lambda s: s.shape == (5, 7) and s.max() == 1,
    ),
    Odd(
        "2DBox_Mammography_huge.npz",
        "huge image (10000 x 8000)",
        "segmented at full size",
        lambda: {"imgs": np.zeros((10000, 8000), np.uint8), "boxes": np.array([[100, 100, 3000, 5000]])},
        check=lambda s: s.shape == (10000, 8000) and s.max() == 1,
    ),
    # --- keys and files
    Odd(
        "2DBox_US_noimgs.npz",
        "no `imgs` key",
        "error: missing key(s) ['imgs']",
        lambda: {"boxes": BOX},
        error="missing key(s) ['imgs']",
    ),
    Odd(
        "2DBox_US_noboxes.npz",
        "no `boxes` key",
        "error: missing key(s) ['boxes']",
        lambda: {"imgs": RGB},
        error="missing key(s) ['boxes']",
    ),
    Odd(
        "2DBox_US_extra.npz",
        "extra keys (`gts`, `spacing`, others)",
        "segmented; extra keys ignored",
        lambda: {"imgs": RGB, "boxes": BOX, "gts": np.zeros((40, 50), np.uint8), "note": np.array([1])},
    ),
    Odd(
        "2DBox_US_truncated.npz",
        "truncated npz",
        "error: not a readable npz file",
        raw=b"PK\x03\x04" + b"\x00" * 40,
        error="is not a readable npz file",
    ),
    Odd(
        "2DBox_US_text.npz",
        "text file named .npz",
        "error: not a readable npz file",
        raw=b"hello, not an archive",
        error="is not a readable npz file",
    ),
    Odd(
        "2DBox_US_pickled.npz",
        "object (pickled) arrays",
        "error: refused, never unpickled",
        _obj_boxes,
        error="holds pickled/object arrays",
    ),
    # --- hostile archives: sizes are read from the npy headers before anything is inflated
    Odd(
        "2DBox_US_bomb.npz",
        "decompression bomb: `imgs` of zeros claiming 20000 x 18000 x 3 (1.08 GB inflated, ~5 MB on disk)",
        "error before reading: the claimed size and the image budget (1 GiB, `--max-image-bytes`) named",
        writer=lambda p: write_bomb(p, (20000, 18000, 3)),
        error="over the image budget of 1.1 GB",
    ),
    Odd(
        "2DBox_US_headerbig.npz",
        "npy header claims more data than the member holds",
        "error: header and data disagree (corrupt or forged)",
        writer=lambda p: write_lying_npy(p, (400, 400, 3), "|u1", bytes(100), BOX),
        error="the npy header claims shape (400, 400, 3)",
    ),
    Odd(
        "2DBox_US_headersmall.npz",
        "npy header claims less data than the member holds",
        "error: header and data disagree (corrupt or forged)",
        writer=lambda p: write_lying_npy(p, (4, 4, 3), "|u1", bytes(40 * 50 * 3), BOX),
        error="but the zip member holds 6.0 KB of data",
    ),
    Odd(
        "2DBox_US_notnpy.npz",
        "zip member `imgs.npy` that is not an npy array",
        "error: not an npy array",
        writer=lambda p: write_members(
            p, [("imgs.npy", b"GIF89a not an array"), ("boxes.npy", npy_bytes(BOX))]
        ),
        error="member imgs.npy is not an npy array",
    ),
    Odd(
        "2DBox_US_dupkey.npz",
        "two zip members named `imgs.npy`",
        "error: ambiguous, refused",
        writer=lambda p: write_members(
            p, [("imgs.npy", npy_bytes(RGB)), ("imgs.npy", npy_bytes(RGB)), ("boxes.npy", npy_bytes(BOX))]
        ),
        error="zip members for key 'imgs'",
    ),
    Odd(
        "2DBox_US_structured.npz",
        "structured dtype image",
        "error: expected plain numbers",
        lambda: {"imgs": np.zeros((40, 50), dtype=[("a", "u1"), ("b", "f4")]), "boxes": BOX},
        error="structured dtype",
    ),
    Odd(
        "2DBox_US_boxbomb.npz",
        "`boxes` claiming 70000 x 6 values",
        "error before reading: over the 65535-box limit",
        lambda: {"imgs": RGB, "boxes": np.zeros((70000, 6))},
        error="boxes claims shape (70000, 6)",
    ),
    Odd(
        "2DBox_US_hugespacing.npz",
        "oversized `spacing` (10^6 values)",
        "segmented; spacing never read (informational only)",
        lambda: {"imgs": RGB, "boxes": BOX, "spacing": np.zeros(10**6)},
        check=lambda s: s.max() == 1,
    ),
    # --- boxes, 2D
    Odd(
        "2DBox_US_noboxlist.npz",
        "empty box list (0, 4)",
        "all-zero `segs`",
        lambda: {"imgs": RGB, "boxes": np.zeros((0, 4))},
        check=lambda s: s.shape == (40, 50) and s.max() == 0,
    ),
    Odd(
        "2DBox_US_emptyflat.npz",
        "empty box array of shape (0,)",
        "all-zero `segs`",
        lambda: {"imgs": RGB, "boxes": np.zeros((0,))},
        check=lambda s: s.max() == 0,
    ),
    Odd(
        "2DBox_US_flatbox.npz",
        "one box as a flat array (4,)",
        "segmented as one box",
        lambda: {"imgs": RGB, "boxes": np.array([5, 5, 20, 20])},
        check=lambda s: s.max() == 1,
    ),
    Odd(
        "2DBox_US_floatbox.npz",
        "fractional float boxes",
        "segmented; scaled like integer boxes",
        lambda: {"imgs": RGB, "boxes": np.array([[5.4, 5.6, 20.2, 19.9]])},
        check=lambda s: s.max() == 1,
    ),
    Odd(
        "2DBox_US_partout.npz",
        "box partly outside / negative",
        "clipped to the image, segmented",
        lambda: {"imgs": RGB, "boxes": np.array([[-10, -10, 20, 20]])},
        check=lambda s: s[0, 0] == 1,
    ),
    Odd(
        "2DBox_US_allout.npz",
        "box wholly outside the image",
        "skipped: its label is absent, others kept",
        lambda: {"imgs": RGB, "boxes": np.array([[100, 100, 120, 120], [5, 5, 20, 20]])},
        check=lambda s: set(np.unique(s)) == {0, 2},
    ),
    Odd(
        "2DBox_US_zeroarea.npz",
        "zero-area box (x_min == x_max, y_min == y_max)",
        "segmented as a 1-pixel box",
        lambda: {"imgs": RGB, "boxes": np.array([[10, 10, 10, 10]])},
        check=lambda s: s.shape == (40, 50),
    ),
    Odd(
        "2DBox_US_swapped.npz",
        "x_min > x_max (corners swapped)",
        "corners ordered, segmented",
        lambda: {"imgs": RGB, "boxes": np.array([[20, 20, 5, 5]])},
        check=lambda s: s[10, 10] == 1,
    ),
    Odd(
        "2DBox_US_nanbox.npz",
        "NaN in boxes",
        "error: NaN or infinite values",
        lambda: {"imgs": RGB, "boxes": np.array([[np.nan, 1, 5, 5]])},
        error="boxes contains NaN",
    ),
    Odd(
        "2DBox_US_badwidth.npz",
        "boxes of width 5",
        "error: expected (N, 4)",
        lambda: {"imgs": RGB, "boxes": np.zeros((2, 5))},
        error="boxes has shape (2, 5); expected (N, 4)",
    ),
    Odd(
        "2DBox_US_strbox.npz",
        "string boxes",
        "error: unsupported dtype",
        lambda: {"imgs": RGB, "boxes": np.array([["a", "b", "c", "d"]])},
        error="boxes has unsupported dtype",
    ),
    Odd(
        "2DBox_Microscopy_300.npz",
        "more than 255 boxes (300)",
        "segmented; uint16 labels 1..300",
        lambda: {
            "imgs": np.zeros((200, 200, 3), np.uint8),
            "boxes": np.array([[x, y, x + 5, y + 5] for y in range(0, 200, 10) for x in range(0, 150, 10)]),
        },
        check=lambda s: s.max() == 300,
    ),
    Odd(
        "2DBox_Microscopy_65536.npz",
        "more than 65535 boxes",
        "error: over the uint16 label limit",
        lambda: {"imgs": RGB, "boxes": np.zeros((65536, 4))},
        error="exceed the limit of 65535",
    ),
    # --- 3D
    Odd(
        "3DBox_CT_noboxlist.npz",
        "3D with an empty box list (0, 6)",
        "all-zero `segs`",
        lambda: {"imgs": VOL, "boxes": np.zeros((0, 6))},
        check=lambda s: s.shape == (6, 40, 50) and s.max() == 0,
    ),
    Odd(
        "3DBox_CT_zeq.npz",
        "z_min == z_max",
        "exactly that one slice segmented",
        lambda: {"imgs": VOL, "boxes": np.array([[5, 5, 3, 20, 20, 3]])},
        check=lambda s: labelled_slices(s) == [3],
    ),
    Odd(
        "3DBox_CT_zbeyond.npz",
        "z range beyond the volume",
        "clipped to [0, D-1]",
        lambda: {"imgs": VOL, "boxes": np.array([[5, 5, 4, 20, 20, 30]])},
        check=lambda s: labelled_slices(s) == [4, 5],
    ),
    Odd(
        "3DBox_CT_zoutside.npz",
        "z range wholly outside the volume",
        "skipped: label absent",
        lambda: {"imgs": VOL, "boxes": np.array([[5, 5, 10, 20, 20, 12]])},
        check=lambda s: s.max() == 0,
    ),
    Odd(
        "3DBox_CT_oneslice.npz",
        "1-slice volume (1, H, W)",
        "segmented",
        lambda: {"imgs": VOL[:1], "boxes": np.array([[5, 5, 0, 20, 20, 0]])},
        check=lambda s: s.shape == (1, 40, 50) and s.max() == 1,
    ),
    Odd(
        "3DBox_MR_rgb.npz",
        "3D RGB volume (D, H, W, 3)",
        "segmented; `segs` is (D, H, W)",
        lambda: {"imgs": np.zeros((6, 40, 50, 3), np.uint8), "boxes": BOX3},
        check=lambda s: s.shape == (6, 40, 50),
    ),
    Odd(
        "3DBox_MR_onechannel.npz",
        "(D, H, W, 1) volume",
        "segmented as grey",
        lambda: {"imgs": VOL[..., None], "boxes": BOX3},
        check=lambda s: s.shape == (6, 40, 50),
    ),
    Odd(
        "3DBox_CT_2dboxes.npz",
        "3DBox name with 4-wide boxes",
        "error: expected (N, 6)",
        lambda: {"imgs": VOL, "boxes": BOX},
        error="expected (N, 6)",
    ),
    Odd(
        "3DBox_CT_badspacing.npz",
        "malformed `spacing`",
        "segmented; spacing ignored (inference never uses it)",
        lambda: {"imgs": VOL, "boxes": BOX3, "spacing": np.array(["a"])},
        check=lambda s: s.max() == 1,
    ),
    # --- names
    Odd(
        "scan_0001.npz",
        "no modality or 2D/3D token in the name",
        "default model; 2D/3D from the box width",
        lambda: {"imgs": VOL, "boxes": BOX3},
        check=lambda s: s.shape == (6, 40, 50),
    ),
    Odd(
        "3dbox_ct_lower.npz",
        "lower-case prefix and modality",
        "routed as 3D CT",
        lambda: {"imgs": VOL, "boxes": BOX3},
        check=lambda s: s.shape == (6, 40, 50),
    ),
    Odd(
        "2DBOX_OCT_UPPER.NPZ",
        "upper-case name and extension",
        "routed as 2D OCT (never CT); same name out",
        lambda: {"imgs": RGB, "boxes": BOX},
        check=lambda s: s.shape == (40, 50),
    ),
]

# Behaviour of the batch, tested in tests/test_cli.py and tests/test_kill.py.
BATCH_BEHAVIOUR: list[tuple[str, str]] = [
    ("a bad case among good ones", "reported by name on stderr; the others are written; exit code 1"),
    (
        "output path blocked (a folder with the case's name, no space, no permission)",
        "error naming the case, the output path and the problem; the other cases are written",
    ),
    ("output folder not creatable or not writable", "error naming the folder; exit code 2"),
    ("output file already exists", "replaced atomically (never appended to)"),
    ("process killed while writing", "no partial output (temp file + rename); the next run removes the temp"),
    ("files not ending in .npz", "ignored"),
]


def markdown_table() -> str:
    rows = ["| input | what happens |", "|---|---|"]
    rows += [f"| {o.what} | {o.outcome} |" for o in CATALOGUE]
    rows += [f"| {what} | {outcome} |" for what, outcome in BATCH_BEHAVIOUR]
    return "\n".join(rows)


def update_readme(readme: Path) -> None:
    """Replace the table between the odd-inputs markers in the README."""
    text = readme.read_text()
    start, end = "<!-- odd-inputs:start -->\n", "\n<!-- odd-inputs:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + markdown_table() + end + tail)


if __name__ == "__main__":
    import sys

    if "--update-readme" in sys.argv:
        update_readme(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(markdown_table())
