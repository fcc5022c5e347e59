"""OpenVINO core, compile settings and a lazy per-model-key session cache.

One ``ov.Core`` is created by :func:`create_core` and passed in; compiled models live in a
:class:`SessionCache` keyed by model key, compiled on first use only (a 2D case never pays
for a model it does not need).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import openvino.properties as props
import openvino.properties.hint as hints

from app.novelty import Reference, load_reference
from app.precision import (
    DEFAULT_MODE,
    DEFAULT_PRECISION,
    case_precision,
    host_precisions,
    inference_type,
    precision_table,
)
from app.routing import DEFAULT_MODEL_KEY, routes_from_rows
from app.screen import Screen, load_screen
from app.windows import CELL, GRID, WINDOW, Corner

MANIFEST_NAME = "manifest.json"

# Boxes per decoder call on an image where one decoder serves many boxes (``--decoder-batch``,
# ``$SEG_DECODER_BATCH``; 1: one box per call). The boxes of one call share the image's first
# transformer block (``folded_decoder.decode_on_one_image``): per box 0.88x at 4 and 8 boxes
# (0.86x at 16) on an AMD EPYC with AVX2, each box's logits bit for bit its single call's
# (`make batching`, 2026-12-07). When a decoder batches: ``app/infer_2d.py`` BATCHED_FROM.
DECODER_BATCH = 8
MAX_DECODER_BATCH = 64


# Graph -> CPU plugin settings beyond the precision and hints (``compile_config``).
# SNIPPETS_MODE: whether the plugin fuses subgraphs (attention, chains of element-wise ops) into
# "snippets", kernels it generates when the graph is loaded. DISABLE runs those ops as separate
# oneDNN primitives: an encoder loads ~0.055 s faster (0.11 vs 0.17 s for TinyViT from the
# cache, at fp32 and at bf16; ad hoc timings, AMD EPYC with AVX512_BF16) and computes as fast
# once loaded, which pays in a fresh process per 2D case. A decoder loads 0.02 s faster but runs
# ~1.5 ms a call slower, a loss from ~13 calls (many-box images, volumes), so decoders keep
# snippets. Without snippets, a bf16 encoder loaded from its blob computes up to 5e-7 away from
# its fresh compile (``tests/test_cache.py``: ENCODER_RELOAD_ATOL). The setting is the plugin's
# own, not among its SUPPORTED_PROPERTIES (OpenVINO 2026.4 accepts it; ``tests/test_cache.py``
# fails if it is refused or has no effect). OpenVINO's cache key covers none of these:
# ``settings_folder`` separates their blobs.
GRAPH_SETTINGS: dict[str, dict[str, str]] = {
    "encoder": {"SNIPPETS_MODE": "DISABLE"},
    "decoder": {},
}
# "1": encoders keep the plugin's snippets, as before stop 42 (``make bench-encoder-snippets``
# times the product both ways).
ENCODER_SNIPPETS_ENV = "SEG_ENCODER_SNIPPETS"


def graph_settings() -> dict[str, dict[str, str]]:
    """``GRAPH_SETTINGS`` as this process compiles them (``ENCODER_SNIPPETS_ENV``)."""
    if os.environ.get(ENCODER_SNIPPETS_ENV) != "1":
        return GRAPH_SETTINGS
    encoder = {k: v for k, v in GRAPH_SETTINGS["encoder"].items() if k != "SNIPPETS_MODE"}
    return {**GRAPH_SETTINGS, "encoder": encoder}


def compile_config(
    threads: int | None = None, precision: str = DEFAULT_PRECISION, graph: str = "encoder"
) -> dict[Any, Any]:
    """Compile settings used everywhere (runtime, export parity, benchmarks).

    The precision is always explicit (fp32 unless asked, ``app/precision.py``): left to itself
    OpenVINO picks bf16 on CPUs with AMX/AVX512-BF16, which changes the embeddings (max |diff|
    0.6 measured) and so the masks, host by host, without a gate having measured it.
    """
    config: dict[Any, Any] = {
        hints.inference_precision: inference_type(precision, graph),
        hints.execution_mode: hints.ExecutionMode.ACCURACY,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.num_requests: 1,
        **graph_settings()[graph],
    }
    if threads:
        config[props.inference_num_threads] = threads
    return config


def settings_folder() -> str:
    """The cache subfolder of this process's ``graph_settings()``: OpenVINO keys a blob of a graph
    read from a file by its path and the device name only, and a blob keeps the settings it was
    compiled with (an encoder compiled with snippets and loaded without computes with them, and
    loads no faster). Blobs compiled under other settings stay in their own folder, unread."""
    text = json.dumps(graph_settings(), sort_keys=True)
    return "settings-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_mode(graph: Path | ov.Model) -> dict[Any, Any]:
    """How ``graph``'s compiled blob is cached.

    A graph read from an IR file caches weightless (OPTIMIZE_SIZE: the blob holds the compiled
    graph, the weights are read back from the IR's .bin at load; 0.9 vs 28.6 MB for TinyViT's
    encoder, 1.7 vs 22.7 MB for a decoder; loaded as fast, ``make startup``, and at bf16 on an
    AVX512_BF16 CPU). So it computes with the weights the .bin holds now: OpenVINO keys such a
    blob by the IR's path, and a whole one kept the old weights after a re-export rewrote the
    .bin in place. Whole blobs (OPTIMIZE_SPEED) stay for a graph reshaped in memory (a batched
    decoder: OpenVINO never loaded a weightless blob of one, it compiled again on every run; its
    in-memory key covers its weights).

    The key covers neither the precision hint nor this mode, so each inference type keeps its
    blobs in a folder of its own (``precision_cache``): a blob is only ever loaded at the type it
    was compiled at. Shared, a weightless decoder blob compiled at fp32 and loaded at bf16
    computed garbage on an Intel Xeon with AMX (logits off by up to 24.8; on an AMD EPYC with
    AVX512_BF16 it computed bf16 exactly), and a whole blob compiled at fp32 and loaded at bf16
    computes neither (max |diff| 0.005 in a decoder's logits, a pixel of a Microscopy mask, found
    by ``make container-test``). A graph built in memory also carries its inference type in its
    key (``keyed_by_type``), for a cache folder shared with an older release.
    The value is the mode's name: the CPU plugin of OpenVINO 2026.4 rejects ``props.CacheMode``
    members ("Wrong value for property key CACHE_MODE")."""
    return {props.cache_mode: "OPTIMIZE_SIZE" if isinstance(graph, Path) else "OPTIMIZE_SPEED"}


def precision_cache(core: ov.Core, element_type: ov.Type) -> dict[Any, Any]:
    """The compile setting that keeps the blobs of graphs compiled at ``element_type`` in their
    own subfolder of ``core``'s cache folder (``cache_mode``: OpenVINO's key ignores the type).
    No cache: no setting. A subfolder that cannot be made (a read-only baked cache lacking it):
    that compile runs uncached."""
    root = str(core.get_property(props.cache_dir))
    if not root:
        return {}
    folder = Path(root) / element_type.get_type_name()
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return {props.cache_dir: str(folder) if folder.is_dir() else ""}
    return {props.cache_dir: str(folder)}


def keyed_by_type(model: ov.Model, element_type: ov.Type) -> ov.Model:
    """``model`` (built in memory, so cached whole) marked with the inference type it is compiled
    at. OpenVINO keys an in-memory graph's blob by the graph, runtime info included, and not by
    the precision hint: unmarked, the bf16 compile loads the fp32 compile's whole blob and
    computes with some of its fp32 choices (``cache_mode``)."""
    model.set_rt_info(element_type.get_type_name(), ["medseg", "inference_type"])
    return model


def create_core(cache_dir: Path | None) -> ov.Core:
    """A Core whose compiled blobs persist in ``cache_dir`` (None: no cache)."""
    core = ov.Core()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({props.cache_dir: str(cache_dir)})
    return core


@dataclass(frozen=True)
class ModelEntry:
    """One model key of the manifest: where its graphs are and its input size."""

    key: str
    encoder_xml: Path
    decoder_xml: Path
    input_size: int
    router: Path | None = None  # app/novelty.py reference: serve only the boxes it accepts
    screen: Path | None = None  # app/screen.py: images unlike its domain skip this model's encoder


def _graph_path(models_dir: Path, key: str, entry: dict[str, Any], graph: str) -> Path:
    """A graph's IR: ``graphs[graph]`` when the manifest shares one (a specialist reusing the
    base model's encoder), else ``<key>/<graph>.xml``."""
    return models_dir / entry.get("graphs", {}).get(graph, f"{key}/{graph}.xml")


