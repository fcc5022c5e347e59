"""Property-based fuzzing (Hypothesis) of the npz loader, the geometry and the pipeline.

Whatever the shapes, dtypes and boxes: the pipeline either writes a uint16 ``segs`` of the
image's spatial shape with labels only from 0..N, or raises CaseError naming the case.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import CaseError
from app.pipeline import predict_case
from app.preprocessing import box_to_model, clip_box_2d, clip_z_range, encoder_input
from tests.test_odd_inputs import FakeSessions

DTYPES = [np.uint8, np.uint16, np.int16, np.float32, np.float64, np.bool_, np.int64]
NAMES = ["2DBox_US_f.npz", "3DBox_CT_f.npz", "fuzz.npz", "2dbox_oct_f.npz", "3DBox_MR_f.npz"]
coord = st.one_of(st.floats(-50, 120), st.integers(-50, 120), st.just(float("nan")))


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(0, 24), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    imgs = (rng.random(shape) * 300 - 20).astype(dtype)
    width = draw(st.sampled_from([4, 6, 5]))
    n = draw(st.integers(0, 5))
    boxes = np.array(draw(st.lists(coord, min_size=n * width, max_size=n * width)), dtype=np.float64)
    boxes = boxes.reshape(n, width) if draw(st.booleans()) or n != 1 else boxes
    return draw(st.sampled_from(NAMES)), imgs, boxes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_pipeline_writes_valid_segs_or_raises_case_error(case, tmp_path_factory) -> None:
    name, imgs, boxes = case
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / name
    with path.open("wb") as fh:
        np.savez(fh, imgs=imgs, boxes=boxes)
    out = folder / "out"
    out.mkdir()
    try:
        predict_case(path, out, FakeSessions())
    except CaseError as err:
        assert str(err).startswith(f"{name}: ")
        assert not (out / name).exists()
        return
    with np.load(out / name) as data:
        segs = data["segs"]
    assert segs.dtype == np.uint16
    assert segs.ndim in (2, 3) and segs.shape == imgs.shape[: segs.ndim]
    n = len(boxes) if boxes.ndim == 2 else (1 if boxes.size else 0)
    assert int(segs.max(initial=0)) <= n


@given(
    box=st.lists(coord, min_size=4, max_size=4),
    hw=st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
)
def test_clipped_boxes_lie_inside_the_image_and_model_frame(box, hw) -> None:
    if any(v != v for v in box):  # NaN boxes are rejected by the loader before geometry
        return
    clipped = clip_box_2d(np.array(box, dtype=float), hw)
    if clipped is None:
        return
    h, w = hw
    assert 0 <= clipped[0] <= clipped[2] <= w - 1 and 0 <= clipped[1] <= clipped[3] <= h - 1
    model = box_to_model(clipped, hw, 256)
    assert np.all(model >= 0) and np.all(model <= 256)


@given(z0=st.floats(-100, 100), z1=st.floats(-100, 100), depth=st.integers(1, 300))
def test_z_ranges_are_inside_the_volume(z0, z1, depth) -> None:
    r = clip_z_range(z0, z1, depth)
    assert r is None or 0 <= r[0] <= r[1] <= depth - 1


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 600), w=st.integers(1, 600), c=st.sampled_from([None, 3]))
def test_encoder_input_is_always_normalised_and_padded(h, w, c) -> None:
    shape = (h, w) if c is None else (h, w, c)
    img = np.random.default_rng(h * w).integers(0, 256, shape, dtype=np.uint8)
    tensor, (nh, nw) = encoder_input(img, 256)
    assert tensor.shape == (1, 3, 256, 256) and max(nh, nw) == 256
    assert tensor.min() >= 0 and tensor.max() <= 1 and not tensor[..., nh:, :].any()
