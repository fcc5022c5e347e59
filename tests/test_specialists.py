"""Trained models in the registry: cards -> specs -> overlays -> export with a shared encoder ->
routes in the manifest -> the app picks the specialist; the gate's rule and its bookkeeping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from export.__main__ import encoder_owners
from modeling.registry import BASE, BASE_KEY, CARD_NAME, get_spec, load_model, model_specs, trained_specs
from train.gate import (
    ALL,
    SPECIALIST_RULE,
    STUDENT_RULE,
    Rule,
    candidate_card,
    change_interval,
    decisions,
    dsc_changes,
    group_means,
    passes_gate,
    probe_verdict,
    route_results,
    row_verdict,
    write_candidate,
    write_report,
)
from train.provenance import SOURCE_TERMS, UNKNOWN_TERMS, source_tag, sources_of


def perturbed_decoder(path: Path, scale: float = 1.01) -> dict[str, torch.Tensor]:
    """LiteMedSAM's decoder with every weight scaled, saved fp16 to ``path``."""
    base = load_model(BASE)
    state = {k: (v * scale).half() for k, v in base.mask_decoder.state_dict().items()}
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def specialist_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with one decoder specialist for 2D ultrasound."""
    weights = tmp_path_factory.mktemp("weights")
    decoder = weights / "decoder_src.pt"
    perturbed_decoder(decoder)
    training = {"command": "test", "sources": sources_of(["2DBox_US_HC18_1.npz"])}
    card = candidate_card("us_2d", decoder, training)
    write_candidate(weights / "us_2d", card, decoder)
    return weights


def test_no_cards_means_only_the_base(tmp_path: Path) -> None:
    assert trained_specs(tmp_path) == {}
    assert list(model_specs(tmp_path)) == [BASE_KEY]


def test_card_becomes_a_spec_with_routes_and_overlay(specialist_weights: Path) -> None:
    spec = get_spec("us_2d", specialist_weights)
    assert spec.routes == ((2, "US"),)
    assert encoder_owners({BASE_KEY: BASE, "us_2d": spec})["us_2d"] == BASE_KEY
    assert [o.module for o in spec.overlays] == ["mask_decoder"]
    model, base = load_model(spec), load_model(BASE)
    trained, original = model.mask_decoder.state_dict(), base.mask_decoder.state_dict()
    for k, v in trained.items():
        assert torch.allclose(v, (original[k] * 1.01).half().float()), k
    enc, enc_base = model.image_encoder.state_dict(), base.image_encoder.state_dict()
    assert all(torch.equal(enc[k], enc_base[k]) for k in enc)


def test_overlay_with_a_wrong_sha256_is_refused(specialist_weights: Path, tmp_path: Path) -> None:
    card = json.loads((specialist_weights / "us_2d" / CARD_NAME).read_text())
    card["overlays"]["mask_decoder"]["sha256"] = "0" * 64
    folder = tmp_path / "us_2d"
    folder.mkdir()
    (folder / CARD_NAME).write_text(json.dumps(card))
    (folder / "decoder_fp16.pt").write_bytes((specialist_weights / "us_2d" / "decoder_fp16.pt").read_bytes())
    with pytest.raises(ValueError, match="sha256"):
        load_model(get_spec("us_2d", tmp_path))


def test_overlay_for_an_unknown_module_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    overlays = {"prompt_encoder": {"file": "a", "sha256": ""}}
    card = {"architecture": "lite_medsam", "licence": "x", "overlays": overlays}
    (folder / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not among"):
        trained_specs(tmp_path)


def test_export_of_a_specialist_shares_the_encoder_and_routes_the_app(
    specialist_weights: Path, models_dir: Path, tmp_path: Path
) -> None:
    from app.routing import route
    from app.sessions import SessionCache, create_core, read_manifest
    from export.__main__ import export_one, write_manifest

    models = tmp_path / "models"
    models.mkdir()
    (models / BASE_KEY).symlink_to(models_dir / BASE_KEY)
    base_entry = json.loads((models_dir / "manifest.json").read_text())["models"][BASE_KEY]
    entry = export_one("us_2d", models, tmp_path / "onnx", specialist_weights)
    assert entry["graphs"] == {"encoder": f"{BASE_KEY}/encoder.xml"}
    assert set(entry["files"]) == {"decoder.xml", "decoder.bin"}
    assert all(h["passed"] for h in entry["parity"])
    assert entry["trained"]["overlays"]["mask_decoder"]["sha256"]
    write_manifest(models, {BASE_KEY: base_entry, "us_2d": entry}, specialist_weights)
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["routes"] == [{"dims": 2, "modality": "US", "model": "us_2d"}]
    assert read_manifest(models)["us_2d"].encoder_xml == models / BASE_KEY / "encoder.xml"
    sessions = SessionCache(create_core(None), models)
    assert route("2DBox_US_HC18_1.npz", 2, sessions.routes) == "us_2d"
    assert route("3DBox_US_x_1.npz", 3, sessions.routes) == BASE_KEY
    spec, base = sessions.get("us_2d"), sessions.get(BASE_KEY)
    assert spec._encoder is base._encoder  # one compiled encoder for both keys
    image = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    emb = base.encode(image)
    box = np.array([40, 40, 200, 180], np.float32)
    assert not np.allclose(spec.decode(emb, box), base.decode(emb, box))


def test_manifest_routes_naming_a_missing_model_are_refused(tmp_path: Path, models_dir: Path) -> None:
    from app.sessions import SessionCache, create_core

    manifest = json.loads((models_dir / "manifest.json").read_text())
    manifest["routes"] = [{"dims": 2, "modality": "US", "model": "ghost"}]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="ghost"):
        SessionCache(create_core(None), tmp_path)


@pytest.mark.parametrize(
    ("base", "spec", "ok"),
    [
        ((0.50, 0.40), (0.51, 0.40), True),  # exactly one point, NSD equal
        ((0.50, 0.40), (0.509, 0.45), False),  # under one point
        ((0.50, 0.40), (0.60, 0.399), False),  # NSD lost
        ((0.50, math.nan), (0.60, 0.5), False),
    ],
)
def test_gate_rule(base: tuple[float, float], spec: tuple[float, float], ok: bool) -> None:
    assert passes_gate(*base, *spec) is ok


def test_group_means_skip_nan_nsd_and_other_cases() -> None:
    rows = [
        {"case": "a", "base_dsc": 0.5, "base_nsd": float("nan"), "spec_dsc": 0.7, "spec_nsd": 0.6},
        {"case": "b", "base_dsc": 0.7, "base_nsd": 0.4, "spec_dsc": 0.9, "spec_nsd": 0.8},
        {"case": "c", "base_dsc": 0.0, "base_nsd": 0.0, "spec_dsc": 0.0, "spec_nsd": 0.0},
    ]
    assert group_means(rows, ["a", "b"]) == pytest.approx((0.6, 0.4, 0.8, 0.7))


def test_route_results_split_a_group_by_modality() -> None:
    rows = [
        {"case": "a", "modality": "CT", "base_dsc": 0.8, "base_nsd": 0.5, "spec_dsc": 0.7, "spec_nsd": 0.4},
        {"case": "b", "modality": "PET", "base_dsc": 0.3, "base_nsd": 0.2, "spec_dsc": 0.7, "spec_nsd": 0.4},
    ]
    results = route_results(rows, {"thin_2d": ["a", "b"]}, SPECIALIST_RULE)
    assert [(r.modality, r.cases) for r in results] == [("CT", 1), ("PET", 1), (ALL, 2)]
    assert [r.modality for r in decisions(results, "thin_2d")] == []  # one case each: too few to tell
    many = route_results(rows, {"thin_2d": ["a", "b"]}, Rule(0.01, 0.0, "", min_cases=1))
    assert [r.modality for r in decisions(many, "thin_2d")] == ["PET"]


def student_row(case: str, base: float, spec: float) -> dict[str, object]:
    return {
        "case": case,
        "modality": "CT",
        "base_dsc": base,
        "base_nsd": base,
        "spec_dsc": spec,
        "spec_nsd": spec,
    }


def test_student_rule_holds_on_every_source_of_a_route() -> None:
    """The route's mean is within half a point, but one source (one case) loses three: the route
    keeps LiteMedSAM; the source's row says why."""
    names = ["3DBox_CT_A_1.npz", "3DBox_CT_A_2.npz", "3DBox_CT_A_3.npz", "3DBox_CT_B_1.npz"]
    rows = [student_row(n, 0.80, 0.805) for n in names[:3]] + [student_row(names[3], 0.80, 0.77)]
    results = route_results(rows, {"ct_3d": names}, STUDENT_RULE)
    assert [(r.source, r.cases) for r in results] == [(ALL, 4), ("A", 3), ("B", 1), (ALL, 4)]
    route = results[0]
    assert route.accepted  # pooled: -0.0037
    assert decisions(results, "ct_3d") == []
    assert [row_verdict(results, r) for r in results] == [
        "keeps LiteMedSAM", "within the rule", "fails the rule", "(group mean)"
    ]  # fmt: skip
    assert [probe_verdict(results, r) for r in results][:2] == ["would keep LiteMedSAM", "within the rule"]
    rows[3] = student_row(names[3], 0.80, 0.794)  # DSC 0.6 point down on source B: over half a point
    assert decisions(route_results(rows, {"ct_3d": names}, STUDENT_RULE), "ct_3d") == []
    rows[3] = student_row(names[3], 0.80, 0.797)  # within half a point everywhere (NSD too)
    assert decisions(route_results(rows, {"ct_3d": names}, STUDENT_RULE), "ct_3d") != []
    rows[3] = {**rows[3], "spec_nsd": 0.78}  # NSD two points down on source B
    assert decisions(route_results(rows, {"ct_3d": names}, STUDENT_RULE), "ct_3d") == []


