import json

import pytest

from app.routing import DEFAULT_MODEL_KEY, MODALITY_ALIASES, MODALITY_MODEL, case_dims, modality, route


@pytest.mark.parametrize(("alias", "expected"), sorted(MODALITY_ALIASES.items()))
def test_every_alias_routes_in_challenge_names(alias: str, expected: str) -> None:
    assert modality(f"2DBox_{alias}_source_001.npz") == expected
    assert modality(f"3DBox_{alias.upper()}_source_001.npz") == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2DBox_OCT_retina_01.npz", "OCT"),  # not CT
        ("scan_OCT_retina.npz", "OCT"),
        ("3DBox_CT_abdomen_0001.npz", "CT"),
        ("2DBox_X-Ray_chest.npz", "XRay"),
        ("2dbox_x-ray_chest.npz", "XRay"),
        ("3DBOX_mr_brain.npz", "MR"),
        ("2DBox_Mammo_DDSM_001.npz", "Mammography"),
        ("2DBox_Unknown_thing.npz", None),
        ("patient42.npz", None),
        ("2DBox_Doctor_smith.npz", None),  # "ct" inside a word never matches
        ("3DBox_PETCT_x.npz", None),  # fused token names no modality: default model
    ],
)
def test_token_matching(name: str, expected: str | None) -> None:
    assert modality(name) == expected


def test_unknown_names_get_the_default_model() -> None:
    assert route("whatever_name.npz") == DEFAULT_MODEL_KEY


@pytest.mark.parametrize(("name", "dims"), [("2DBox_US_1.npz", 2), ("3dbox_ct_1.npz", 3), ("case.npz", None)])
def test_dims_from_prefix(name: str, dims: int | None) -> None:
    assert case_dims(name) == dims


def test_every_alias_target_has_a_model() -> None:
    assert set(MODALITY_ALIASES.values()) == set(MODALITY_MODEL)


def test_routing_targets_are_export_specs() -> None:
    from export.specs import MODEL_SPECS

    assert set(MODALITY_MODEL.values()) | {DEFAULT_MODEL_KEY} <= set(MODEL_SPECS)


def test_routing_targets_are_in_the_manifest(models_dir) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    assert set(MODALITY_MODEL.values()) | {DEFAULT_MODEL_KEY} <= set(manifest["models"])