def _load_manifest(models_dir: Path) -> dict[str, Any]:
    path = models_dir / MANIFEST_NAME
    if not path.is_file():
        msg = f"no model manifest at {path}: run `make export` first"
        raise FileNotFoundError(msg)
    return json.loads(path.read_text())


def read_manifest(models_dir: Path) -> dict[str, ModelEntry]:
    """Model key -> entry, from ``models_dir/manifest.json`` (written by ``make export``)."""
    models = _load_manifest(models_dir)["models"]
    return {
        key: ModelEntry(
            key,
            _graph_path(models_dir, key, m, "encoder"),
            _graph_path(models_dir, key, m, "decoder"),
            int(m["input_size"]),
            models_dir / m["router"]["file"] if m.get("router") else None,
            models_dir / m["screen"]["file"] if m.get("screen") else None,
        )
        for key, m in models.items()
    }


def contract_mismatches(core: ov.Core, entry: ModelEntry) -> list[str]:
    """Where the IR's own record (``rt_info`` model_info, written by ``make export``) disagrees
    with the manifest entry: each graph's input size, and the model key it was exported as
    (a specialist's shared encoder is the base model's). Empty when they agree."""
    problems = []
    for graph, xml in (("encoder", entry.encoder_xml), ("decoder", entry.decoder_xml)):
        model = core.read_model(xml)
        info = {k: model.get_rt_info(["model_info", k]).astype(str) for k in ("model_key", "input_size")}
        expected_key = entry.key if graph == "decoder" else xml.parent.name
        if info["model_key"] != expected_key:
            problems.append(f"{xml}: exported as {info['model_key']!r}, manifest says {expected_key!r}")
        if int(info["input_size"]) != entry.input_size:
            problems.append(f"{xml}: input size {info['input_size']}, manifest says {entry.input_size}")
    return problems