def test_student_gate_report_marks_the_sources_it_never_trained_on(tmp_path: Path) -> None:
    names = ["3DBox_CT_A_1.npz", "3DBox_CT_A_2.npz", "3DBox_CT_A_3.npz", "3DBox_CT_B_1.npz"]
    rows = [student_row(n, 0.80, 0.80) for n in names]
    write_report(route_results(rows, {"ct_3d": names}, STUDENT_RULE), rows, tmp_path, "cmd", "student", {"A"})
    table = (tmp_path / "README.md").read_text()
    assert "| ct_3d: CT 3D / B (*unseen*) | 1 |" in table and "| ct_3d: CT 3D / A | 3 |" in table
    row = "| ct_3d: CT 3D | 4 | 0.8000 | 0.8000 | +0.0000 | [+0.0000, +0.0000] | 0.8000 | 0.8000 | shipped |"
    assert row in table
    assert json.loads((tmp_path / "gate.json").read_text())[2]["verdict"] == "within the rule"


def test_the_interval_of_a_gain_is_a_seeded_paired_bootstrap_of_its_cases() -> None:
    changes = np.array([-0.02, 0.0, 0.01, -0.01, 0.03, np.nan])  # the NaN case is skipped
    low, high = change_interval(changes)
    assert low < np.nanmean(changes) < high
    assert -0.02 <= low and high <= 0.03  # a mean of resampled cases stays within their range
    assert change_interval(changes) == (low, high)  # seeded
    wider = change_interval(changes, level=0.99)
    assert wider[0] <= low and high <= wider[1]
    assert change_interval(np.full(4, 0.005)) == pytest.approx((0.005, 0.005))  # no spread: none
    assert all(math.isnan(v) for v in change_interval(np.array([np.nan])))
    one_big_loss = np.array([0.0] * 11 + [-0.12])  # 12 cases, one loses 12 points: mean -1 point
    low, high = change_interval(one_big_loss)
    assert low < -0.005 and high == 0.0  # the rule's line lies inside: the loss could be noise


