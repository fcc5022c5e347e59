"""2D validation cases cut from 3D validation volumes (``evaluation/derived_slices.py``): which
slices, what each case holds, its name, and that no training volume is ever cut or used."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from app.npz_io import load_case
from app.routing import case_dims, modality, source_tag
from evaluation.derived_slices import (
    INDEX_NAME,
    derive_volume,
    derived_name,
    derived_paths,
    derived_source,
    derived_val_cases,
    main,
    middle_slices,
    slice_case,
    volumes_to_cut,
)
from evaluation.split import group_key

VOLUME = "3DBox_CT_IBSISTS_STS_003.npz"
TRAIN_VOLUME = "3DBox_CT_IBSISTS_STS_002.npz"


def labelled_volume() -> tuple[np.ndarray, np.ndarray]:
    """(20, 32, 40) uint8 image and labels: object 1 on slices 4..15, object 3 on slices 8..11
    (label 2 is never present)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 32, 40), dtype=np.uint8)
    gts = np.zeros((20, 32, 40), dtype=np.uint8)
    gts[4:16, 5:10, 6:20] = 1
    gts[8:12, 20:30, 25:31] = 3
    return image, gts


def save_volume(path: Path) -> None:
    image, gts = labelled_volume()
    np.savez_compressed(path, imgs=image, gts=gts, boxes=np.zeros((2, 6)), spacing=[1.0, 1.0, 1.0])


def test_slices_come_from_the_middle_half_of_the_objects_range() -> None:
    _, gts = labelled_volume()  # occupied: 4..15 (12 slices) -> middle half 7..12
    picks = middle_slices(gts, 3)
    assert picks == [7, 9, 12]  # positions 0, 2.5 -> 2 (round half to even), 5 of 7..12
    assert middle_slices(gts, 50) == list(range(7, 13))
    few = np.zeros((10, 4, 4), dtype=np.uint8)
    few[[2, 5, 6], 1, 1] = 1  # fewer than 4 occupied slices: all of them
    assert middle_slices(few, 5) == [2, 5, 6]
    assert middle_slices(np.zeros((3, 4, 4), dtype=np.uint8), 2) == []


def test_a_slice_case_relabels_its_objects_and_boxes_them_tightly() -> None:
    image, gts = labelled_volume()
    case = slice_case(image, gts, 9)
    assert case["imgs"].shape == (32, 40, 3) and case["imgs"].dtype == np.uint8
    assert all(np.array_equal(case["imgs"][..., c], image[9]) for c in range(3))
    assert case["gts"].dtype == np.uint16
    assert sorted(np.unique(case["gts"]).tolist()) == [0, 1, 2]  # labels 1 and 3 -> 1 and 2
    assert np.array_equal(case["gts"] == 1, gts[9] == 1)
    assert np.array_equal(case["gts"] == 2, gts[9] == 3)
    assert case["boxes"].tolist() == [[6, 5, 19, 9], [25, 20, 30, 29]]  # XYXY, inclusive
    alone = slice_case(image, gts, 5)  # only object 1 there
    assert alone["boxes"].tolist() == [[6, 5, 19, 9]] and alone["gts"].max() == 1


def test_a_derived_name_keeps_the_volumes_patient_and_marks_its_source() -> None:
    name = derived_name(VOLUME, 12)
    assert name == "2DBox_CT_IBSISTS-slices_STS_003_z012.npz"
    assert case_dims(name) == 2 and modality(name) == "CT"
    assert source_tag(name) == "IBSISTS-slices"
    assert group_key(name) == group_key(VOLUME) == "patient:STS_003"
    with pytest.raises(ValueError, match="not a 3DBox"):
        derived_name("2DBox_CT_AMOS_1.npz", 0)


def test_a_derived_case_is_a_valid_2d_case_for_the_app(tmp_path: Path) -> None:
    save_volume(tmp_path / VOLUME)
    out = tmp_path / "out"
    out.mkdir()
    rows = derive_volume(tmp_path / VOLUME, out, 2)
    assert [r["slice"] for r in rows] == [7, 12]
    case = load_case(out / str(rows[0]["case"]))
    assert not case.is_3d and case.image.shape == (32, 40, 3) and case.boxes.shape == (1, 4)
    assert not list(out.glob(".*"))  # no temp file left


def test_only_validation_volumes_are_cut_and_a_training_one_is_refused(tmp_path: Path) -> None:
    mr = "3DBox_MR_IBSISTST1_STS_003.npz"
    files = {n: tmp_path / n for n in [VOLUME, TRAIN_VOLUME, mr]}
    split = {VOLUME: "val", TRAIN_VOLUME: "train", mr: "val"}
    assert volumes_to_cut(files, split, ("CT",)) == [tmp_path / VOLUME]
    folder = tmp_path / "derived"
    folder.mkdir()
    name = derived_name(VOLUME, 3)
    (folder / name).write_bytes(b"")
    with (folder / INDEX_NAME).open("w", newline="") as fh:
        csv.writer(fh).writerows([["case", "volume", "slice", "objects"], [name, VOLUME, 3, 1]])
    assert derived_val_cases(folder, split) == [name]
    with pytest.raises(ValueError, match="not in validation"):
        derived_val_cases(folder, {**split, VOLUME: "train"})


def test_the_command_cuts_every_validation_volume_and_indexes_its_cases(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in (VOLUME, TRAIN_VOLUME):
        save_volume(data / name)
    split = tmp_path / "split.csv"
    split.write_text(f"case,split\n{VOLUME},val\n{TRAIN_VOLUME},train\n")
    out = tmp_path / "out"
    assert main(["--data", str(data), "--split", str(split), "--out", str(out), "--per-volume", "2"]) == 0
    cases = derived_val_cases(out, {VOLUME: "val"})
    assert cases == [derived_name(VOLUME, 7), derived_name(VOLUME, 12)]
    assert sorted(p.name for p in out.glob("*.npz")) == cases


def test_derived_paths_name_the_cases_where_the_tool_reads_them_and_need_an_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    save_volume(data / VOLUME)
    split = tmp_path / "split.csv"
    split.write_text(f"case,split\n{VOLUME},val\n")
    out = tmp_path / "out"
    assert main(["--data", str(data), "--split", str(split), "--out", str(out), "--per-volume", "1"]) == 0
    union = tmp_path / "union"
    assert derived_paths([out], split, union) == [union / derived_name(VOLUME, 7)]  # the first middle slice
    assert derived_paths([], split, union) == []
    with pytest.raises(ValueError, match="run make derived-slices first"):
        derived_paths([tmp_path / "never-made"], split, union)
    assert derived_source("IBSISTS") == "IBSISTS-slices" == source_tag(derived_name(VOLUME, 0))


def test_a_gate_with_derived_cases_says_so_in_its_command_and_its_account_of_the_cases() -> None:
    from train.gate import DERIVED_CASES, VALIDATION_CASES, derived_flag

    assert derived_flag([]) == ""
    assert derived_flag([Path("build/derived/slices")]) == " --derived build/derived/slices"
    assert DERIVED_CASES.startswith(VALIDATION_CASES) and "make derived-slices" in DERIVED_CASES
