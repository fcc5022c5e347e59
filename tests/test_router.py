"""The per-box router (app/novelty.py, train/router_fit.py) and its place in the app: features,
fit, in- and out-of-distribution decisions, the fallback to LiteMedSAM, the per-case log line,
the manifest/card fields it needs, and the per-source gate rule (train/source_gate.py)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from app.novelty import (
    BLOCKS,
    N_FEATURES,
    BoxRouter,
    Reference,
    box_features,
    image_statistics,
    load_reference,
    nearest_distance,
    save_reference,
)
from common.synthetic import disks_2d, save_case, sphere_3d
from tests.conftest import ROOT, FakeSession
from train.router_fit import RouterConfig, acceptance, case_box_features, fit_reference, spread_rows
from train.source_gate import route_verdicts


def embedding_like(rng: np.random.Generator, level: float) -> np.ndarray:
    """(256, 64, 64) float32 whose channel statistics sit around ``level``."""
    return (level + rng.normal(0, 1, (256, 64, 64))).astype(np.float32)


def features_of(level: float, box: tuple[float, ...], seed: int) -> np.ndarray:
    emb = embedding_like(np.random.default_rng(seed), level)
    return box_features(emb, np.array(box, np.float32), (256, 256))


def test_features_have_the_documented_layout() -> None:
    emb = np.zeros((256, 64, 64), np.float32)
    emb[:, :32, :16] = 2.0  # the image part of a (128, 64) resized image
    stats = image_statistics(emb, (128, 64))
    assert stats.shape == (512,) and np.allclose(stats[:256], 2.0) and np.allclose(stats[256:], 0.0)
    feats = box_features(emb, np.array([0, 0, 63, 127], np.float32), (128, 64))
    assert feats.shape == (N_FEATURES,) == (BLOCKS["geometry"][1],)
    assert np.allclose(feats[512:768], 2.0)  # region mean inside the box
    assert np.isclose(feats[768], 0.0) and np.isclose(feats[769], np.log(64 / 128))  # whole image, w/h


def test_reference_accepts_its_own_kind_and_rejects_another() -> None:
    rng = np.random.default_rng(7)
    jitter = [tuple(np.array([20, 20, 200, 200]) + rng.integers(-12, 13, 4)) for _ in range(32)]
    train = [features_of(0.0, box, seed)[None] for seed, box in enumerate(jitter[:16])]
    ref = fit_reference(train, RouterConfig(quantile=1.0))
    same = np.stack([features_of(0.0, box, 100 + s) for s, box in enumerate(jitter[16:26])])
    other_image = np.stack([features_of(3.0, (20, 20, 200, 200), 200 + s) for s in range(5)])
    other_task = np.stack([features_of(0.0, (100, 100, 120, 116), 300 + s) for s in range(5)])
    assert acceptance(ref, same)[0] >= 8  # a new case of the training kind: mostly accepted
    assert acceptance(ref, other_image) == (0, 5)
    assert acceptance(ref, other_task) == (0, 5)  # same images, a small box: another task


def test_reference_round_trips_through_npz(tmp_path: Path) -> None:
    train = [features_of(0.0, (20, 20, 200, 200), seed)[None] for seed in range(6)]
    ref = fit_reference(train, RouterConfig())
    save_reference(tmp_path / "router.npz", ref)
    back = load_reference(tmp_path / "router.npz")
    probe = features_of(0.5, (30, 30, 180, 190), 9)
    assert np.isclose(back.threshold, ref.threshold, rtol=1e-6)
    assert np.allclose(back.novelty(probe), ref.novelty(probe), rtol=1e-2)
    assert back.features.dtype == np.float32 and back.features.shape == ref.features.shape


def test_a_broken_reference_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "router.npz", features=np.zeros((3, 5)), center=np.zeros(5))
    with pytest.raises(ValueError, match="lacks"):
        load_reference(tmp_path / "router.npz")


def test_fit_needs_two_cases_and_spreads_rows() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fit_reference([np.zeros((3, N_FEATURES), np.float32)], RouterConfig())
    rng = np.random.default_rng(0)
    rows = spread_rows([np.zeros((100, 2)), np.zeros((1, 2)), np.zeros((7, 2))], 12, rng)
    assert [len(r) for r in rows] == [4, 1, 4]


def test_nearest_distance_is_zero_on_itself_and_grows() -> None:
    a = np.random.default_rng(1).normal(size=(4, N_FEATURES)).astype(np.float32)
    assert np.allclose(nearest_distance(a, a), 0.0, atol=1e-3)
    assert (nearest_distance(a + 1.0, a) > 0.5).all()
    assert np.isinf(nearest_distance(a, a[:0])).all()


class TaggedSession(FakeSession):
    """A fake session that remembers which decoder (name) decoded which box."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def decode(self, embedding: np.ndarray, box_model: np.ndarray) -> np.ndarray:
        self.log.append(self.name)
        return super().decode(embedding, box_model)