def test_dsc_changes_pair_each_case_and_skip_a_missing_score() -> None:
    rows = [
        student_row("a", 0.8, 0.9),
        student_row("b", 0.7, 0.6),
        {**student_row("c", 0.5, 0.5), "spec_dsc": ""},
    ]
    got = dsc_changes(rows, ["a", "c", "b"])
    assert got[:2] == pytest.approx([0.1, -0.1]) and math.isnan(got[2])
    assert route_results(rows[:2], {"ct_3d": ["a", "b"]}, STUDENT_RULE)[0].dsc_interval[0] < 0


def test_provenance_names_sources_and_terms() -> None:
    assert source_tag("2DBox_US_HC18_007.npz") == "HC18"
    assert source_tag("3DBox_MR_BraTS2013deepmedic_pat0001.npz") == "BraTS2013deepmedic"
    got = sources_of(["2DBox_US_HC18_1.npz", "2DBox_US_HC18_2.npz", "2DBox_US_Mystery_3.npz"])
    assert got["HC18"] == {"cases": 2, "terms": SOURCE_TERMS["HC18"]}
    assert got["Mystery"]["terms"] == UNKNOWN_TERMS


# What weights/ may hold in git: two student encoders (11.8 MB each, fp16) and five decoder
# specialists (~8.2 MB each) came to 65.6 MB at stop 45; a third student or a sixth specialist
# should replace one, not add to them.
WEIGHTS_BUDGET_BYTES = 64 * 2**20


def test_shipped_weights_fit_the_budget_and_have_cards() -> None:
    from modeling.registry import WEIGHTS_DIR

    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file() and p.name != "README.md"]
    assert sum(p.stat().st_size for p in files) < WEIGHTS_BUDGET_BYTES
    for spec in trained_specs().values():
        assert spec.card["validation"], "a shipped model records its validation result"
        for overlay in spec.overlays:
            assert overlay.path.is_file()


