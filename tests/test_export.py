"""The exported models: manifest, checksums, parity results, metadata, compile settings."""

import json

import numpy as np
import openvino as ov
import pytest

from app.sessions import compile_config, read_manifest
from export.__main__ import build_identity, matching_pin
from modeling.checkpoint import sha256_file
from modeling.registry import model_specs

SPECS = model_specs()  # the registry: every test below runs once per model key (timm's way)


@pytest.fixture(scope="module")
def manifest(models_dir) -> dict:
    return json.loads((models_dir / "manifest.json").read_text())


def test_manifest_lists_exactly_the_registry(manifest) -> None:
    assert set(manifest["models"]) == set(SPECS)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_manifest_entry_matches_its_spec_and_files(key, manifest, models_dir) -> None:
    entry, spec = manifest["models"][key], SPECS[key]
    assert entry["source_checkpoint"]["sha256"] == spec.checkpoint_sha256
    shipped = {g for g in ("encoder", "decoder") if g not in entry.get("graphs", {})}
    assert set(entry["files"]) == {f"{g}.{ext}" for g in shipped for ext in ("xml", "bin")}
    for graph, shared in entry.get("graphs", {}).items():
        owner = shared.split("/")[0]
        assert manifest["models"][owner]["files"][f"{graph}.xml"], f"{key} shares a missing {shared}"
    if spec.overlays:
        trained = entry["trained"]
        assert {o.module: o.sha256 for o in spec.overlays} == {
            m: o["sha256"] for m, o in trained["overlays"].items()
        }
        assert {"training", "validation", "licence"} <= set(trained)
    for name, digest in entry["files"].items():
        assert sha256_file(models_dir / key / name) == digest, f"{key}/{name} changed since export"
    assert all(hop["passed"] for hop in entry["parity"])
    assert [hop["hop"] for hop in entry["parity"]] == ["torch->onnx", "onnx->openvino", "torch->openvino"]


def test_ir_is_byte_identical_to_the_build_pinned_for_this_cpu(models_dir) -> None:
    pins = json.loads((models_dir.parent / "export" / "pinned_ir_sha256.json").read_text())
    identity = build_identity()
    assert (
        json.loads((models_dir / "manifest.json").read_text())["versions"]["openvino"] == identity["openvino"]
    )
    pinned = matching_pin(pins, identity)
    if pinned is None:
        pytest.skip(
            f"no pinned build for {identity}: torch folds constants CPU-dependently; parity gates hold"
        )
    manifest = json.loads((models_dir / "manifest.json").read_text())
    for key, files in pinned["models"].items():
        if key in manifest["models"]:  # a pin vouches for the files it names (a graph re-formed
            shipped = manifest["models"][key]["files"]  # since is left out until re-pinned there)
            assert {name: shipped.get(name) for name in files} == files


def test_matching_pin_needs_every_identity_field() -> None:
    build = {"openvino": "1", "cpu": "A", "models": {}}
    assert matching_pin({"builds": [build]}, {"openvino": "1", "cpu": "A"}) is build
    assert matching_pin({"builds": [build]}, {"openvino": "1", "cpu": "B"}) is None
    assert matching_pin({}, {"openvino": "1", "cpu": "A"}) is None


@pytest.mark.parametrize("key", sorted(SPECS))
def test_ir_metadata_and_io(key, models_dir) -> None:
    core = ov.Core()
    entry = read_manifest(models_dir)[key]
    enc = core.read_model(entry.encoder_xml)
    assert enc.get_rt_info(["model_info", "model_key"]).astype(str) == entry.encoder_xml.parent.name
    assert [i.get_any_name() for i in enc.inputs] == ["image"]
    dec = core.read_model(entry.decoder_xml)
    assert dec.get_rt_info(["model_info", "model_key"]).astype(str) == key
    assert [i.get_any_name() for i in dec.inputs] == ["image_embeddings", "boxes"]
    assert [o.get_any_name() for o in dec.outputs] == ["low_res_logits"]


def test_sessions_compile_in_fp32_and_copy_outputs(real_session) -> None:
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    a = real_session.encode(x)
    b = real_session.encode(np.zeros_like(x))
    assert a.shape == (1, 256, 64, 64) and not np.array_equal(a, b)  # first result not overwritten
    precision = real_session._encoder.get_property("INFERENCE_PRECISION_HINT")
    assert str(precision) in {"<Type: 'float32'>", "f32"} or precision == ov.Type.f32
    assert ov.Type.f32 in compile_config().values()
