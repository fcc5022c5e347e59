"""Precision per route (app/precision.py): the table, the mode, the host check, and the runtime
compiling a route's graphs at its precision only where the host runs it natively."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.properties.hint as hints
import pytest

from app.precision import (
    case_precision,
    host_precisions,
    inference_type,
    mode_from,
    native_precisions,
    precision_table,
)
from app.sessions import compile_config
from common.synthetic import disks_2d, save_case
from evaluation.runner import with_precision

BF16_ROWS = [{"dims": 2, "modality": "Endoscopy", "precision": "bf16"}]


def test_precision_table_rejects_an_unknown_precision_and_a_route_named_twice() -> None:
    assert precision_table(BF16_ROWS) == {(2, "Endoscopy"): "bf16"}
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        precision_table([{"dims": 2, "modality": "US", "precision": "int4"}])
    with pytest.raises(ValueError, match="given twice"):
        precision_table(BF16_ROWS + BF16_ROWS)


@pytest.mark.parametrize(
    ("dims", "modality", "mode", "native", "want"),
    [
        (2, "Endoscopy", "auto", {"f32", "bf16"}, "bf16"),
        (2, "Endoscopy", "auto", {"f32"}, "f32"),  # no native bf16: fp32, LiteMedSAM's masks
        (2, "Endoscopy", "f32", {"f32", "bf16"}, "f32"),  # forced: masks independent of the CPU
        (3, "Endoscopy", "auto", {"f32", "bf16"}, "f32"),  # another route
        (2, "US", "auto", {"f32", "bf16"}, "f32"),  # a route the gate did not pass
        (2, None, "auto", {"f32", "bf16"}, "f32"),  # unknown modality
    ],
)
def test_case_precision(dims: int, modality: str | None, mode: str, native: set[str], want: str) -> None:
    assert case_precision(dims, modality, precision_table(BF16_ROWS), mode, native) == want


def test_mode_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEG_PRECISION", raising=False)
    assert mode_from(None) == "auto"
    monkeypatch.setenv("SEG_PRECISION", "f32")
    assert mode_from(None) == "f32"
    assert mode_from("auto") == "auto"
    monkeypatch.setenv("SEG_PRECISION", "bf16")
    with pytest.raises(ValueError, match="'bf16' is not one of"):
        mode_from(None)


def test_native_precisions_read_the_plugin_capabilities() -> None:
    assert native_precisions(["WINOGRAD", "FP32", "INT8"]) == {"f32"}
    assert native_precisions(["BF16", "FP32"]) == {"f32", "bf16", "bf16_encoder"}
    assert "f32" in host_precisions(ov.Core())


def test_compile_config_states_the_precision() -> None:
    assert compile_config()[hints.inference_precision] == ov.Type.f32
    assert compile_config(precision="bf16")[hints.inference_precision] == ov.Type.bf16
    with pytest.raises(ValueError, match="unknown precision"):
        inference_type("fp8")


@pytest.mark.parametrize(
    ("precision", "encoder", "decoder"),
    [
        ("f32", ov.Type.f32, ov.Type.f32),
        ("bf16", ov.Type.bf16, ov.Type.bf16),
        ("bf16_encoder", ov.Type.bf16, ov.Type.f32),
    ],
)
def test_each_graph_compiles_at_its_precisions_type(
    precision: str, encoder: ov.Type, decoder: ov.Type
) -> None:
    assert compile_config(precision=precision)[hints.inference_precision] == encoder
    assert compile_config(precision=precision, graph="decoder")[hints.inference_precision] == decoder
    with pytest.raises(ValueError, match="for a neck"):
        inference_type(precision, "neck")


def test_sessions_share_the_graphs_their_precisions_agree_on(models_dir: Path) -> None:
    """``bf16_encoder`` compiles the encoder as ``bf16`` does and the decoder as ``f32`` does: a
    process serving all three compiles each (graph, type) once, and the two bf16 encoders are one
    encoder (the same ``encoder_id``: a decoder of one may decode the other's embedding)."""
    from app.sessions import SessionCache, create_core

    sessions = SessionCache(create_core(None), models_dir)
    by = {p: sessions.get("lite_medsam", p) for p in ("bf16", "bf16_encoder", "f32")}
    for session in by.values():
        session.compile_all()
    assert sessions.compiles == 4  # encoder and decoder, at bf16 and at f32
    assert by["bf16_encoder"].compile_encoder() is by["bf16"].compile_encoder()
    assert by["bf16_encoder"].compile_decoder() is by["f32"].compile_decoder()
    assert by["bf16_encoder"].encoder_id == by["bf16"].encoder_id != by["f32"].encoder_id


@pytest.mark.parametrize("native", [{"f32"}, {"f32", "bf16"}])
def test_a_route_runs_bf16_only_on_a_host_that_runs_it_natively(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: set[str]
) -> None:
    import app.sessions
    from app.pipeline import predict_case
    from app.sessions import SessionCache, create_core

    monkeypatch.setattr(app.sessions, "host_precisions", lambda core: native)
    models = with_precision(models_dir, tmp_path / "models", BF16_ROWS)
    sessions = SessionCache(create_core(None), models)
    want = "bf16" if "bf16" in native else "f32"
    assert sessions.precision_for(2, "Endoscopy") == want
    assert sessions.precision_for(2, "XRay") == "f32"
    forced = SessionCache(create_core(None), models, precision_mode="f32")
    assert forced.precision_for(2, "Endoscopy") == "f32"
    image, boxes = disks_2d(seed=2)[:2]
    save_case(tmp_path / "in" / "2DBox_Endoscopy_disks.npz", image, boxes)
    (tmp_path / "out").mkdir()
    predict_case(tmp_path / "in" / "2DBox_Endoscopy_disks.npz", tmp_path / "out", sessions)
    session = sessions.get("lite_medsam", want)
    assert session.encoder_calls == 1
    # the compiled graph runs ``want`` where the real CPU has it (OpenVINO runs f32 on one without)
    compiled = want if want in host_precisions(ov.Core()) else "f32"
    assert session.compile_encoder().get_property(hints.inference_precision) == inference_type(compiled)


@pytest.mark.skipif("bf16" not in host_precisions(ov.Core()), reason="this CPU has no native bf16")
def test_bf16_masks_stay_close_to_fp32_and_fp32_stays_exact(models_dir: Path, tmp_path: Path) -> None:
    from app.pipeline import predict_case
    from app.sessions import SessionCache, create_core

    models = with_precision(models_dir, tmp_path / "models", BF16_ROWS)
    image, boxes = disks_2d(seed=4)[:2]
    case = tmp_path / "in" / "2DBox_Endoscopy_disks.npz"
    save_case(case, image, boxes)
    segs = {}
    for mode in ("auto", "f32", "plain_out"):
        (tmp_path / mode).mkdir()
    for mode in ("auto", "f32"):
        predict_case(case, tmp_path / mode, SessionCache(create_core(None), models, precision_mode=mode))
        with np.load(tmp_path / mode / case.name) as out:
            segs[mode] = out["segs"]
    plain = with_precision(models_dir, tmp_path / "plain", [])
    predict_case(case, tmp_path / "plain_out", SessionCache(create_core(None), plain))
    with np.load(tmp_path / "plain_out" / case.name) as out:
        np.testing.assert_array_equal(out["segs"], segs["f32"])  # no precision rows: fp32
    agreement = np.mean(segs["auto"] == segs["f32"])
    assert 0.95 < agreement  # close, and (on a CPU running bf16) rarely identical
