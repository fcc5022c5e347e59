import json

import pytest

from app.routing import DEFAULT_MODEL_KEY, MODALITY_ALIASES, case_dims, modality, route, routes_from_rows


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
    assert route("whatever_name.npz", 2, {(2, "US"): "us_2d"}) == DEFAULT_MODEL_KEY


def test_routes_are_keyed_by_dims_and_modality() -> None:
    routes = {(3, "CT"): "volumes_3d", (2, "US"): "us_2d"}
    assert route("3DBox_CT_x_1.npz", 3, routes) == "volumes_3d"
    assert route("2DBox_CT_x_1.npz", 2, routes) == DEFAULT_MODEL_KEY  # a 3D specialist keeps off 2D CT
    assert route("2DBox_US_x_1.npz", 2, routes) == "us_2d"
    assert route("2DBox_Fundus_x_1.npz", 2, routes) == DEFAULT_MODEL_KEY


def test_route_rows_reject_clashes_and_unknown_modalities() -> None:
    rows = [{"dims": 2, "modality": "US", "model": "a"}]
    assert routes_from_rows(rows) == {(2, "US"): "a"}
    with pytest.raises(ValueError, match="claimed by both"):
        routes_from_rows([*rows, {"dims": 2, "modality": "US", "model": "b"}])
    with pytest.raises(ValueError, match="unknown modality"):
        routes_from_rows([{"dims": 2, "modality": "Ultrasound", "model": "a"}])
    with pytest.raises(ValueError, match="unknown modality"):
        routes_from_rows([{"dims": 4, "modality": "US", "model": "a"}])


@pytest.mark.parametrize(("name", "dims"), [("2DBox_US_1.npz", 2), ("3dbox_ct_1.npz", 3), ("case.npz", None)])
def test_dims_from_prefix(name: str, dims: int | None) -> None:
    assert case_dims(name) == dims


def test_routing_targets_are_export_specs() -> None:
    from modeling.registry import BASE_KEY, model_specs

    specs = model_specs()
    assert DEFAULT_MODEL_KEY == BASE_KEY
    for key, spec in specs.items():
        for dims, mod in spec.routes:
            assert mod in set(MODALITY_ALIASES.values()), f"{key} routes unknown modality {mod}"
            assert dims in (2, 3)


def test_manifest_routes_exactly_the_shipped_specialists(models_dir) -> None:
    from export.__main__ import route_rows

    manifest = json.loads((models_dir / "manifest.json").read_text())
    assert DEFAULT_MODEL_KEY in manifest["models"]
    assert manifest["routes"] == route_rows(sorted(manifest["models"]))
    assert {r["model"] for r in manifest["routes"]} <= set(manifest["models"])