def test_box_router_sends_each_box_to_the_right_decoder() -> None:
    from app.infer_2d import segment_image

    train = [box_features(np.zeros((256, 64, 64), np.float32), np.array(b, np.float32), (256, 256))[None]
             for b in ([10, 10, 230, 230], [12, 8, 236, 228], [6, 14, 226, 240])]  # fmt: skip
    ref = fit_reference(train, RouterConfig(quantile=1.0))
    used: list[str] = []
    spec, base = TaggedSession("spec", used), TaggedSession("base", used)
    router = BoxRouter(spec, base, ref)
    image = np.zeros((256, 256, 3), np.uint8)  # FakeSession embeds it as (almost) zeros
    boxes = np.array([[10, 10, 232, 234], [100, 100, 110, 108]])  # a whole-image box, a small one
    labels = segment_image(image, boxes, spec, choose=router).labels
    assert used == ["spec", "base"]
    assert [d.accepted for d in router.decisions] == [True, False]
    assert set(np.unique(labels)) == {0, 1, 2}
    line = router.summary("us_2d", "lite_medsam")
    assert "us_2d served 1/2 boxes, lite_medsam 1" in line and "threshold" in line


def test_box_router_keeps_a_3d_objects_decoder_through_propagation() -> None:
    from app.infer_3d import segment_volume

    train = [box_features(np.zeros((256, 64, 64), np.float32), np.array(b, np.float32), (256, 256))[None]
             for b in ([10, 10, 230, 230], [12, 8, 236, 228])]  # fmt: skip
    ref = fit_reference(train, RouterConfig(quantile=1.0))
    used: list[str] = []
    spec, base = TaggedSession("spec", used), TaggedSession("base", used)
    router = BoxRouter(spec, base, ref)
    volume = np.zeros((5, 256, 256), np.uint8)
    boxes = np.array([[100, 100, 0, 110, 108, 4]])  # small box: LiteMedSAM on all 5 slices
    segment_volume(volume, boxes, spec, choose=router)
    assert used == ["base"] * 5 and len(router.decisions) == 1


class MarkedEncoder(FakeSession):
    """A FakeSession over its own encoder: its embeddings carry ``mark`` (channel 1) and its
    decoder refuses any embedding that does not, so a decode on another encoder's embedding fails."""

    def __init__(self, encoder_id: str, mark: float) -> None:
        super().__init__(encoder_id)
        self.mark = mark

    def encode(self, images: np.ndarray) -> np.ndarray:
        emb = super().encode(images)
        emb[:, 1] = self.mark
        return emb

    def decode(self, embedding: np.ndarray, box_model: np.ndarray) -> np.ndarray:
        assert float(embedding[0, 1, 0, 0]) == self.mark, "decoded another encoder's embedding"
        return super().decode(embedding, box_model)


def cascade_router(spec: FakeSession, base: FakeSession) -> BoxRouter:
    """A router (fitted on the specialist's near-zero embeddings) that takes large boxes."""
    train = [box_features(np.zeros((256, 64, 64), np.float32), np.array(b, np.float32), (256, 256))[None]
             for b in ([10, 10, 230, 230], [12, 8, 236, 228], [6, 14, 226, 240])]  # fmt: skip
    ref = fit_reference(train, RouterConfig(quantile=1.0))
    return BoxRouter(spec, base, ref)


def test_a_box_refused_by_a_specialist_over_another_encoder_gets_the_general_models_own_embedding() -> None:
    from app.infer_2d import segment_image

    spec, base = MarkedEncoder("student", 0.0), MarkedEncoder("teacher", 7.0)
    router = cascade_router(spec, base)
    image = np.zeros((256, 256, 3), np.uint8)
    boxes = np.array([[10, 10, 232, 234], [100, 100, 110, 108], [120, 120, 130, 126]])
    result = segment_image(image, boxes, spec, choose=router)
    assert [d.accepted for d in router.decisions] == [True, False, False]
    assert (spec.encoder_calls, base.encoder_calls, result.encodes) == (1, 1, 2)  # one re-encode for both
    assert len(spec.decoded_boxes) == 1 and len(base.decoded_boxes) == 2
    alone = segment_image(image, boxes[1:], base).labels
    np.testing.assert_array_equal(result.labels > 1, alone > 0)  # refused boxes: the general model's masks


def test_a_case_whose_boxes_the_specialist_takes_never_runs_the_general_encoder() -> None:
    from app.infer_2d import segment_image

    spec, base = MarkedEncoder("student", 0.0), MarkedEncoder("teacher", 7.0)
    segment_image(np.zeros((256, 256, 3), np.uint8), np.array([[10, 10, 232, 234]]), spec,
                  choose=cascade_router(spec, base))  # fmt: skip
    assert (spec.encoder_calls, base.encoder_calls) == (1, 0)