def test_encoder_ir_ships_once_per_encoder_and_decoders_over_a_student_share_it() -> None:
    from export.__main__ import export_order
    from modeling.registry import ModelSpec, Overlay

    def spec(arch: str, *overlays: tuple[str, str]) -> ModelSpec:
        return ModelSpec(arch, BASE.checkpoint, BASE.checkpoint_sha256, "test", "test",
                         overlays=tuple(Overlay(m, Path(f"{m}.pt"), sha) for m, sha in overlays))  # fmt: skip

    specs = {
        "us_2d": spec("lite_medsam", ("mask_decoder", "d1")),
        "us_2d_over_student": spec("student_x", ("image_encoder", "e1"), ("mask_decoder", "d2")),
        "student_x": spec("student_x", ("image_encoder", "e1")),
        "student_y": spec("student_x", ("image_encoder", "e2")),  # same architecture, other weights
        BASE_KEY: BASE,
    }
    assert export_order(specs) == [BASE_KEY, "student_x", "student_y", "us_2d", "us_2d_over_student"]
    assert encoder_owners(specs) == {
        BASE_KEY: BASE_KEY, "us_2d": BASE_KEY, "student_x": "student_x", "student_y": "student_y",
        "us_2d_over_student": "student_x",
    }  # fmt: skip
    alone = {k: specs[k] for k in (BASE_KEY, "us_2d_over_student")}
    assert encoder_owners(alone)["us_2d_over_student"] == "us_2d_over_student"  # no student exported


def test_stored_weights_keep_integer_buffers_exact() -> None:
    from modeling.checkpoint import state_fp16, state_fp32

    bn = torch.nn.BatchNorm2d(4)
    bn.num_batches_tracked.fill_(100_000)  # past fp16's largest finite value (65504)
    stored = state_fp16(bn.state_dict())
    assert stored["weight"].dtype == torch.float16 and stored["num_batches_tracked"].dtype == torch.int64
    restored = torch.nn.BatchNorm2d(4)
    restored.load_state_dict(state_fp32(stored), strict=True)
    assert int(restored.num_batches_tracked) == 100_000 and restored.weight.dtype == torch.float32


def student_card(weights: Path, key: str = "student_tinyvit_r112d") -> str:
    """A student encoder card in ``weights``: the student's architecture, initial weights (fp16)."""
    from modeling.architectures.sam import build_architecture
    from modeling.checkpoint import sha256_file

    folder = weights / key
    folder.mkdir(parents=True)
    encoder = build_architecture(key).image_encoder.state_dict()
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in encoder.items()}, folder / "encoder_fp16.pt"
    )
    overlay = {"file": "encoder_fp16.pt", "sha256": sha256_file(folder / "encoder_fp16.pt")}
    card = {"key": key, "kind": "student encoder", "architecture": key, "licence": "x",
            "overlays": {"image_encoder": overlay}, "routes": [{"dims": 3, "modality": "CT"}]}  # fmt: skip
    (folder / CARD_NAME).write_text(json.dumps(card))
    return key


def test_a_specialist_over_a_student_shares_the_students_encoder(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    student = student_card(weights)
    decoder = tmp_path / "decoder_src.pt"
    perturbed_decoder(decoder)
    card = candidate_card("pet_3d", decoder, {"command": "test"}, student, weights)
    write_candidate(weights / "pet_3d", card, decoder)
    assert sorted(p.name for p in (weights / "pet_3d").iterdir()) == [CARD_NAME, "decoder_fp16.pt"]
    assert card["encoder"] == student
    specs = model_specs(weights)
    assert specs["pet_3d"].architecture == student
    assert encoder_owners(specs)["pet_3d"] == student  # one encoder IR for both
    model, over = load_model(specs["pet_3d"]), load_model(specs[student])
    enc, enc_student = model.image_encoder.state_dict(), over.image_encoder.state_dict()
    assert all(torch.equal(enc[k], enc_student[k]) for k in enc)
    trained, original = model.mask_decoder.state_dict(), load_model(BASE).mask_decoder.state_dict()
    assert all(torch.allclose(v, (original[k] * 1.01).half().float()) for k, v in trained.items())


def test_a_student_a_specialist_was_trained_over_is_kept_without_routes(tmp_path: Path) -> None:
    from train.distill.gate import hand_over, read_cards

    route = [{"dims": 3, "modality": "CT"}]
    for key, card in {"s": {"kind": "student encoder", "routes": route},
                      "pet_3d": {"kind": "decoder specialist", "encoder": "s"}}.items():  # fmt: skip
        (tmp_path / key).mkdir()
        (tmp_path / key / CARD_NAME).write_text(json.dumps(card))
    hand_over(tmp_path, {"s": set()}, read_cards(tmp_path))
    assert read_cards(tmp_path)["s"]["routes"] == []
    (tmp_path / "pet_3d" / CARD_NAME).unlink()
    hand_over(tmp_path, {"s": set()}, {"s": {"kind": "student encoder", "routes": route}})
    assert not (tmp_path / "s").exists()