def read_routes(models_dir: Path) -> dict[tuple[int, str], str]:
    """The routing table of the manifest (no ``routes``: every case to the default model)."""
    return routes_from_rows(_load_manifest(models_dir).get("routes", []))


def read_precisions(models_dir: Path) -> dict[tuple[int, str], str]:
    """The manifest's precision table (no ``precision`` rows: fp32 everywhere)."""
    return precision_table(_load_manifest(models_dir).get("precision", []))


class Session(Protocol):
    """What inference needs from a model (SamSession, or a fake in tests). Two sessions with the
    same ``encoder_id`` encode alike: a decoder of one may decode the other's embedding."""

    input_size: int
    encoder_id: str

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, embedding: np.ndarray, box_model: np.ndarray) -> np.ndarray: ...

    def decode_many(self, embedding: np.ndarray, boxes_model: np.ndarray, batch: int) -> np.ndarray: ...

    def decode_windows(
        self, embedding: np.ndarray, boxes_model: np.ndarray, corners: list[Corner], batch: int, window: int
    ) -> np.ndarray: ...


# (1, 256, G, G) embedding, (4,) model-frame box, (newh, neww) -> the session whose decoder
# segments that box (app/novelty.py's BoxRouter; None: always the encoding session). A chosen
# session over another encoder decodes that encoder's own embedding of the image (the cascade).
ChooseDecoder = Callable[[np.ndarray, np.ndarray, tuple[int, int]], Session]


def same_frame(a: Session, b: Session) -> None:
    """Raise ValueError unless ``a`` and ``b`` take the same model frame (input size): a box in
    one's frame is then a box in the other's."""
    if a.input_size != b.input_size:
        msg = f"a router pairs models of input size {a.input_size} and {b.input_size}: they must agree"
        raise ValueError(msg)