def test_a_3d_object_refused_over_another_encoder_is_propagated_on_the_general_models_embeddings() -> None:
    from app.infer_3d import segment_volume

    spec, base = MarkedEncoder("student", 0.0), MarkedEncoder("teacher", 7.0)
    router = cascade_router(spec, base)
    volume = np.zeros((9, 256, 256), np.uint8)
    boxes = np.array([[10, 10, 0, 232, 234, 8], [100, 100, 2, 110, 108, 6]])  # taken; refused (z 2-6)
    result = segment_volume(volume, boxes, spec, choose=router)
    assert [d.accepted for d in router.decisions] == [True, False]
    assert spec.encoder_calls == 9  # every slice once: the taken object spans the volume
    assert base.encoder_calls == 5  # the refused object's slices, each once
    assert len(base.decoded_boxes) == 5 and len(spec.decoded_boxes) == 9
    assert result.encodes == 14
    alone = segment_volume(volume, boxes[1:], MarkedEncoder("teacher", 7.0)).labels
    np.testing.assert_array_equal(result.labels == 2, alone == 1)


def test_the_primary_cache_drops_a_refused_objects_slices() -> None:
    from app.infer_3d import segment_volume

    spec, base = MarkedEncoder("student", 0.0), MarkedEncoder("teacher", 7.0)
    volume = np.zeros((7, 256, 256), np.uint8)
    result = segment_volume(volume, np.array([[100, 100, 0, 110, 108, 6]]), spec,
                            choose=cascade_router(spec, base))  # fmt: skip
    assert spec.encoder_calls == 1 and base.encoder_calls == 7  # the choice's key slice only
    assert result.cache_peak == 0  # each slice has one use per cache: nothing is held


def test_the_caches_of_both_encoders_share_one_capacity() -> None:
    from app.infer_3d import segment_volume

    volume = np.zeros((9, 256, 256), np.uint8)
    # key slices 4 and 2 per encoder: slices 3-4 wait between the two sweeps in both caches
    boxes = np.array([[10, 10, 0, 232, 234, 8], [10, 12, 0, 230, 236, 4], [100, 100, 0, 110, 108, 8],
                      [120, 120, 0, 130, 126, 4]])  # fmt: skip
    results = {}
    for capacity in (2, 64):
        spec, base = MarkedEncoder("student", 0.0), MarkedEncoder("teacher", 7.0)
        results[capacity] = segment_volume(
            volume, boxes, spec, capacity=capacity, choose=cascade_router(spec, base)
        )
    assert results[2].cache_peak <= 2 < results[64].cache_peak
    assert results[2].encodes > results[64].encodes  # re-encodes beyond the shared capacity
    np.testing.assert_array_equal(results[2].labels, results[64].labels)


@pytest.fixture(scope="module")
def routed_models(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, real_session) -> Path:  # noqa: ANN001
    """A models folder whose US 2D route goes to 'us_demo' (LiteMedSAM's own graphs, so masks are
    the base's) behind a router fitted on synthetic disk images."""
    root = tmp_path_factory.mktemp("routed")
    cases = root / "train"
    for seed in range(8):
        save_case(cases / f"2DBox_US_disks_{seed}.npz", *disks_2d(seed=seed)[:2])
    ref = fit_reference([case_box_features(p, real_session) for p in sorted(cases.glob("*.npz"))],
                        RouterConfig(quantile=1.0))  # fmt: skip
    models = root / "models"
    (models / "us_demo").mkdir(parents=True)
    (models / "lite_medsam").symlink_to(models_dir / "lite_medsam")
    save_reference(models / "us_demo" / "router.npz", ref)
    manifest = json.loads((models_dir / "manifest.json").read_text())
    base = manifest["models"]["lite_medsam"]
    graphs = {"encoder": "lite_medsam/encoder.xml", "decoder": "lite_medsam/decoder.xml"}
    manifest["models"] = {
        "lite_medsam": base,
        "us_demo": {**base, "graphs": graphs, "router": {"file": "us_demo/router.npz"}},
    }
    manifest["routes"] = [{"dims": 2, "modality": "US", "model": "us_demo"}]
    (models / "manifest.json").write_text(json.dumps(manifest))
    return models


