"""The compiled-model cache: what a warm-up writes is what the next process loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino.properties as props
import pytest

from app.precision import host_precisions
from app.sessions import SessionCache, create_core

# Largest |difference| between an encoder's embedding loaded from its blob and compiled afresh.
# An encoder compiled without snippets (``GRAPH_SETTINGS``) and loaded from its blob, whole or
# weightless, computes up to 4.8e-7 away from its fresh compile at bf16 (each way deterministic;
# with snippets it was exact), and exactly at fp32, on an AMD EPYC with AVX512_BF16; a decoder
# compiled without snippets differed at fp32 too (~1e-6), so other CPUs may see it at fp32. A
# fraction of bf16's own rounding (its embeddings move ~0.02 from fp32); stale weights or another
# precision's blob move them by 1e-3 and more.
ENCODER_RELOAD_ATOL = {"f32": 1e-6, "bf16": 1e-6}


def same_embedding(loaded: np.ndarray, fresh: np.ndarray, precision: str) -> bool:
    return bool(np.allclose(loaded, fresh, rtol=0.0, atol=ENCODER_RELOAD_ATOL[precision]))


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_every_graph_loads_from_the_cache_a_warmup_wrote_and_computes_the_same(
    tmp_path: Path, models_dir: Path, precision: str
) -> None:
    """At either precision, graphs read from an IR file cache weightless (their blob a small
    fraction of their .bin), the batched decoder (reshaped in memory) whole (``cache_mode``). A
    fresh Core loads all three from the cache, and the loaded encoder and decoders compute what
    a compile without a cache computes (the encoder at bf16 within ``ENCODER_RELOAD_ATOL``)."""
    if precision not in host_precisions(create_core(None)):
        pytest.skip(f"this CPU does not run {precision} natively")
    cache = tmp_path / "cache"
    SessionCache(create_core(cache), models_dir).get("lite_medsam", precision).compile_all(decoder_batch=8)
    bins = sorted((models_dir / "lite_medsam" / f"{g}.bin").stat().st_size for g in ("decoder", "encoder"))
    blobs = sorted(p.stat().st_size for p in (cache / precision).glob("*.blob"))
    assert len(blobs) == 3 and len(list(cache.rglob("*.blob"))) == 3, blobs
    assert blobs[0] < bins[0] / 10 and blobs[1] < bins[0] / 10, (blobs, bins)  # weightless IR graphs
    assert blobs[2] > bins[0] / 2, (blobs, bins)  # the batched decoder, with its weights

    warm = SessionCache(create_core(cache), models_dir).get("lite_medsam", precision)
    graphs = [warm.compile_encoder(), warm.compile_decoder(), warm.compile_decoder(8)]
    assert [g.get_property(props.loaded_from_cache) for g in graphs] == [True, True, True]

    fresh = SessionCache(create_core(None), models_dir).get("lite_medsam", precision)
    image = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    embedding = warm.encode(image)
    assert same_embedding(embedding, fresh.encode(image), precision)
    boxes = np.array([[30, 40, 120, 160], [60, 60, 200, 220]], np.float32)  # (2, 4) model frame
    assert np.array_equal(warm.decode(embedding, boxes[0]), fresh.decode(embedding, boxes[0]))
    assert np.array_equal(warm.decode_many(embedding, boxes, 8), fresh.decode_many(embedding, boxes, 8))


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_a_weight_file_changed_in_place_is_what_the_cached_graph_computes(
    tmp_path: Path, models_dir: Path, precision: str
) -> None:
    """OpenVINO keys a blob of a graph read from a file by the file's path, not its weights: a
    whole blob kept computing with the old weights after the .bin was rewritten in place (seen
    with OPTIMIZE_SPEED). The app's weightless blobs read the weights from the .bin at each load,
    so a re-export into the same folder can never run stale weights, at either precision."""
    import shutil

    from app.sessions import cache_mode, compile_config, compile_with_retry

    if precision not in host_precisions(create_core(None)):
        pytest.skip(f"this CPU does not run {precision} natively")

    for suffix in (".xml", ".bin"):
        shutil.copy(models_dir / "lite_medsam" / f"decoder{suffix}", tmp_path / f"decoder{suffix}")
    xml, cache = tmp_path / "decoder.xml", tmp_path / "cache"
    rng = np.random.default_rng(0)
    feed = {"image_embeddings": rng.standard_normal((1, 256, 64, 64), dtype=np.float32),
            "boxes": np.array([[40, 50, 180, 200]], np.float32)}  # fmt: skip

    def logits(cache_dir: Path | None) -> tuple[np.ndarray, bool]:
        config = compile_config(precision=precision, graph="decoder") | cache_mode(xml)
        compiled = compile_with_retry(create_core(cache_dir), xml, config)
        return np.array(compiled(feed)[0]), bool(compiled.get_property(props.loaded_from_cache))

    before, _ = logits(cache)
    weights = np.fromfile(tmp_path / "decoder.bin", np.float32)
    weights[weights.size // 2 : weights.size // 2 + 100_000] *= 1.5  # same size, same path
    weights.tofile(tmp_path / "decoder.bin")
    after, loaded = logits(cache)
    fresh, _ = logits(None)
    assert loaded  # the same blob...
    assert np.array_equal(after, fresh) and not np.array_equal(after, before)  # ...with today's weights


@pytest.mark.parametrize("order", [("bf16", "f32"), ("f32", "bf16")])
def test_each_precision_loads_only_its_own_blobs_and_computes_its_own(
    tmp_path: Path, models_dir: Path, order: tuple[str, str]
) -> None:
    """OpenVINO's cache key covers neither the precision hint nor the cache mode: sharing one
    folder, a graph read from a file and compiled at one precision wrote the weightless blob the
    other precision then loaded, and on an Intel Xeon with AMX the lite_medsam decoder compiled
    at fp32 and loaded at bf16 computed logits up to 24.8 away from bf16's own. Each inference
    type has its own subfolder (``precision_cache``): in either order, the second precision
    compiles its own blobs (nothing loaded), and each computes what its precision computes
    without a cache (exactly, but for ``ENCODER_RELOAD_ATOL``), the two differing."""
    if "bf16" not in host_precisions(create_core(None)):
        pytest.skip("this CPU does not run bf16 natively")
    cache = tmp_path / "cache"
    image = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    box = np.array([30, 40, 120, 160], np.float32)  # (4,) model frame
    outputs = {}
    for precision in order:
        cached = SessionCache(create_core(cache), models_dir).get("lite_medsam", precision)
        graphs = [cached.compile_encoder(), cached.compile_decoder()]
        assert [g.get_property(props.loaded_from_cache) for g in graphs] == [False, False], precision
        assert len(list((cache / precision).glob("*.blob"))) == 2, precision
        fresh = SessionCache(create_core(None), models_dir).get("lite_medsam", precision)
        embedding = cached.encode(image)
        assert same_embedding(embedding, fresh.encode(image), precision), precision
        assert np.array_equal(cached.decode(embedding, box), fresh.decode(embedding, box)), precision
        outputs[precision] = embedding
    assert not np.array_equal(outputs["f32"], outputs["bf16"])


def test_a_read_only_cache_without_a_precision_folder_compiles_that_precision_uncached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baked cache in a read-only image lacking a precision's folder (baked on a host without
    that precision): that precision compiles uncached; a folder that is there is used."""
    import openvino as ov

    from app.sessions import precision_cache

    cache = tmp_path / "cache"
    (cache / "f32").mkdir(parents=True)
    core = create_core(cache)

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        msg = f"read-only: {self}"
        raise PermissionError(msg)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert precision_cache(core, ov.Type.bf16) == {props.cache_dir: ""}
    assert precision_cache(core, ov.Type.f32) == {props.cache_dir: str(cache / "f32")}
    assert precision_cache(create_core(None), ov.Type.f32) == {}


