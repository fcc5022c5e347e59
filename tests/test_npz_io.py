from pathlib import Path

import numpy as np
import pytest

from app.errors import CaseError
from app.npz_io import MAX_OBJECTS, load_case, save_segmentation


def write(tmp_path: Path, name: str, **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_loads_a_2d_case(tmp_path: Path) -> None:
    case = load_case(
        write(
            tmp_path, "2DBox_US_a.npz", imgs=np.zeros((10, 12, 3), np.uint8), boxes=np.array([[1, 2, 5, 6]])
        )
    )
    assert not case.is_3d and case.seg_shape == (10, 12) and case.boxes.dtype == np.float64


def test_loads_a_3d_case_with_spacing(tmp_path: Path) -> None:
    case = load_case(
        write(
            tmp_path,
            "3DBox_CT_a.npz",
            imgs=np.zeros((4, 10, 12), np.uint8),
            boxes=np.array([[1, 2, 0, 5, 6, 3]]),
            spacing=np.array([3.0, 1.0, 1.0]),
        )
    )
    assert case.is_3d and case.seg_shape == (4, 10, 12) and case.spacing == (3.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("imgs", "shape"),
    [
        (np.zeros((10, 12), np.uint8), (10, 12)),  # grey: one channel until the resize
        (np.zeros((10, 12, 1), np.uint8), (10, 12)),
        (np.zeros((10, 12, 4), np.uint8), (10, 12, 3)),  # RGBA: alpha dropped
    ],
)
def test_2d_channel_variants(tmp_path: Path, imgs, shape) -> None:
    case = load_case(write(tmp_path, "2DBox_X.npz", imgs=imgs, boxes=np.array([1, 1, 4, 4])))
    assert case.image.shape == shape and case.boxes.shape == (1, 4)


def test_3d_rgb_volume(tmp_path: Path) -> None:
    case = load_case(
        write(
            tmp_path,
            "3DBox_MR_x.npz",
            imgs=np.zeros((3, 8, 9, 3), np.uint8),
            boxes=np.array([[0, 0, 0, 4, 4, 2]]),
        )
    )
    assert case.seg_shape == (3, 8, 9)


def test_float_images_are_rescaled(tmp_path: Path) -> None:
    imgs = np.linspace(-1000, 3000, 100, dtype=np.float32).reshape(10, 10)
    case = load_case(write(tmp_path, "2DBox_CT_f.npz", imgs=imgs, boxes=np.array([[0, 0, 5, 5]])))
    assert case.image.dtype == np.uint8 and case.image.min() == 0 and case.image.max() == 255


def test_dimension_from_content_when_the_name_says_nothing(tmp_path: Path) -> None:
    case = load_case(
        write(
            tmp_path, "scan.npz", imgs=np.zeros((3, 10, 10), np.uint8), boxes=np.array([[0, 0, 0, 4, 4, 2]])
        )
    )
    assert case.is_3d


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"boxes": np.zeros((1, 4))}, "missing key"),
        ({"imgs": np.zeros((5, 5, 3), np.uint8)}, "missing key"),
        ({"imgs": np.full((5, 5, 3), np.nan), "boxes": np.array([[0, 0, 1, 1]])}, "NaN"),
        ({"imgs": np.zeros((5, 5, 3), bool), "boxes": np.array([[0, 0, 1, 1]])}, "dtype"),
        ({"imgs": np.zeros((5, 5, 3), np.uint8), "boxes": np.array([[0, 0, np.nan, 1]])}, "NaN"),
        ({"imgs": np.zeros((5, 5, 3), np.uint8), "boxes": np.zeros((2, 5))}, r"expected \(N, 4\)"),
        ({"imgs": np.zeros((5, 5, 7), np.uint8), "boxes": np.zeros((1, 4))}, "channel"),
    ],
)
def test_bad_cases_name_the_case_and_problem(tmp_path: Path, arrays, problem: str) -> None:
    with pytest.raises(CaseError, match=problem) as err:
        load_case(write(tmp_path, "2DBox_US_bad.npz", **arrays))
    assert "2DBox_US_bad.npz" in str(err.value)


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "2DBox_US_obj.npz"
    np.savez(path, imgs=np.zeros((4, 4, 3), np.uint8), boxes=np.array([[0, 0, 1, 1]], dtype=object))
    with pytest.raises(CaseError, match="pickled"):
        load_case(path)


def test_truncated_and_non_npz_files(tmp_path: Path) -> None:
    good = write(tmp_path, "2DBox_US_ok.npz", imgs=np.zeros((40, 40, 3), np.uint8), boxes=np.zeros((1, 4)))
    cut = tmp_path / "2DBox_US_cut.npz"
    cut.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "2DBox_US_text.npz"
    text.write_text("not a zip")
    for path in (cut, text):
        with pytest.raises(CaseError, match="not a readable npz"):
            load_case(path)


def test_box_count_limit(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="limit"):
        load_case(
            write(
                tmp_path,
                "2DBox_M.npz",
                imgs=np.zeros((4, 4, 3), np.uint8),
                boxes=np.zeros((MAX_OBJECTS + 1, 4)),
            )
        )


def test_save_is_atomic_and_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "case.npz"
    save_segmentation(out, np.ones((3, 3), np.uint16))
    save_segmentation(out, np.full((3, 3), 7, np.uint16))
    with np.load(out) as data:
        assert data.files == ["segs"] and data["segs"].dtype == np.uint16 and data["segs"].max() == 7
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]  # no temp file left


def test_save_refuses_non_uint16(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        save_segmentation(tmp_path / "x.npz", np.zeros((2, 2), np.uint8))
