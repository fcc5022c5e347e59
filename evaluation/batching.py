"""``make batching``: does batching pay on this CPU, for the encoder (slices) or the decoder (boxes)?

Both shipped IR have a static batch of 1 (the app encodes one slice per call; it decodes one
box per call unless one model serves many boxes of an image); here each is reshaped to larger
batches. Encoder: 1, 2, 4 and 8 random 256x256 slices per call. Decoder: 1, 4, 8 and 16 boxes
of one image per call (its one image input, the boxes' axis reshaped, as the app's
``decode_many`` does), and how far each box's logits are from its single-box call's. fp32, the
runtime's compile settings. Interleaved round by round; the report gives the median seconds per
image or per box.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov

from app.precision import DEFAULT_PRECISION
from app.routing import DEFAULT_MODEL_KEY
from app.sessions import compile_config, default_threads, read_manifest
from common.machine import describe
from common.paths import MODELS
from common.reports import write_report

ENCODER_BATCHES = (1, 2, 4, 8)
DECODER_BATCHES = (1, 4, 8, 16)  # boxes per call


def per_item_seconds(calls: dict[int, Callable[[], object]], rounds: int) -> dict[int, list[float]]:
    """batch -> seconds per item of each round (one warm-up call each first; interleaved)."""
    for call in calls.values():
        call()
    times: dict[int, list[float]] = {b: [] for b in calls}
    for _ in range(rounds):
        for b, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[b].append((time.perf_counter() - t0) / b)
    return times


Inputs = dict[str, np.ndarray]  # input name -> the array of one call


def reshaped_calls(
    xml: Path, batches: tuple[int, ...], inputs_of: Callable[[int], Inputs], threads: int | None, graph: str
) -> dict[int, Callable[[], object]]:
    """batch -> one call of the IR ``xml`` (static batch 1, as shipped; an encoder or decoder:
    ``graph``) reshaped to that batch."""
    graphs = reshaped_graphs(xml, batches, inputs_of, threads, graph)
    return {b: call_with(compiled, inputs_of(b)) for b, compiled in graphs.items()}


def call_with(compiled: ov.CompiledModel, inputs: Inputs) -> Callable[[], object]:
    """One call of ``compiled`` on ``inputs``, as a function of nothing (what gets timed)."""
    return lambda: compiled(inputs)


def reshaped_graphs(
    xml: Path,
    batches: tuple[int, ...],
    inputs_of: Callable[[int], Inputs],
    threads: int | None,
    graph: str,
    precision: str = DEFAULT_PRECISION,
) -> dict[int, ov.CompiledModel]:
    """batch -> the IR ``xml`` (an encoder or decoder: ``graph``) compiled at ``precision`` for
    the shapes of ``inputs_of(batch)``."""
    core = ov.Core()
    graphs = {}
    for b in batches:
        model = core.read_model(xml)
        model.reshape({name: list(x.shape) for name, x in inputs_of(b).items()})
        graphs[b] = core.compile_model(model, "CPU", compile_config(threads, precision, graph))
    return graphs


def encoder_inputs(b: int) -> Inputs:
    return {"image": np.random.default_rng(b).random((b, 3, 256, 256), dtype=np.float32)}


def decoder_inputs(b: int) -> Inputs:
    """``b`` boxes of one image: the image's (1, 256, 64, 64) embedding, (b, 4) random boxes in
    the model frame (the first ``k`` are the same for every ``b``)."""
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    x0y0 = rng.uniform(0, 180, (max(DECODER_BATCHES), 2))
    boxes = np.concatenate([x0y0, x0y0 + rng.uniform(8, 70, x0y0.shape)], axis=1).astype(np.float32)
    return {"image_embeddings": embedding, "boxes": boxes[:b]}


def logit_drift(decoders: dict[int, ov.CompiledModel]) -> dict[int, float]:
    """batch -> max |logit| difference between each box of one call and its own batch-1 call."""
    single = decoders[1]
    drift = {}
    for b, decoder in decoders.items():
        inputs = decoder_inputs(b)
        together = np.asarray(decoder(inputs)[0])  # (b, 1, 256, 256)
        alone = np.concatenate([
            np.asarray(single({"image_embeddings": inputs["image_embeddings"], "boxes": box[None]})[0])
            for box in inputs["boxes"]
        ])  # fmt: skip
        drift[b] = float(np.abs(together - alone).max())
    return drift


def with_one(batches: list[int]) -> tuple[int, ...]:
    """The batches to time, batch 1 (the reference of every ratio) always among them, sorted."""
    return tuple(sorted({1, *batches}))


def table(times: dict[int, list[float]], unit: str, drift: dict[int, float] | None = None) -> list[str]:
    base = statistics.median(times[1])
    extra = " largest logit change vs each box's batch-1 call |" if drift is not None else ""
    return [
        f"| batch | s / {unit} | vs batch 1 |{extra}",
        "|---|---|---|" + ("---|" if drift is not None else ""),
        *(
            f"| {b} | {statistics.median(v):.4f} | {statistics.median(v) / base:.2f}x |"
            + (f" {drift[b]:.1e} |" if drift is not None else "")
            for b, v in times.items()
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.batching", description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--key", default=DEFAULT_MODEL_KEY)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--encoder-batches", type=int, nargs="+", default=list(ENCODER_BATCHES))
    parser.add_argument("--decoder-batches", type=int, nargs="+", default=list(DECODER_BATCHES))
    parser.add_argument("--out", type=Path, default=Path("reports/batching.md"))
    args = parser.parse_args(argv)
    threads = default_threads()
    entry = read_manifest(args.models)[args.key]
    batches = {"encoder": with_one(args.encoder_batches), "decoder": with_one(args.decoder_batches)}
    if max(batches["decoder"]) > max(DECODER_BATCHES) or min(batches["encoder"] + batches["decoder"]) < 1:
        parser.error(f"batches must be 1 or more, decoder batches at most {max(DECODER_BATCHES)}")
    encoder = reshaped_calls(entry.encoder_xml, batches["encoder"], encoder_inputs, threads, "encoder")
    encoder_times = per_item_seconds(encoder, args.rounds)
    graphs = reshaped_graphs(entry.decoder_xml, batches["decoder"], decoder_inputs, threads, "decoder")
    drift = logit_drift(graphs)
    decoder = {b: call_with(c, decoder_inputs(b)) for b, c in graphs.items()}
    decoder_times = per_item_seconds(decoder, args.rounds)
    lines = [
        f"# Batching ({args.key})",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make batching` (`python -m evaluation.batching`), {time.strftime('%Y-%m-%d')}, "
        f"{args.rounds} rounds, medians.",
        "",
        "## Encoder: slices per call",
        "",
        *table(encoder_times, "image"),
        "",
        "## Decoder: boxes of one image per call",
        "",
        *table(decoder_times, "box", drift),
        "",
        "Below 1.00x means batching pays. The app encodes one slice per call, and decodes one box per "
        "call unless one model serves many boxes of an image (then `--decoder-batch`, default 8; "
        "`app/infer_2d.py` BATCHED_FROM).",
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