@pytest.mark.parametrize("order", [("f32", "bf16"), ("bf16", "f32")])
def test_a_graph_built_in_memory_has_a_blob_per_precision(
    tmp_path: Path, models_dir: Path, order: tuple[str, str]
) -> None:
    """A batched or windowed decoder is built in memory and cached whole. A whole blob compiled
    at fp32 and loaded at bf16 computed neither precision's logits (max |diff| 0.005: one pixel
    of a Microscopy mask differed between the container and the host, whose cache the fp32 runs
    had filled first). Marked with its inference type (``keyed_by_type``), each precision
    compiles its own blob, computes its own logits, and loads that blob in the next process."""
    if "bf16" not in host_precisions(create_core(None)):
        pytest.skip("this CPU does not run bf16 natively")
    cache = tmp_path / "cache"
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64), dtype=np.float32)
    boxes = np.array([[30, 40, 120, 160], [60, 60, 200, 220]], np.float32)  # (2, 4) model frame
    for run, loaded in ((0, False), (1, True)):  # a cold cache, then a warm one
        for precision in order:
            cached = SessionCache(create_core(cache), models_dir).get("lite_medsam", precision)
            assert cached.compile_decoder(8).get_property(props.loaded_from_cache) == loaded, (run, precision)
            fresh = SessionCache(create_core(None), models_dir).get("lite_medsam", precision)
            many = cached.decode_many(embedding, boxes, 8)
            assert np.array_equal(many, fresh.decode_many(embedding, boxes, 8)), (run, precision)
    assert [len(list((cache / p).glob("*.blob"))) for p in order] == [1, 1]


