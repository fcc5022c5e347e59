"""Clinical formats (clinical/): box sidecars checked field by field, world boxes to voxels on
non-identity grids, intensities per modality, and through the real app in one run: a NIfTI
volume with LPS millimetre boxes equals the same volume as npz with voxel boxes and comes back on
the input's grid, a DICOM series gives a DICOM-SEG that highdicom reads back, bad clinical
cases are named errors and stray files are listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clinical.geometry import voxel_boxes
from clinical.intensity import DEFAULT_CT_WINDOW, to_uint8
from clinical.sidecar import SidecarError, parse_sidecar
from common.synthetic import box_sidecar, save_case, sphere_3d, write_dicom_series, write_nifti
from tests.conftest import ROOT

nib = pytest.importorskip("nibabel")  # requirements/clinical.txt (in dev.txt)
hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

# voxel (x, y, z) -> RAS mm: axes permuted and flipped, anisotropic, off origin
AFFINE = np.array([[0.0, -0.7, 0.0, 30.0], [-0.8, 0.0, 0.0, 20.0], [0.0, 0.0, 2.5, -5.0], [0, 0, 0, 1]])


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "JSON object"),
        ({"boxes": []}, "non-empty list"),
        ({"space": "mm", "boxes": [{}]}, "space must be one of"),
        ({"boxes": [{"label": 1, "min": [0, 0, 0]}]}, "boxes[0] lacks max"),
        ({"boxes": [{"label": 0, "min": [0, 0], "max": [1, 1]}]}, "boxes[0].label"),
        ({"boxes": [{"label": 1, "min": [5, 0], "max": [1, 1]}]}, "min [5.0, 0.0] is above max"),
        ({"boxes": [{"label": 1, "min": [0, 0], "max": [1, "a"]}]}, "boxes[0].max must hold finite"),
        ({"boxes": [{"label": 1, "min": [0, 0], "max": [1, 1]}, {"label": 2, "min": [0, 0, 0], "max": [1, 2, 3]}]},  # noqa: E501
         "boxes[1].min has 3"),
        ({"boxes": [{"label": 1, "min": [0, 0], "max": [1, 1]}] * 2}, "labels repeat"),
        ({"window": [40], "boxes": [{"label": 1, "min": [0, 0], "max": [1, 1]}]}, "window must be"),
        ({"colour": "red", "boxes": []}, "unknown field"),
    ],
)  # fmt: skip
def test_a_bad_sidecar_names_the_field(data: object, says: str) -> None:
    with pytest.raises(SidecarError) as err:
        parse_sidecar(data)
    assert says in str(err.value)


@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_world_boxes_land_on_the_voxel_box_of_a_rotated_flipped_anisotropic_grid(space: str) -> None:
    box = np.array([3.0, 10.0, 2.0, 17.0, 30.0, 6.0])
    parsed = parse_sidecar(box_sidecar(box[None], [4], space, AFFINE))
    np.testing.assert_array_equal(voxel_boxes(parsed, AFFINE, (40, 50, 9)), box[None])
    outside = parse_sidecar(box_sidecar(np.array([[50.0, 60.0, 20.0, 55.0, 70.0, 25.0]]), [4], space, AFFINE))
    with pytest.raises(SidecarError, match=r"boxes\[0\] \(label 4\) lies outside the image"):
        voxel_boxes(outside, AFFINE, (40, 50, 9))
    partly = parse_sidecar(box_sidecar(np.array([[30.0, 40.0, 5.0, 45.0, 55.0, 12.0]]), [1], space, AFFINE))
    np.testing.assert_array_equal(voxel_boxes(partly, AFFINE, (40, 50, 9)), [[30, 40, 5, 39, 49, 8]])


def test_intensities_follow_the_corpus_rules() -> None:
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(hu, "CT", None), [[0, 0, 127, 255, 255]])
    np.testing.assert_array_equal(to_uint8(hu, "CT", (0.0, 100.0)), [[0, 0, 102, 255, 255]])
    assert DEFAULT_CT_WINDOW == (-160.0, 240.0)
    mr = np.r_[np.zeros(10), np.linspace(1, 1000, 990)].astype(np.float32)
    scaled = to_uint8(mr, "MR", None)
    assert scaled[:10].max() == 0 and scaled.max() == 255 and scaled[10] == 0
    raw = np.arange(256, dtype=np.uint8)
    assert to_uint8(raw, "CT", None) is raw  # uint8 is taken as scaled, as in the npz path


@pytest.fixture(scope="module")
def clinical_run(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict:
    """One app run over: a NIfTI volume with LPS boxes and its npz twin with voxel boxes, a DICOM
    series with LPS boxes and its npz twin (CT-windowed), three broken clinical cases, a stray
    file."""
    root = tmp_path_factory.mktemp("clinical")
    inputs, outputs = root / "in", root / "out"
    imgs, boxes, _ = sphere_3d(shape=(6, 96, 96), seed=2)
    boxes_xyz = boxes.astype(np.float64)
    write_nifti(inputs / "vol.nii.gz", imgs, AFFINE)
    (inputs / "vol.boxes.json").write_text(
        json.dumps(box_sidecar(boxes_xyz, [9], "LPS", AFFINE, modality="MR"))
    )
    save_case(inputs / "3DBox_MR_twin.npz", imgs, boxes)
    hu = imgs.astype(np.int16) * 2 - 160
    write_dicom_series(inputs / "series", hu)
    (inputs / "series.boxes.json").write_text(json.dumps(box_sidecar(boxes_xyz, [5], "voxel")))
    save_case(inputs / "3DBox_CT_series_twin.npz", to_uint8(hu, "CT", None), boxes)
    write_nifti(inputs / "no_sidecar.nii.gz", imgs, AFFINE)
    write_nifti(inputs / "outside.nii.gz", imgs, AFFINE)
    far = np.array([[500.0, 500.0, 50.0, 510.0, 510.0, 60.0]])
    (inputs / "outside.boxes.json").write_text(json.dumps(box_sidecar(far, [1], "voxel")))
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (inputs / "broken.boxes.json").write_text(json.dumps(box_sidecar(boxes_xyz, [1], "voxel")))
    (inputs / "notes.txt").write_text("not a case")
    run = subprocess.run(
        [sys.executable, "-m", "app", "-i", str(inputs), "-o", str(outputs)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    return {"inputs": inputs, "outputs": outputs, "run": run}


def test_nifti_with_world_boxes_equals_the_npz_twin_on_the_input_grid(clinical_run: dict) -> None:
    outputs, inputs = clinical_run["outputs"], clinical_run["inputs"]
    out = nib.load(outputs / "vol.nii.gz")
    src = nib.load(inputs / "vol.nii.gz")
    assert out.shape == src.shape and out.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(out.affine, src.affine)
    assert int(out.header["sform_code"]) == int(src.header["sform_code"])
    labels_zyx = np.asanyarray(out.dataobj).T
    with np.load(outputs / "3DBox_MR_twin.npz") as twin:
        segs = twin["segs"]
    assert segs.any()
    np.testing.assert_array_equal(labels_zyx, np.where(segs == 1, 9, 0))  # label 9 of the sidecar


def test_a_dicom_series_gives_a_dicom_seg_highdicom_reads_back(clinical_run: dict) -> None:
    outputs, inputs = clinical_run["outputs"], clinical_run["inputs"]
    seg = hd.seg.segread(outputs / "series.seg.dcm")
    assert seg.number_of_segments == 1 and seg.SegmentSequence[0].SegmentLabel == "label 5"
    slices = [pydicom.dcmread(p) for p in sorted((inputs / "series").iterdir())]
    sources = {ds.SOPInstanceUID for ds in slices}
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == sources
    with np.load(outputs / "3DBox_CT_series_twin.npz") as twin:
        segs = twin["segs"]
    labels = np.asanyarray(nib.load(outputs / "series.nii.gz").dataobj).T
    np.testing.assert_array_equal(labels, np.where(segs == 1, 5, 0))
    # the SEG's own geometry, slices counted along the normal as the sidecar's z: the mask lands
    # where the labels are
    seg_volume = seg.get_volume().ensure_handedness(hd.AxisHandedness.LEFT_HANDED, flip_axis=0)
    np.testing.assert_array_equal(seg_volume.array[..., 0] > 0, segs == 1)
    source = hd.get_volume_from_series(slices).ensure_handedness(hd.AxisHandedness.LEFT_HANDED, flip_axis=0)
    np.testing.assert_allclose(seg_volume.affine, source.affine, atol=1e-4)


def test_bad_clinical_cases_are_named_and_strays_listed(clinical_run: dict) -> None:
    run = clinical_run["run"]
    assert run.returncode == 1, run.stderr
    err = run.stderr
    assert "no_sidecar.nii.gz: no box sidecar no_sidecar.boxes.json" in err
    assert "outside.nii.gz: outside.boxes.json: boxes[0] (label 1) lies outside the image" in err
    assert "broken.nii.gz: is not a readable NIfTI file" in err
    assert "4 done, 3 failed" in err
    assert "not read: notes.txt (only .npz, .nii, .nii.gz files and DICOM series folders are cases)" in err
    written = sorted(p.name for p in clinical_run["outputs"].iterdir() if not p.name.startswith("."))
    assert written == sorted(
        ["vol.nii.gz", "3DBox_MR_twin.npz", "series.nii.gz", "series.seg.dcm", "3DBox_CT_series_twin.npz"]
    )


def test_a_nifti_header_claiming_a_huge_volume_is_refused_before_reading(tmp_path: Path) -> None:
    from app.errors import CaseError
    from clinical.nifti import read_nifti

    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 300))
    header.set_data_dtype(np.int16)
    path = tmp_path / "bomb.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 4 + b"\x00" * 1024)  # 348-byte header, offset 352
    with pytest.raises(
        CaseError, match=r"bomb.nii: NIfTI image \(30000, 30000, 300\) int16 needs .* over the image"
    ):
        read_nifti(path, 1 << 30)
    four_d = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), four_d)
    with pytest.raises(CaseError, match="NIfTI holds 2 volumes"):
        read_nifti(four_d, 1 << 30)