def test_app_routes_in_and_out_of_distribution_cases_and_logs_why(
    routed_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.pipeline import predict_case
    from app.sessions import SessionCache, create_core

    inputs = tmp_path / "in"
    save_case(inputs / "2DBox_US_disks_9.npz", *disks_2d(seed=9)[:2])  # like the training disks
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)  # noise, a small box: unlike them
    save_case(inputs / "2DBox_US_noise_1.npz", texture, np.array([[140, 140, 160, 158]]))
    sessions = SessionCache(create_core(None), routed_models)
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.INFO, logger="app"):
        near = predict_case(inputs / "2DBox_US_disks_9.npz", tmp_path / "out", sessions)
        far = predict_case(inputs / "2DBox_US_noise_1.npz", tmp_path / "out", sessions)
    assert near.model_key == "us_demo"
    assert far.model_key == "lite_medsam"
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("2DBox_US_disks_9.npz: us_demo served 2/2 boxes") for m in lines)
    assert any(m.startswith("2DBox_US_noise_1.npz: us_demo served 0/1 boxes, lite_medsam 1") for m in lines)
    assert (tmp_path / "out" / "2DBox_US_noise_1.npz").is_file()


@pytest.fixture(scope="module")
def cascade_models(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    """A models folder whose US 2D and PET 3D routes go to 'student_demo': the shipped student
    encoder's graphs behind a router that refuses every box, so LiteMedSAM serves them all."""
    root = tmp_path_factory.mktemp("cascade") / "models"
    (root / "student_demo").mkdir(parents=True)
    for key in ("lite_medsam", "student_tinyvit_r112d"):
        (root / key).symlink_to(models_dir / key)
    train = [box_features(np.zeros((256, 64, 64), np.float32), np.array(b, np.float32), (256, 256))[None]
             for b in ([10, 10, 230, 230], [12, 8, 236, 228])]  # fmt: skip
    ref = fit_reference(train, RouterConfig(quantile=1.0))
    save_reference(root / "student_demo" / "router.npz", Reference(ref.features, ref.center, ref.scale, -1.0))
    manifest = json.loads((models_dir / "manifest.json").read_text())
    student = manifest["models"]["student_tinyvit_r112d"]
    graphs = {"encoder": "student_tinyvit_r112d/encoder.xml", "decoder": "student_tinyvit_r112d/decoder.xml"}
    manifest["models"] = {
        "lite_medsam": manifest["models"]["lite_medsam"],
        "student_demo": {**student, "graphs": graphs, "router": {"file": "student_demo/router.npz"}},
    }
    manifest["routes"] = [
        {"dims": d, "modality": m, "model": "student_demo"} for d, m in ((2, "US"), (3, "PET"))
    ]
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_boxes_refused_over_a_student_encoder_get_exactly_the_general_models_masks(
    cascade_models: Path, models_dir: Path, tmp_path: Path
) -> None:
    from app.pipeline import predict_case
    from app.sessions import SessionCache, create_core

    inputs = tmp_path / "in"
    image, boxes_2d = disks_2d(seed=3)[:2]
    volume, boxes_3d = sphere_3d((12, 96, 96), seed=1)[:2]
    for name in ("2DBox_US_disks_3.npz", "2DBox_Other_disks_3.npz"):
        save_case(inputs / name, image, boxes_2d)
    for name in ("3DBox_PET_sphere_1.npz", "3DBox_Other_sphere_1.npz"):
        save_case(inputs / name, volume, boxes_3d)
    out = tmp_path / "out"
    out.mkdir()
    # fp32 on both sides (the routed and the unrouted name would otherwise differ in precision)
    cascade = SessionCache(create_core(None), cascade_models, precision_mode="f32")
    general = SessionCache(create_core(None), models_dir, precision_mode="f32")
    for routed, plain in (
        ("2DBox_US_disks_3", "2DBox_Other_disks_3"),
        ("3DBox_PET_sphere_1", "3DBox_Other_sphere_1"),
    ):
        got = predict_case(inputs / f"{routed}.npz", out, cascade)
        want = predict_case(inputs / f"{plain}.npz", out, general)
        assert got.model_key == "lite_medsam" and want.model_key == "lite_medsam"
        assert got.encoder_calls == want.encoder_calls + 1  # the student's one image / key slice
        with np.load(out / f"{routed}.npz") as a, np.load(out / f"{plain}.npz") as b:
            np.testing.assert_array_equal(a["segs"], b["segs"])


def test_a_model_without_a_router_serves_every_box(models_dir: Path) -> None:
    from app.pipeline import box_router
    from app.sessions import SessionCache, create_core

    sessions = SessionCache(create_core(None), models_dir)
    assert box_router("lite_medsam", sessions) is None
    shipped = json.loads((models_dir / "manifest.json").read_text())["models"]
    for key, entry in shipped.items():
        kind = entry.get("trained", {}).get("kind")
        if kind == "decoder specialist":
            assert entry.get("router"), f"shipped specialist {key} has no router"
            assert (models_dir / entry["router"]["file"]).is_file()
        elif kind == "student encoder":  # replaces LiteMedSAM on whole routes, gated per source
            assert "router" not in entry and "encoder.xml" in entry["files"]
            assert box_router(key, sessions) is None
        else:
            assert key == "lite_medsam", f"{key}: unknown kind {kind!r}"


def test_shipped_cards_name_their_router_with_its_checksum() -> None:
    from modeling.checkpoint import sha256_file
    from modeling.registry import trained_specs

    specialists = {k: s for k, s in trained_specs().items() if s.card["kind"] == "decoder specialist"}
    assert specialists
    for key, spec in specialists.items():
        assert spec.router is not None, f"weights/{key} ships no router"
        assert sha256_file(spec.router.path) == spec.router.sha256
        facts = spec.card["router"]["facts"]
        assert {"threshold", "reference_rows", "out_of_fold_quantile"} <= set(facts)
        ignored = subprocess.run(["git", "check-ignore", "-q", str(spec.router.path)], check=False)
        assert ignored.returncode == 1, f"{spec.router.path} is git-ignored: a clean clone would lack it"


def row(source: str, seen: bool, base: float, routed: float, mod: str = "Fundus") -> dict[str, object]:
    return {"group": "fundus_2d", "dims_n": 2, "modality": mod, "source": source, "seen": seen,
            "accepted": 1, "boxes": 1, "base_dsc": base, "base_nsd": base, "alone_dsc": routed,
            "alone_nsd": routed, "routed_dsc": routed, "routed_nsd": routed}  # fmt: skip


def test_source_gate_ships_only_without_a_loss_on_unseen_sources() -> None:
    seen = [row("DRIVE", True, 0.2, 0.5) for _ in range(3)]
    ok = route_verdicts([*seen, row("IDRiD", False, 0.9, 0.896)])
    assert [v.accepted for v in ok] == [True]
    lost = route_verdicts([*seen, row("IDRiD", False, 0.9, 0.89)])
    assert not lost[0].accepted and "IDRiD" in lost[0].reason
    thin = route_verdicts([*seen[:2], row("IDRiD", False, 0.9, 0.95)])
    assert not thin[0].accepted and "in-source" in thin[0].reason
    flat = route_verdicts([row("DRIVE", True, 0.5, 0.505) for _ in range(3)])
    assert not flat[0].accepted


def test_settle_ships_passed_routes_with_the_router_and_drops_retired_groups(tmp_path: Path) -> None:
    from modeling.registry import CARD_NAME
    from train.source_gate import ROUTER_FILE, drop_retired, settle_routes

    candidates, weights = tmp_path / "candidates", tmp_path / "weights"
    for group in ("fundus_2d", "us_2d"):
        folder = candidates / group
        folder.mkdir(parents=True)
        (folder / "decoder_fp16.pt").write_bytes(b"weights")
        (folder / ROUTER_FILE).write_bytes(b"router")
        card = {
            "key": group, "kind": "decoder specialist", "routes": [{"dims": 2, "modality": "x"}],
            "overlays": {"mask_decoder": {"file": "decoder_fp16.pt"}},
        }  # fmt: skip
        (folder / CARD_NAME).write_text(json.dumps(card))
    (weights / "volumes_3d").mkdir(parents=True)  # a group that no longer exists
    (weights / "volumes_3d" / CARD_NAME).write_text(json.dumps({"kind": "decoder specialist"}))
    (weights / "student_x").mkdir()  # not a decoder specialist: never touched
    (weights / "student_x" / CARD_NAME).write_text(json.dumps({"kind": "student encoder"}))
    us = [{**row("HC18", True, 0.90, 0.95), "group": "us_2d", "modality": "US"} for _ in range(3)]
    us.append({**row("BUSI", False, 0.80, 0.70), "group": "us_2d", "modality": "US"})  # loses: not shipped
    fundus = [row("DRIVE", True, 0.2, 0.5) for _ in range(3)] + [row("IDRiD", False, 0.97, 0.97)]
    rows = fundus + us
    settle_routes(route_verdicts(rows), rows, candidates, weights, "test")
    assert drop_retired(weights) == ["volumes_3d"]
    assert sorted(p.name for p in weights.iterdir()) == ["fundus_2d", "student_x"]
    card = json.loads((weights / "fundus_2d" / CARD_NAME).read_text())
    assert card["routes"] == [{"dims": 2, "modality": "Fundus"}]
    facts = card["validation"]["Fundus 2D"]
    assert facts["accepted"] and facts["sources"]["IDRiD"]["seen"] is False
    assert facts["sources"]["DRIVE"]["router_accepted"] == "3/3"
    assert (weights / "fundus_2d" / ROUTER_FILE).read_bytes() == b"router"


def test_gating_some_groups_keeps_the_other_groups_rows_in_the_report(tmp_path: Path) -> None:
    from train.source_gate import with_earlier_rows, write_source_report

    fundus = [row("DRIVE", True, 0.2, 0.5) for _ in range(3)]
    us = [{**row("HC18", True, 0.90, 0.95), "group": "us_2d", "modality": "US"} for _ in range(3)]
    report = tmp_path / "specialists"
    write_source_report(fundus + us, route_verdicts(fundus + us), report, "first run")
    again = [row("DRIVE", True, 0.2, 0.1) for _ in range(3)]  # fundus regated: now it loses
    rows = with_earlier_rows(again, report / "gate_cases.csv")
    assert sorted(r["group"] for r in rows) == ["fundus_2d"] * 3 + ["us_2d"] * 3
    assert [r for r in rows if r["group"] == "fundus_2d"] == again  # never the stale fundus rows
    write_source_report(rows, route_verdicts(rows), report, "second run", gated=["fundus_2d"])
    text = (report / "README.md").read_text()
    assert "the cases of us_2d are kept from the earlier gate run" in text
    assert "| us_2d: US 2D | yes |" in text and "| fundus_2d: Fundus 2D | no |" in text
    assert with_earlier_rows(again, tmp_path / "missing.csv") == again


def test_source_report_shows_each_change_with_its_interval_and_rewrites_from_its_own_files(
    tmp_path: Path,
) -> None:
    from train.source_gate import rewrite_source_report, routed_change_text, write_source_report

    assert routed_change_text([row("DRIVE", True, 0.5, 0.6) for _ in range(3)]) == "+10.0 [+10.0, +10.0]"
    mixed = [row("DRIVE", True, 0.5, 0.5 + d) for d in (-0.02, 0.0, 0.05, 0.01)]
    low, high = (float(x) for x in routed_change_text(mixed).split("[")[1].rstrip("]").split(", "))
    assert low < 1.0 < high  # the mean (+1.0 points) inside, the spread of the cases around it
    assert routed_change_text([{**row("DRIVE", True, 0.5, 0.5), "routed_dsc": ""}]) == "-"
    rows = [row("DRIVE", True, 0.2, 0.5) for _ in range(3)] + [row("IDRiD", False, 0.9, 0.9)]
    report = tmp_path / "specialists"
    write_source_report(rows, route_verdicts(rows), report, "make train-specialists (x)", gated=["fundus_2d"])
    first = (report / "README.md").read_text()
    assert "| fundus_2d: Fundus 2D | DRIVE | yes | 3 | 3/3 (100%) | 0.2000 | 0.5000 | 0.5000 | " \
        "+30.0 [+30.0, +30.0] |" in first  # fmt: skip
    (report / "README.md").unlink()
    rewrite_source_report(report)
    assert (report / "README.md").read_text() == first
    assert json.loads((report / "gate.json").read_text())["command"] == "make train-specialists (x)"


def test_a_route_a_student_serves_goes_to_the_larger_validation_gain() -> None:
    from train.source_gate import contest_students

    def student(gain: float) -> dict:
        facts = {"baseline_dsc": 0.2, "dsc": 0.2 + gain, "cases": 3}
        routes = [{"dims": 2, "modality": "Fundus"}, {"dims": 3, "modality": "CT"}]
        return {
            "kind": "student encoder",
            "routes": routes,
            "validation": {"fundus_2d": {"Fundus 2D": facts}},
        }

    rows = [row("DRIVE", True, 0.2, 0.5) for _ in range(3)]  # the specialist gains 30 points
    verdicts = route_verdicts(rows)
    assert verdicts[0].accepted
    lost, left = contest_students(verdicts, rows, {"student_a": student(0.40)})
    assert not lost[0].accepted and "student_a" in lost[0].reason
    assert left == {"student_a": {(2, "Fundus"), (3, "CT")}}
    won, left = contest_students(
        verdicts, rows, {"student_a": student(0.10), "lm": {"kind": "decoder specialist"}}
    )
    assert won[0].accepted and "takes the route from student_a" in won[0].reason
    assert left == {"student_a": {(3, "CT")}}
    tie, _ = contest_students(verdicts, rows, {"student_a": student(0.30)})
    assert not tie[0].accepted  # a tie stays with the faster student


def test_a_specialist_over_another_encoder_replaces_the_shipped_one_only_if_it_holds_up(
    tmp_path: Path,
) -> None:
    from modeling.registry import CARD_NAME
    from train.source_gate import contest_shipped, reported_verdicts, settle_routes

    def rows(routed: float, sources: tuple[str, ...] = ("DRIVE", "DRIVE", "DRIVE", "STARE")) -> list[dict]:
        return [{**row(s, True, 0.2, routed), "case": f"c{i}"} for i, s in enumerate(sources)]

    shipped = {"fundus_2d": {"kind": "decoder specialist"}}  # trained over LiteMedSAM's encoder
    old = rows(0.50)
    better = route_verdicts(rows(0.52))
    won, keep = contest_shipped(better, rows(0.52), old, shipped, "student_a")
    assert won[0].accepted and "replaces the one over lite_medsam" in won[0].reason and keep == set()
    worse = rows(0.50)
    worse[-1]["routed_dsc"] = 0.49  # one source a point down: the shipped one keeps the route
    lost, keep = contest_shipped(route_verdicts(worse), worse, old, shipped, "student_a")
    assert not lost[0].accepted and "STARE" in lost[0].reason and keep == {"fundus_2d"}
    same, keep = contest_shipped(route_verdicts(worse), worse, old, shipped, "lite_medsam")
    assert same[0].accepted and keep == set()  # a rerun over the same encoder: no contest
    missing, keep = contest_shipped(better, rows(0.52), [], shipped, "student_a")
    assert not missing[0].accepted and keep == {"fundus_2d"}  # no earlier rows: never replaced blind
    weights = tmp_path / "weights"
    (weights / "fundus_2d").mkdir(parents=True)
    (weights / "fundus_2d" / CARD_NAME).write_text("{}")
    settle_routes(lost, worse, tmp_path / "candidates", weights, "test", keep={"fundus_2d"})
    assert (weights / "fundus_2d" / CARD_NAME).read_text() == "{}"  # left as it is
    shown = reported_verdicts(route_verdicts(old), lost, keep={"fundus_2d"})  # the report's rows: old
    assert shown[0].accepted and shown[0].in_source == route_verdicts(old)[0].in_source
    assert "kept against this run's candidate" in shown[0].reason and "STARE" in shown[0].reason
    assert reported_verdicts(route_verdicts(old), won, keep=set()) == won  # a winner is reported


def test_the_readme_table_shows_the_students_figures_where_a_student_serves_the_route() -> None:
    from train.source_gate import shipped_table

    rows = [row("DRIVE", True, 0.5, 0.505) for _ in range(3)]  # the specialist fails its gate
    facts = {"Fundus 2D / DRIVE": {"dsc": 0.61, "nsd": 0.62, "baseline_dsc": 0.5, "baseline_nsd": 0.5}}
    card = {
        "kind": "student encoder",
        "routes": [{"dims": 2, "modality": "Fundus"}],
        "validation": {"g": facts},
    }
    line = shipped_table(rows, {"student_a": card})[2]
    assert "no: student_a serves it" in line and "| 0.610 |" in line and line.endswith("| 0.620 |")
    assert shipped_table(rows)[2].endswith("| 0.500 |")  # no student: the product is LiteMedSAM


def test_a_session_compiles_each_graph_on_its_first_use_only(tmp_path: Path) -> None:
    """A router's fallback decodes the specialist's embedding: its own encoder is never compiled
    (nor a specialist decoder that no box went to)."""
    from app.sessions import ModelEntry, SamSession

    compiled: list[str] = []

    def compile_graph(xml: Path, boxes: int, window: int, graph: str):  # noqa: ANN202 - a fake compiled model
        assert (boxes, window, graph) == (1, 0, xml.stem)
        compiled.append(xml.stem)
        return lambda inputs: [np.zeros((1, 1, 256, 256) if xml.stem == "decoder" else (1, 256, 64, 64))]

    entry = ModelEntry("k", tmp_path / "encoder.xml", tmp_path / "decoder.xml", 256)
    session = SamSession(entry, compile_graph)
    assert compiled == []
    session.decode(np.zeros((1, 256, 64, 64), np.float32), np.array([0, 0, 9, 9]))
    session.decode(np.zeros((1, 256, 64, 64), np.float32), np.array([0, 0, 9, 9]))
    assert compiled == ["decoder"]
    session.compile_all()
    session.encode(np.zeros((1, 3, 256, 256), np.float32))
    assert compiled == ["decoder", "encoder"]


def test_a_compile_that_loses_a_cache_write_race_is_tried_again(tmp_path: Path) -> None:
    from app.sessions import COMPILE_ATTEMPTS, compile_with_retry

    class RacingCore:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0

        def get_property(self, name: str) -> str:
            return ""  # no cache folder

        def compile_model(self, xml: str, device: str, config: dict) -> str:
            self.calls += 1
            if self.calls <= self.failures:
                msg = "filesystem error: cannot set permissions: No such file or directory"
                raise RuntimeError(msg)
            return f"compiled {xml}"

    core = RacingCore(failures=1)
    assert compile_with_retry(core, tmp_path / "decoder.xml", {}) == f"compiled {tmp_path / 'decoder.xml'}"
    assert core.calls == 2
    always = RacingCore(failures=COMPILE_ATTEMPTS)
    with pytest.raises(RuntimeError, match="cannot set permissions"):
        compile_with_retry(always, tmp_path / "decoder.xml", {})
    assert always.calls == COMPILE_ATTEMPTS


def test_compiles_against_one_cache_folder_wait_for_each_other(tmp_path: Path, models_dir: Path) -> None:
    """Two processes compiling into one cold cache could map a blob the other was still writing
    (SIGBUS): a compile holds the folder's lock, so another process's compile waits for it. The
    lock is the folder's own: nothing but the blobs is written there."""
    import subprocess
    import sys
    import time

    from app.sessions import cache_lock

    script = (
        "import sys, openvino as ov; from pathlib import Path; "
        "from app.sessions import compile_config, compile_with_retry, create_core; "
        "compile_with_retry(create_core(Path(sys.argv[1])), Path(sys.argv[2]), compile_config())"
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    decoder = models_dir / "lite_medsam" / "decoder.xml"
    with cache_lock(str(cache)):
        other = subprocess.Popen([sys.executable, "-c", script, str(cache), str(decoder)], cwd=ROOT)
        time.sleep(4.0)  # enough to import and compile the decoder many times over
        assert other.poll() is None, "the other process compiled while the lock was held"
    assert other.wait(timeout=120) == 0
    assert any(cache.glob("*.blob"))
    assert {p.suffix for p in cache.iterdir()} == {".blob"}, sorted(cache.iterdir())


def test_threads_of_one_process_share_its_cache_lock_and_the_last_out_releases_it(tmp_path: Path) -> None:
    """A decoder loading in the background while the encoder loads (``prefetch_decoder``): both
    threads are inside the folder's lock at once (two flocks of one process would wait on each
    other), and the lock is free for another process once the last thread leaves."""
    import fcntl
    import os
    import threading

    from app.sessions import cache_lock

    def free_elsewhere() -> bool:  # another open file description stands for another process
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    inside = threading.Event()
    leave = threading.Event()

    def background() -> None:
        with cache_lock(str(tmp_path)):
            inside.set()
            leave.wait(30)

    with cache_lock(str(tmp_path)):
        thread = threading.Thread(target=background)
        thread.start()
        assert inside.wait(30), "the second thread waited for the first"
        assert not free_elsewhere()
    assert not free_elsewhere()  # the background thread is still inside
    leave.set()
    thread.join(30)
    assert free_elsewhere()


def test_a_prefetched_decoder_is_the_one_decoding_and_compiles_once(tmp_path: Path, models_dir: Path) -> None:
    """``prefetch_decoder`` loads the decoder in the background; the session's decoder is that
    graph (one compile, not two), and it decodes as one compiled in the foreground does."""
    from app.sessions import SessionCache, create_core

    sessions = SessionCache(create_core(tmp_path / "cache"), models_dir)
    sessions.prefetch_decoder("lite_medsam", "f32")
    sessions.prefetch_decoder("lite_medsam", "f32")  # already started: left alone
    session = sessions.get("lite_medsam", "f32")
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64), dtype=np.float32)
    box = np.array([30, 40, 120, 160], np.float32)
    logits = session.decode(embedding, box)
    assert sessions.compiles == 1 and not sessions._pending
    fresh = SessionCache(create_core(None), models_dir).get("lite_medsam", "f32")
    assert np.array_equal(logits, fresh.decode(embedding, box))
    sessions.prefetch_decoder("lite_medsam", "f32")  # compiled: nothing to start
    assert not sessions._pending and sessions.compiles == 1