def padded(rows: np.ndarray, size: int) -> np.ndarray:
    """(k, ...) rows, 0 < k <= ``size`` -> (size, ...): the spare places repeat the last row (the
    last call of a batched graph)."""
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


class SamSession:
    """Encoder + decoder of one model key, each compiled on its first call (a router's fallback
    over the specialist's own encoder decodes the specialist's embedding and never compiles an
    encoder; a case whose boxes all go to the fallback never needs the specialist's decoder).
    Outputs are copied, never aliased."""

    def __init__(
        self,
        entry: ModelEntry,
        compile_graph: Callable[[Path, int, int, str], ov.CompiledModel],
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        self.entry = entry
        self.input_size = entry.input_size
        self.precision = precision  # what compile_graph compiles at (app/precision.py)
        # a shared encoder IR at the same precision: the same id (same embeddings)
        self.encoder_id = f"{entry.encoder_xml.as_posix()}@{inference_type(precision).get_type_name()}"
        self._compile_graph = compile_graph
        self._encoder: ov.CompiledModel | None = None
        self._decoders: dict[tuple[int, int], ov.CompiledModel] = {}  # (boxes per call, window) -> graph
        self.encoder_calls = 0

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 in [0, 1] -> (B, 256, 64, 64) float32, one slice per call (the
        shipped encoder IR has a static batch of 1: batching pays nothing, `make batching`)."""
        encoder = self.compile_encoder()
        self.encoder_calls += images.shape[0]
        out = [encoder({"image": images[i : i + 1]})[0] for i in range(images.shape[0])]
        return np.concatenate(out).astype(np.float32, copy=False)  # concatenate copies: never aliased

    def decode(self, embedding: np.ndarray, box_model: np.ndarray) -> np.ndarray:
        """(1, 256, 64, 64) embedding, (4,) model-frame XYXY box -> (256, 256) float32 logits."""
        decoder = self.compile_decoder()
        boxes = np.asarray(box_model, dtype=np.float32).reshape(1, 4)  # (1, 4)
        out = decoder({"image_embeddings": embedding, "boxes": boxes})[0]
        return np.array(out[0, 0], dtype=np.float32, copy=True)  # (256, 256)

    def decode_many(self, embedding: np.ndarray, boxes_model: np.ndarray, batch: int) -> np.ndarray:
        """(1, 256, 64, 64) embedding, (K, 4) model-frame XYXY boxes on it -> (K, 256, 256)
        float32 logits, ``batch`` boxes per call of the decoder reshaped to that many (the last
        call's spare places repeat its last box). Each box's logits are its ``decode``'s: the
        boxes share only the image (``folded_decoder.decode_on_one_image``)."""
        boxes = np.asarray(boxes_model, dtype=np.float32).reshape(-1, 4)  # (K, 4)
        decoder = self.compile_decoder(batch)
        out = np.empty((len(boxes), self.input_size, self.input_size), dtype=np.float32)  # (K, 256, 256)
        for start in range(0, len(boxes), batch):
            chunk = boxes[start : start + batch]  # (k <= batch, 4)
            logits = decoder({"image_embeddings": embedding, "boxes": padded(chunk, batch)})[
                0
            ]  # (batch, 1, 256, 256)
            out[start : start + len(chunk)] = logits[: len(chunk), 0]  # a copy: never aliased
        return out

    def compile_encoder(self) -> ov.CompiledModel:
        """The encoder's compiled graph, compiled (or loaded from the cache) on the first call."""
        if self._encoder is None:
            self._encoder = self._compile_graph(self.entry.encoder_xml, 1, 0, "encoder")
        return self._encoder

    def decode_windows(
        self, embedding: np.ndarray, boxes_model: np.ndarray, corners: list[Corner], batch: int, window: int
    ) -> np.ndarray:
        """(1, 256, 64, 64) embedding, (K, 4) model-frame XYXY boxes and each box's window corner
        (``app/windows.py``) -> (K, window*CELL, window*CELL) float32 logits, each the box's
        ``decode`` logits on its window (bit for bit where the graph runs alike), ``batch`` boxes
        per call (the last call's spare places repeat its last box)."""
        boxes = np.asarray(boxes_model, dtype=np.float32).reshape(-1, 4)  # (K, 4)
        cells = np.asarray(corners, dtype=np.int64).reshape(-1, 2)  # (K, 2) (row, col)
        decoder = self.compile_decoder(batch, window)
        side = window * CELL
        out = np.empty((len(boxes), side, side), dtype=np.float32)  # (K, W*CELL, W*CELL)
        for start in range(0, len(boxes), batch):
            chunk = slice(start, min(start + batch, len(boxes)))
            feeds = {
                "image_embeddings": embedding,
                "boxes": padded(boxes[chunk], batch),
                "window_corners": padded(cells[chunk], batch),
            }
            out[chunk] = decoder(feeds)[0][: chunk.stop - start, 0]  # a copy: never aliased
        return out

    def compile_decoder(self, boxes: int = 1, window: int = 0) -> ov.CompiledModel:
        """The decoder's compiled graph for ``boxes`` boxes per call (the IR as shipped: 1), on
        ``window``-cell windows (0: the whole frame), compiled (or loaded from the cache) on the
        first call."""
        if (boxes, window) not in self._decoders:
            self._decoders[(boxes, window)] = self._compile_graph(
                self.entry.decoder_xml, boxes, window, "decoder"
            )
        return self._decoders[(boxes, window)]

    def cache_hits(self) -> tuple[int, int]:
        """(graphs compiled so far, how many of them OpenVINO loaded from the compiled-model cache)."""
        graphs = ([] if self._encoder is None else [self._encoder]) + list(self._decoders.values())
        return len(graphs), sum(bool(g.get_property(props.loaded_from_cache)) for g in graphs)

    def compile_all(self, decoder_batch: int = 1, window: int = 0) -> None:
        """Compile both graphs now (a warm-up, or a worker that serves many cases), and the
        decoder for ``decoder_batch`` boxes per call when that is more than 1: on ``window``-cell
        windows when ``window`` is set (what a many-box image mostly runs), else whole."""
        self.compile_encoder()
        self.compile_decoder()
        if decoder_batch > 1:
            self.compile_decoder(decoder_batch, window)


# A compiled graph: (IR, boxes per call, window cells, inference type name)
GraphKey = tuple[Path, int, int, str]


class SessionCache:
    """Lazily compiles and keeps one :class:`SamSession` per model key."""

    def __init__(
        self,
        core: ov.Core,
        models_dir: Path,
        threads: int | None = None,
        precision_mode: str = DEFAULT_MODE,
        decoder_batch: int = DECODER_BATCH,
        decoder_window: int = WINDOW,
    ) -> None:
        self._core = core
        self.decoder_batch = decoder_batch  # boxes per decoder call on many-box images (1: off)
        self.decoder_window = decoder_window  # cells per window side on many-box images (0: off)
        self._entries = read_manifest(models_dir)
        self.routes = read_routes(models_dir)
        missing = sorted(set(self.routes.values()) - set(self._entries))
        if missing:
            msg = f"{models_dir / MANIFEST_NAME}: routes name models not in it: {missing}"
            raise ValueError(msg)
        self.precisions = read_precisions(models_dir)
        self.precision_mode = precision_mode
        self._native: set[str] | None = None  # the host's native precisions, asked on first need
        self._threads = threads
        self._compiled: dict[GraphKey, ov.CompiledModel] = {}  # shared graphs compile once
        self._pending: dict[GraphKey, Future[ov.CompiledModel]] = {}  # prefetched
        self._background: ThreadPoolExecutor | None = None  # one thread, made on the first prefetch
        self.compiles = 0  # graphs compiled by this cache (a cohort worker checks: once each)
        self._sessions: dict[tuple[str, str], SamSession] = {}
        self._references: dict[str, Reference | None] = {}
        self._screens: dict[str, Screen | None] = {}

    @property
    def keys(self) -> list[str]:
        return sorted(self._entries)

    @property
    def keys_2d(self) -> list[str]:
        """The models a 2D image can reach: a 2D route's, and the default model (unrouted images,
        and every box a router refuses)."""
        return sorted({key for (dims, _), key in self.routes.items() if dims == 2} | {DEFAULT_MODEL_KEY})

    def precision_for(self, dims: int, modality: str | None) -> str:
        """The precision a case of (dims, modality) runs at (``app/precision.py``)."""
        if self.precision_mode == "auto" and self.precisions and self._native is None:
            self._native = host_precisions(self._core)
        return case_precision(dims, modality, self.precisions, self.precision_mode, self._native or set())

    def get(self, key: str, precision: str = DEFAULT_PRECISION) -> SamSession:
        """The session of model ``key`` whose graphs compile at ``precision``."""
        if (key, precision) not in self._sessions:
            try:
                entry = self._entries[key]
            except KeyError:
                msg = f"model key {key!r} is not in the manifest; available: {self.keys}"
                raise ValueError(msg) from None
            inference_type(precision)
            compile_graph = partial(self._compile, precision=precision)
            self._sessions[(key, precision)] = SamSession(entry, compile_graph, precision)
        return self._sessions[(key, precision)]

    def reference(self, key: str) -> Reference | None:
        """The router reference of ``key`` (None: the model serves every box routed to it)."""
        if key not in self._references:
            path = self._entries[key].router if key in self._entries else None
            self._references[key] = None if path is None else load_reference(path)
        return self._references[key]

    def screen(self, key: str) -> Screen | None:
        """The image screen of ``key`` (None: every image of its routes goes to its router)."""
        if key not in self._screens:
            path = self._entries[key].screen if key in self._entries else None
            self._screens[key] = None if path is None else load_screen(path)
        return self._screens[key]

    def prefetch_decoder(self, key: str, precision: str, boxes: int = 1, window: int = 0) -> None:
        """Start compiling (or loading from the cache) model ``key``'s decoder for ``boxes`` boxes
        per call on ``window``-cell windows at ``precision``, in a background thread, while the
        caller loads and runs the encoder: the first decode finds it ready, or waits for it (an
        error it met is raised there). A decoder already compiled or started is left alone."""
        xml = self.get(key, precision).entry.decoder_xml
        graph_key = self._graph_key(xml, boxes, window, "decoder", precision)
        if graph_key in self._compiled or graph_key in self._pending:
            return
        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._pending[graph_key] = self._background.submit(
            self._compile_now, xml, boxes, window, "decoder", precision
        )

    @staticmethod
    def _graph_key(xml: Path, boxes: int, window: int, graph: str, precision: str) -> GraphKey:
        return xml, boxes, window, inference_type(precision, graph).get_type_name()

    def _compile(self, xml: Path, boxes: int, window: int, graph: str, precision: str) -> ov.CompiledModel:
        """``xml`` (an encoder or decoder: ``graph``) compiled at ``precision``'s type for that
        graph, once (a prefetched one: when its background compile ends). Keyed by the type, so
        sessions whose precisions agree on a graph share it."""
        key = self._graph_key(xml, boxes, window, graph, precision)
        if key not in self._compiled:
            pending = self._pending.pop(key, None)
            if pending is not None:
                self._compiled[key] = pending.result()
            else:
                self._compiled[key] = self._compile_now(xml, boxes, window, graph, precision)
            self.compiles += 1
        return self._compiled[key]

    def _compile_now(
        self, xml: Path, boxes: int, window: int, graph: str, precision: str
    ) -> ov.CompiledModel:
        """Compile ``xml`` at ``precision``'s type for ``graph``; a decoder with ``boxes`` > 1 is
        first reshaped to take that many boxes per call (the shipped IR takes 1), and one with
        ``window`` > 0 made to upscale ``window``-cell windows only."""
        element_type = inference_type(precision, graph)
        model: Path | ov.Model = xml
        if window:
            model = keyed_by_type(decoder_for_windows(self._core, xml, boxes, window), element_type)
        elif boxes > 1:
            model = keyed_by_type(decoder_for_boxes(self._core, xml, boxes), element_type)
        config = (
            compile_config(self._threads, precision, graph)
            | cache_mode(model)
            | precision_cache(self._core, element_type)
        )
        return compile_with_retry(self._core, model, config)


# Processes sharing one compiled-model cache folder (cohort workers, shards, parallel containers
# on one volume) race on its blobs. OpenVINO writes a blob in place, so a process that finds it
# half written either raises ("filesystem error: cannot set permissions: No such file or
# directory [<cache>/<n>.blob]", seen with two Dask workers on a cold cache) or, mapping it, is
# killed by SIGBUS (two processes compiling every graph at fp32 and bf16 into one cold cache: 1
# run in 3). So every compile against a cache holds an exclusive flock on the cache folder itself
# (a directory opened read-only: no lock file is written, so a baked cache in a container's own
# filesystem stays unchanged, and the kernel releases the lock if the process dies). A folder that
# cannot be opened gets no lock. The retry stays for what the lock cannot cover (a cache on a
# filesystem without flock). Threads of one process share the process's lock on a folder (a
# decoder loading in the background while the encoder loads, ``prefetch_decoder``): two flocks of
# one process on one folder would wait on each other, and OpenVINO's Core compiles from several
# threads at once.
COMPILE_ATTEMPTS = 3
# cache folder -> [its open descriptor holding the flock, threads inside the lock]
_HELD_LOCKS: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _take_lock(cache_dir: str) -> list[int] | None:
    """This process's hold on ``cache_dir``'s lock, taken (the flock waited for) by the first
    thread in; None: a folder that cannot be opened (OpenVINO writes nothing there either)."""
    with _HELD_GUARD:
        held = _HELD_LOCKS.get(cache_dir)
        if held is None:
            try:
                fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a filesystem without flock: the retry in compile_with_retry remains
                pass
            held = _HELD_LOCKS[cache_dir] = [fd, 0]
        held[1] += 1
        return held


def _drop_lock(cache_dir: str, held: list[int]) -> None:
    """The last thread out closes the descriptor, which releases the flock."""
    with _HELD_GUARD:
        held[1] -= 1
        if held[1] == 0:
            del _HELD_LOCKS[cache_dir]
            os.close(held[0])


@contextmanager
def cache_lock(cache_dir: str) -> Iterator[None]:
    """Hold the exclusive compile lock of ``cache_dir`` for this process ('': no cache, no lock)."""
    held = _take_lock(cache_dir) if cache_dir else None
    try:
        yield
    finally:
        if held is not None:
            _drop_lock(cache_dir, held)


def decoder_for_boxes(core: ov.Core, xml: Path, boxes: int) -> ov.Model:
    """The decoder IR at ``xml`` reshaped to take ``boxes`` boxes on its one image per call."""
    model = core.read_model(str(xml))
    model.reshape({"boxes": [boxes, 4]})
    return model


def decoder_for_windows(core: ov.Core, xml: Path, boxes: int, window: int) -> ov.Model:
    """The decoder IR at ``xml`` for ``boxes`` boxes per call whose upscaling runs on one
    ``window`` x ``window``-cell window per box: a new input ``window_corners`` (boxes, 2) int64,
    each box's (row, col) top-left cell; the output is (boxes, 1, window*CELL, window*CELL).

    The upscaling's input, (boxes, C, GRID, GRID), is gathered to the windows' cells just before
    its first transposed convolution; nothing else changes (``app/windows.py``: why the logits
    are the whole decoder's there). ValueError for a decoder without that upscaling."""
    model = decoder_for_boxes(core, xml, boxes)
    upscale = next(
        (op for op in model.get_ordered_ops() if op.get_type_name() == "ConvolutionBackpropData"), None
    )
    if upscale is None:
        msg = (
            f"{xml}: no transposed convolution to start the upscaling at: this decoder cannot decode windows"
        )
        raise ValueError(msg)
    features = upscale.input_value(0)  # (B, C, GRID, GRID)
    shape = features.get_partial_shape()
    if shape.is_dynamic or list(shape.to_shape())[2:] != [GRID, GRID]:
        msg = f"{xml}: the upscaling starts from {shape}, not a {GRID}x{GRID} grid"
        raise ValueError(msg)
    channels = shape.to_shape()[1]
    corners = ops.parameter([boxes, 2], ov.Type.i64, name="window_corners")
    corners.output(0).get_tensor().set_names({"window_corners"})
    steps = ops.constant(np.arange(window, dtype=np.int64))  # (W,)

    def axis(i: int) -> ov.Node:  # (B, W): the window's cells along axis i (0: rows, 1: columns)
        start = ops.gather(corners, ops.constant(np.array([i], dtype=np.int64)), ops.constant(np.int64(1)))
        return ops.add(start, steps)

    rows, cols = (
        ops.unsqueeze(axis(0), ops.constant(np.int64(2))),
        ops.unsqueeze(axis(1), ops.constant(np.int64(1))),
    )
    cells = ops.add(ops.multiply(rows, ops.constant(np.int64(GRID))), cols)  # (B, W, W): flat cell index
    flat_cells = ops.reshape(cells, ops.constant(np.array([boxes, window * window], dtype=np.int64)), False)
    flat = ops.reshape(
        features, ops.constant(np.array([boxes, channels, GRID * GRID], dtype=np.int64)), False
    )
    picked = ops.gather(flat, flat_cells, ops.constant(np.int64(2)), batch_dims=1)  # (B, C, W*W)
    windows = ops.reshape(
        picked, ops.constant(np.array([boxes, channels, window, window], dtype=np.int64)), False
    )
    upscale.input(0).replace_source_output(windows.output(0))
    model.add_parameters([corners])
    model.validate_nodes_and_infer_types()
    return model


def compile_with_retry(core: ov.Core, graph: Path | ov.Model, config: dict[Any, Any]) -> ov.CompiledModel:
    """``core.compile_model`` of ``graph`` (an IR path, or a model read from one) under its cache
    folder's lock (``config``'s, else ``core``'s), tried again when it raises (a cache-write
    race); the last attempt's error propagates."""
    model = str(graph) if isinstance(graph, Path) else graph
    with cache_lock(str(config.get(props.cache_dir, core.get_property(props.cache_dir)))):
        for attempt in range(1, COMPILE_ATTEMPTS):
            try:
                return core.compile_model(model, "CPU", config)
            except RuntimeError:
                time.sleep(0.05 * attempt)
        return core.compile_model(model, "CPU", config)


def decoder_batch_from(arg: str | None) -> int:
    """Boxes per batched decoder call: ``arg``, else ``$SEG_DECODER_BATCH``, else DECODER_BATCH;
    ValueError unless a whole number 1..MAX_DECODER_BATCH."""
    raw = str(arg) if arg is not None else os.environ.get("SEG_DECODER_BATCH", str(DECODER_BATCH))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_DECODER_BATCH:
        msg = f"the decoder batch must be a whole number 1..{MAX_DECODER_BATCH} (1: one box per call), "
        msg += f"got {raw!r}"
        raise ValueError(msg)
    return value


def decoder_window_from(arg: str | None) -> int:
    """Cells per window side on many-box images: ``arg``, else ``$SEG_DECODER_WINDOW``, else
    WINDOW; 0 turns windows off. ValueError unless 0 or a whole number 1..GRID."""
    raw = str(arg) if arg is not None else os.environ.get("SEG_DECODER_WINDOW", str(WINDOW))
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= GRID:
        msg = f"the decoder window must be a whole number of cells 0..{GRID} (0: off), got {raw!r}"
        raise ValueError(msg)
    return value


def cache_dir_from(arg: Path | None) -> Path | None:
    """Compiled-model cache folder (the ``settings_folder`` inside the one asked for), or None
    when disabled or unusable (then: no cache).

    A folder that exists but is not writable (a ``--read-only`` container with the blobs baked
    into its image) is still used: OpenVINO loads the blobs it finds there and, unable to write
    one that is missing, compiles without storing it."""
    if arg is not None and str(arg).lower() == "none":
        return None
    env = os.environ.get("SEG_CACHE_DIR")
    default = Path(env) if env else Path.home() / ".cache" / "medseg-appliance" / "openvino"
    cache = (arg if arg is not None else default) / settings_folder()
    if cache.is_dir():
        return cache if os.access(cache, os.R_OK | os.X_OK) else None
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # not creatable: run without a compiled-model cache
    return cache


def default_threads() -> int | None:
    """Threads from ``SEG_THREADS`` (unset: OpenVINO decides, one per physical core)."""
    value = os.environ.get("SEG_THREADS")
    return int(value) if value else None
