"""The image screen (app/screen.py): its features, its file, its fit, and what the app does with it."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from app.screen import N_SCREEN_FEATURES, SCREEN_BLOCKS, Screen, load_screen, save_screen, screen_features
from common.synthetic import disks_2d, save_case
from train.screen_fit import ImageRow, ScreenConfig, calibrated_threshold, fit_reference, leave_one_out


def grey_image(seed: int, hw: tuple[int, int] = (120, 160), level: float = 80.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 10, hw), 0, 255).astype(np.uint8)


def test_features_follow_the_documented_layout() -> None:
    image = grey_image(0)
    feats = screen_features(image, 256)
    assert feats.shape == (N_SCREEN_FEATURES,) and feats.dtype == np.float32
    assert SCREEN_BLOCKS["aspect"][1] == N_SCREEN_FEATURES
    halves = np.zeros((120, 160), np.uint8)
    halves[:, 80:] = 255  # dark left half, bright right half
    thumb = screen_features(halves, 256)[slice(*SCREEN_BLOCKS["thumbnail"])].reshape(16, 16)
    assert np.allclose(thumb[:, :8], 0.0) and np.allclose(thumb[:, 8:], 1.0)  # image part only
    assert np.isclose(feats[slice(*SCREEN_BLOCKS["histogram"])].sum(), 1.0)
    assert np.isclose(feats[-1], np.log(160 / 120), atol=0.01)  # log(width / height)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(screen_features(rgb, 256), feats)  # grey = its RGB copy


def test_a_screen_admits_its_own_kind_and_refuses_another() -> None:
    raw = np.stack([screen_features(grey_image(s), 256) for s in range(6)])
    screen, loo = fit_reference(raw, ScreenConfig())
    assert loo.shape == (6,) and (loo > 0).all()
    screen = Screen(screen.features, screen.center, screen.scale, 1.25 * float(loo.max()))
    assert screen.admits(screen_features(grey_image(99), 256))[0]  # another image of the same kind
    bright_square = grey_image(7, (200, 200), level=220.0)
    admitted, distance = screen.admits(screen_features(bright_square, 256))
    assert not admitted and distance > screen.threshold


def test_leave_one_out_is_each_rows_distance_to_the_others() -> None:
    std = np.zeros((3, N_SCREEN_FEATURES), np.float32)
    std[1, 0] = 1.0
    std[2, 0] = 5.0
    loo = leave_one_out(std)
    assert np.argmin(loo) in (0, 1) and loo[2] == loo.max()  # the outlier is farthest from the rest
    assert loo[0] == pytest.approx(loo[1])


def row(role: str, distance: float, took: int) -> ImageRow:
    return ImageRow("x.npz", "public", "US", "S", role, distance, 1, took)


def test_the_threshold_has_a_margin_and_admits_every_image_the_router_took_a_box_of() -> None:
    rows = [row("reference", 1.0, 1), row("in-source", 1.2, 0), row("other", 5.0, 0)]
    threshold, parts = calibrated_threshold(rows, 1.25)
    assert threshold == pytest.approx(1.5) and parts["farthest_in_source"] == 1.2
    rows.append(row("other", 3.0, 1))  # a box the router took on another source: admitted too
    assert calibrated_threshold(rows, 1.25)[0] == pytest.approx(3.0)


def test_the_stored_threshold_never_falls_below_the_calibrated_one() -> None:
    from train.screen_fit import at_least_as_stored

    for t in (1.1, 1.8679123456, 2.0, 1e-3):
        stored = at_least_as_stored(t)
        assert stored >= t and float(np.float32(stored)) == stored


def test_a_screen_round_trips_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    zeros, ones = np.zeros(N_SCREEN_FEATURES, np.float32), np.ones(N_SCREEN_FEATURES, np.float32)
    screen = Screen(rng.normal(size=(4, N_SCREEN_FEATURES)).astype(np.float32), zeros, ones, 2.5)
    save_screen(tmp_path / "screen.npz", screen)
    back = load_screen(tmp_path / "screen.npz")
    assert back.threshold == pytest.approx(2.5)
    np.testing.assert_allclose(back.features, screen.features, atol=1e-2)  # stored as fp16
    np.savez(
        tmp_path / "bad.npz", features=np.zeros((2, 5)), center=np.zeros(5), scale=np.ones(5), threshold=1.0
    )
    with pytest.raises(ValueError, match="expected \\(M, 273\\)"):
        load_screen(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", features=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="lacks"):
        load_screen(tmp_path / "partial.npz")


@pytest.fixture(scope="module")
def screened_models(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    """The shipped models with a 'screened_demo' US 2D route: the student encoder's graphs behind a
    router that would take every box, and a screen whose one reference image is the synthetic
    disks (seed 3)."""
    from app.novelty import N_FEATURES, Reference, save_reference

    root = tmp_path_factory.mktemp("screened") / "models"
    (root / "screened_demo").mkdir(parents=True)
    for key in ("lite_medsam", "student_tinyvit_r112d"):
        (root / key).symlink_to(models_dir / key)
    ones, zeros = np.ones(N_FEATURES, np.float32), np.zeros((1, N_FEATURES), np.float32)
    save_reference(root / "screened_demo" / "router.npz", Reference(zeros, zeros[0], ones, np.inf))
    feats = screen_features(disks_2d(seed=3)[0], 256)
    one_image = Screen(np.zeros((1, N_SCREEN_FEATURES), np.float32), feats, np.full_like(feats, 0.05), 1.0)
    save_screen(root / "screened_demo" / "screen.npz", one_image)
    manifest = json.loads((models_dir / "manifest.json").read_text())
    student = manifest["models"]["student_tinyvit_r112d"]
    graphs = {"encoder": "student_tinyvit_r112d/encoder.xml", "decoder": "student_tinyvit_r112d/decoder.xml"}
    manifest["models"] = {
        "lite_medsam": manifest["models"]["lite_medsam"],
        "screened_demo": {**student, "graphs": graphs, "router": {"file": "screened_demo/router.npz"},
                          "screen": {"file": "screened_demo/screen.npz"}},
    }  # fmt: skip
    manifest["routes"] = [{"dims": 2, "modality": "US", "model": "screened_demo"}]
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_an_image_the_screen_refuses_gets_exactly_the_general_models_masks_with_one_encode(
    screened_models: Path, models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.pipeline import predict_case
    from app.sessions import SessionCache, create_core

    inputs, out = tmp_path / "in", tmp_path / "out"
    out.mkdir()
    admitted_image, admitted_boxes = disks_2d(seed=3)[:2]
    other_image, other_boxes = disks_2d(hw=(300, 300), seed=5)[:2]
    other_image = 255 - other_image  # dark disks on a bright ground: far from the reference image
    save_case(inputs / "2DBox_US_disks_3.npz", admitted_image, admitted_boxes)
    for name in ("2DBox_US_inverse_5.npz", "2DBox_Other_inverse_5.npz"):
        save_case(inputs / name, other_image, other_boxes)
    screened = SessionCache(create_core(None), screened_models, precision_mode="f32")
    general = SessionCache(create_core(None), models_dir, precision_mode="f32")

    with caplog.at_level(logging.INFO, logger="app"):
        got = predict_case(inputs / "2DBox_US_inverse_5.npz", out, screened)
    want = predict_case(inputs / "2DBox_Other_inverse_5.npz", out, general)
    assert got.model_key == want.model_key == "lite_medsam"
    assert got.encoder_calls == want.encoder_calls == 1  # the student never encoded it
    assert (
        "screened_demo's image screen: distance" in caplog.text
        and "lite_medsam serves all 2 boxes" in caplog.text
    )
    with np.load(out / "2DBox_US_inverse_5.npz") as a, np.load(out / "2DBox_Other_inverse_5.npz") as b:
        np.testing.assert_array_equal(a["segs"], b["segs"])

    took = predict_case(inputs / "2DBox_US_disks_3.npz", out, screened)  # admitted: the router decides
    assert took.model_key == "screened_demo" and took.encoder_calls == 1  # the student's encode only


def test_the_shipped_us_specialist_carries_a_screen_that_its_card_verifies(models_dir: Path) -> None:
    from modeling.checkpoint import sha256_file
    from modeling.registry import get_spec

    spec = get_spec("us_2d")
    assert spec.screen is not None and sha256_file(spec.screen.path) == spec.screen.sha256
    screen = load_screen(models_dir / "us_2d" / "screen.npz")
    assert screen.threshold == pytest.approx(spec.card["screen"]["facts"]["threshold"], abs=1e-3)
    assert screen.threshold >= spec.card["screen"]["facts"]["farthest_router_accepted"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(spec.screen.path)], check=False)
    assert ignored.returncode == 1, f"{spec.screen.path} is git-ignored: a clean clone would lack it"
