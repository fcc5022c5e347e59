"""Every catalogue row through the real pipeline (fake model); the README table matches."""

from pathlib import Path

import numpy as np
import pytest

from app.errors import CaseError
from app.pipeline import predict_case
from app.routing import modality
from tests.conftest import ROOT, FakeSession
from tests.odd_inputs import CATALOGUE, Odd, markdown_table


class FakeSessions:
    """SessionCache stand-in: every model key gets the same fake session."""

    def __init__(self) -> None:
        self.session = FakeSession()
        self.keys_asked: list[str] = []
        self.routes: dict[tuple[int, str], str] = {}  # every case to the default model
        self.decoder_batch = 8  # the app's default: the 300-box row decodes in batches
        self.decoder_window = 16  # the app's default: on windows where its boxes fit
        self.prefetched: list[tuple[int, int]] = []  # decoder forms loaded ahead: (boxes, window)

    def precision_for(self, dims: int, modality: str | None) -> str:
        return "f32"

    def get(self, key: str, precision: str = "f32") -> FakeSession:
        self.keys_asked.append(key)
        return self.session

    def screen(self, key: str) -> None:
        return None  # no image screen: every case goes to its routed model

    def prefetch_decoder(self, key: str, precision: str, boxes: int = 1, window: int = 0) -> None:
        self.prefetched.append((boxes, window))


def test_the_catalogue_is_big_enough() -> None:
    assert len(CATALOGUE) >= 30
    assert len({o.name for o in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("odd", CATALOGUE, ids=[o.name for o in CATALOGUE])
def test_catalogue_row(odd: Odd, tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    path = odd.write(inputs)
    if odd.error is not None:
        with pytest.raises(CaseError) as err:
            predict_case(path, outputs, FakeSessions())
        assert str(err.value).startswith(f"{odd.name}: ") and odd.error in str(err.value)
        assert list(outputs.iterdir()) == []
        return
    sessions = FakeSessions()
    predict_case(path, outputs, sessions)
    # the case's decoder was loaded ahead in the form its boxes decode with first
    assert len(sessions.prefetched) == 1
    with np.load(outputs / odd.name) as data:
        assert data.files == ["segs"]
        segs = data["segs"]
    assert segs.dtype == np.uint16
    n_boxes = len(np.atleast_2d(np.load(path)["boxes"])) if np.load(path)["boxes"].size else 0
    assert set(np.unique(segs)) <= set(range(n_boxes + 1))
    assert odd.check(segs), f"{odd.name}: {odd.outcome}"


def test_oct_is_never_routed_as_ct() -> None:
    assert modality("2DBOX_OCT_UPPER.NPZ") == "OCT"


def test_readme_table_is_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README odd-input table is stale: python -m tests.odd_inputs"


@pytest.mark.parametrize(
    ("name", "form"), [("2DBox_Microscopy_300.npz", (8, 16)), ("3DBox_CT_oneslice.npz", (1, 0))]
)
def test_the_decoder_loaded_ahead_is_the_one_the_case_decodes_with_first(
    name: str, form: tuple[int, int], tmp_path: Path
) -> None:
    """300 boxes of one image decode 8 per call on windows; a volume's objects one at a time."""
    odd = next(o for o in CATALOGUE if o.name == name)
    sessions = FakeSessions()
    predict_case(odd.write(tmp_path), tmp_path, sessions)
    assert sessions.prefetched == [form]
