"""``make overlap``: does encoding a volume's next slice while this slice's boxes decode pay here?

A 3D case runs, per slice, one encoder call and then one decoder call per object on that slice
(``app/infer_3d.py``); the next slice's embedding does not depend on this slice's masks, so its
encode could run (an OpenVINO asynchronous request) while the decoder works. Whether that pays
depends on how well one graph alone fills the cores. Timed here on random slices, for the
encoder of every 3D route of the manifest (and LiteMedSAM's, which serves the others), with 1 and
4 objects per slice, both ways alternating round by round: each way's median seconds per slice
of a run of ``--slices`` slices. fp32, the runtime's compile settings.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import openvino as ov

from app.routing import DEFAULT_MODEL_KEY
from app.sessions import compile_config, default_threads, read_manifest, read_routes
from common.machine import describe
from common.paths import MODELS
from common.reports import write_report
from evaluation.timing import alternating_medians

OBJECTS_PER_SLICE = (1, 4)  # decoder calls per slice: one object (most volumes), BraTS's four
SLICES = 12  # slices per timed run
BOX = np.array([[40.0, 50.0, 180.0, 200.0]], np.float32)  # (1, 4) XYXY, model frame


def encoders_3d(models_dir: Path) -> list[str]:
    """Model keys whose encoder some 3D case runs (every 3D route's, and the default model's),
    one key per encoder graph (a specialist over a shared encoder times the same graph)."""
    entries = read_manifest(models_dir)
    keys = sorted(
        {key for (dims, _), key in read_routes(models_dir).items() if dims == 3} | {DEFAULT_MODEL_KEY}
    )
    by_graph: dict[Path, str] = {}
    for key in keys:  # name a shared graph by the model whose folder holds it, when it is one
        xml = entries[key].encoder_xml
        by_graph.setdefault(xml, xml.parent.name if xml.parent.name in entries else key)
    return sorted(by_graph.values())


def random_slices(n: int, size: int) -> list[np.ndarray]:
    """``n`` random (1, 3, size, size) float32 encoder inputs."""
    rng = np.random.default_rng(0)
    return [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(n)]


def decode_objects(decode: ov.InferRequest, embedding: np.ndarray, objects: int) -> float:
    """``objects`` decoder calls on one slice's embedding; the sum of the last call's logits (what
    the ways are compared on)."""
    for _ in range(objects):
        logits = decode.infer({"image_embeddings": embedding, "boxes": BOX})[0]
    return float(np.sum(logits, dtype=np.float64))


def sequential(
    encoder: ov.CompiledModel, decoder: ov.CompiledModel, slices: list[np.ndarray], objects: int
) -> list[float]:
    """As the app runs a volume: encode a slice, then decode each of its objects. Per slice, the
    sum of its logits."""
    encode, decode = encoder.create_infer_request(), decoder.create_infer_request()
    return [decode_objects(decode, encode.infer({0: x})[0], objects) for x in slices]


def overlapped(
    encoder: ov.CompiledModel, decoder: ov.CompiledModel, slices: list[np.ndarray], objects: int
) -> list[float]:
    """The next slice's encode started (asynchronously, a second request) before this slice's
    objects decode. Per slice, the sum of its logits."""
    requests = [encoder.create_infer_request(), encoder.create_infer_request()]
    decode = decoder.create_infer_request()
    requests[0].start_async({0: slices[0]})
    sums = []
    for i in range(len(slices)):
        current = requests[i % 2]
        current.wait()
        if i + 1 < len(slices):
            requests[(i + 1) % 2].start_async({0: slices[i + 1]})
        sums.append(decode_objects(decode, current.get_output_tensor(0).data, objects))
    return sums


WAYS: dict[str, Callable[[ov.CompiledModel, ov.CompiledModel, list[np.ndarray], int], list[float]]] = {
    "sequential (shipped)": sequential,
    "overlapped": overlapped,
}


def rows_for(key: str, encoder: ov.CompiledModel, decoder: ov.CompiledModel, size: int, rounds: int,
             slices: int) -> list[str]:  # fmt: skip
    """Table rows of one encoder: per objects-per-slice count, each way's ms per slice and the ratio."""
    xs = random_slices(slices, size)
    rows = []
    for objects in OBJECTS_PER_SLICE:
        calls = {name: partial(way, encoder, decoder, xs, objects) for name, way in WAYS.items()}
        per_run = alternating_medians(calls, rounds)  # way -> median seconds of one run of the slices
        base, over = per_run["sequential (shipped)"] / slices, per_run["overlapped"] / slices
        rows.append(f"| {key} | {objects} | {1000 * base:.1f} | {1000 * over:.1f} | {over / base:.2f}x |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.overlap", description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--keys", nargs="+", help="models whose encoder to time (default: the 3D routes')")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=SLICES)
    parser.add_argument("--out", type=Path, default=Path("reports/overlap.md"))
    args = parser.parse_args(argv)
    entries = read_manifest(args.models)
    keys = args.keys or encoders_3d(args.models)
    unknown = sorted(set(keys) - set(entries))
    if unknown or args.rounds < 1 or args.slices < 2:
        parser.error(f"unknown model keys {unknown}" if unknown else "--rounds >= 1 and --slices >= 2")
    core, config = ov.Core(), compile_config(default_threads())
    decoder_config = compile_config(default_threads(), graph="decoder")
    rows = []
    for key in keys:
        entry = entries[key]
        encoder = core.compile_model(str(entry.encoder_xml), "CPU", config)
        decoder = core.compile_model(str(entry.decoder_xml), "CPU", decoder_config)
        rows += rows_for(key, encoder, decoder, entry.input_size, args.rounds, args.slices)
    lines = [
        "# Overlap: the next slice's encode while this slice's objects decode",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make overlap` (`python -m evaluation.overlap`), {time.strftime('%Y-%m-%d')}, "
        f"{args.rounds} rounds of {args.slices} random slices per way, the ways alternating, medians.",
        "",
        "| encoder of | objects per slice | ms per slice, sequential | overlapped | ratio |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Below 1.00x means the overlap pays. The app runs the sequential way (`app/infer_3d.py`).",
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