def test_a_second_warmup_loads_every_graph_from_the_cache_and_says_so(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``make container-test`` reads off ``python -m app --warmup`` in the image: the first
    warm-up into an empty cache compiles each model's graphs at its first precision (a host with
    native bf16 warms more than one, and a later one finds no blob of the first's: each precision
    keeps its own, ``precision_cache``); a second warm-up loads every graph."""
    from app.cli import warmup
    from container.check import WARMUP_COUNTS, warmup_counts

    cache = tmp_path / "cache"
    cache.mkdir()
    assert warmup(models_dir, cache, "auto", 8) == 0
    first = capsys.readouterr().err
    lines = [line for line in first.splitlines() if WARMUP_COUNTS.search(line)]
    firsts = {line.split()[1]: line for line in reversed(lines)}  # each model's first line
    assert firsts and all(warmup_counts(line)[1] == 0 for line in firsts.values()), firsts
    assert warmup(models_dir, cache, "auto", 8) == 0
    graphs = warmup_counts(first)[0]
    assert graphs > 0 and warmup_counts(capsys.readouterr().err) == (graphs, graphs)


def test_each_graph_compiles_with_its_settings_and_they_take_effect(models_dir: Path) -> None:
    """``GRAPH_SETTINGS``: the encoder without snippets (its attention and element-wise chains
    run as separate kernels: no ``Subgraph`` node in the compiled graph), the decoder with them.
    OpenVINO accepts SNIPPETS_MODE without listing it: an OpenVINO that ignored or refused it
    would fail here."""
    import openvino as ov

    from app.sessions import GRAPH_SETTINGS, compile_config

    def fused(graph: str, config: dict) -> int:
        xml = models_dir / "lite_medsam" / f"{graph}.xml"
        runtime = ov.Core().compile_model(str(xml), "CPU", config).get_runtime_model()
        return sum(op.get_rt_info()["layerType"].astype(str) == "Subgraph" for op in runtime.get_ops())

    assert GRAPH_SETTINGS["encoder"] == {"SNIPPETS_MODE": "DISABLE"}
    assert compile_config(graph="encoder")["SNIPPETS_MODE"] == "DISABLE"
    assert "SNIPPETS_MODE" not in compile_config(graph="decoder")
    plain = {k: v for k, v in compile_config(graph="encoder").items() if k != "SNIPPETS_MODE"}
    assert fused("encoder", compile_config(graph="encoder")) == 0
    if fused("encoder", plain) == 0:  # the plugin makes snippets on AVX2 and above only
        pytest.skip("this CPU's plugin makes no snippets: nothing to turn off")


def test_the_cache_folder_is_named_by_the_compile_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO keys a file graph's blob by its path and the device only, and the blob keeps the
    settings it was compiled with: blobs compiled under other ``GRAPH_SETTINGS`` (an older build's
    cache) must not be found. The app's cache is a subfolder named by the settings."""
    from app import sessions

    first = sessions.cache_dir_from(tmp_path)
    assert first == tmp_path / sessions.settings_folder() and first.is_dir()
    monkeypatch.setenv(sessions.ENCODER_SNIPPETS_ENV, "1")  # the product before stop 42
    assert "SNIPPETS_MODE" not in sessions.compile_config(graph="encoder")
    second = sessions.cache_dir_from(tmp_path)
    assert second is not None and second.parent == tmp_path and second != first
    monkeypatch.delenv(sessions.ENCODER_SNIPPETS_ENV)
    monkeypatch.setitem(sessions.GRAPH_SETTINGS, "encoder", {"SNIPPETS_MODE": "DISABLE", "OTHER": "1"})
    assert sessions.cache_dir_from(tmp_path) not in (first, second)