def test_a_prefetch_that_failed_raises_where_the_decoder_is_needed(tmp_path: Path, models_dir: Path) -> None:
    """An error met in the background is the first decode's, not lost with the thread."""
    import shutil

    from app.sessions import SessionCache, create_core

    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    (models / "lite_medsam" / "decoder.xml").write_text("<net>not a graph")
    sessions = SessionCache(create_core(None), models)
    sessions.prefetch_decoder("lite_medsam", "f32")
    with pytest.raises(RuntimeError):
        sessions.get("lite_medsam", "f32").compile_decoder()


def test_box_router_scores_each_box_as_the_reference_does() -> None:
    """The router reuses its image's statistics across boxes; each score still equals the
    reference's novelty of that box's full features."""
    rng = np.random.default_rng(3)
    train = [features_of(0.3 * s, (20 + s, 20, 200, 190 + s), s)[None] for s in range(8)]
    ref = fit_reference(train, RouterConfig())
    router = BoxRouter(FakeSession(), FakeSession(), ref)
    emb = embedding_like(rng, 0.5)[None]  # (1, 256, 64, 64)
    boxes = [np.array(b, np.float32) for b in ([20, 20, 200, 200], [0, 0, 40, 30], [100, 60, 250, 255])]
    for box in boxes:
        router(emb, box, (256, 240))
    expected = [float(ref.novelty(box_features(emb[0], box, (256, 240)))[0]) for box in boxes]
    assert np.allclose([d.novelty for d in router.decisions], expected, rtol=1e-9)
    assert len(set(expected)) == 3
