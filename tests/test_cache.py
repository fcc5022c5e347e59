"""The compiled-model cache: what a warm-up writes is what the next process loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino.properties as props
import pytest

from app.precision import host_precisions
from app.sessions import SessionCache, create_core


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_every_graph_loads_from_the_cache_a_warmup_wrote_and_computes_the_same(
    tmp_path: Path, models_dir: Path, precision: str
) -> None:
    """Graphs read from an IR file cache weightless (their blob a small fraction of their .bin),
    the batched decoder (reshaped in memory) whole; a fresh Core loads all three from the cache,
    and the loaded encoder and decoders compute what a compile without a cache computes."""
    if precision not in host_precisions(create_core(None)):
        pytest.skip(f"this CPU does not run {precision} natively")
    cache = tmp_path / "cache"
    SessionCache(create_core(cache), models_dir).get("lite_medsam", precision).compile_all(decoder_batch=8)
    bins = sorted((models_dir / "lite_medsam" / f"{g}.bin").stat().st_size for g in ("decoder", "encoder"))
    blobs = sorted(p.stat().st_size for p in cache.glob("*.blob"))
    assert len(blobs) == 3, blobs
    assert blobs[0] < bins[0] / 10 and blobs[1] < bins[0] / 10, (blobs, bins)  # weightless: both IR graphs
    assert blobs[2] > bins[0] / 2, (blobs, bins)  # the batched decoder, with its weights

    warm = SessionCache(create_core(cache), models_dir).get("lite_medsam", precision)
    graphs = [warm.compile_encoder(), warm.compile_decoder(), warm.compile_decoder(8)]
    assert [g.get_property(props.loaded_from_cache) for g in graphs] == [True, True, True]

    fresh = SessionCache(create_core(None), models_dir).get("lite_medsam", precision)
    image = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    embedding = warm.encode(image)
    assert np.array_equal(embedding, fresh.encode(image))
    boxes = np.array([[30, 40, 120, 160], [60, 60, 200, 220]], np.float32)  # (2, 4) model frame
    assert np.array_equal(warm.decode(embedding, boxes[0]), fresh.decode(embedding, boxes[0]))
    assert np.array_equal(warm.decode_many(embedding, boxes, 8), fresh.decode_many(embedding, boxes, 8))
