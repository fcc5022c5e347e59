"""``python -m export``: build models/<key>/{encoder,decoder}.{xml,bin} and models/manifest.json.

Each hop is checked: torch vs ONNX Runtime, then ONNX Runtime vs OpenVINO. Any drift beyond the
tolerances in ``export/parity.py`` stops the export with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import openvino as ov
import torch

from app.precision import PRECISION_FILE, precision_table
from app.routing import routes_from_rows
from app.sessions import MANIFEST_NAME, compile_config
from common.machine import cpu_isa, cpu_model_name
from common.paths import MODELS
from export.parity import HopResult, check, compare, parity_inputs
from export.to_onnx import OPSET, export_decoder, export_encoder
from export.to_openvino import convert_to_ir
from export.wrappers import DecoderForExport, EncoderForExport
from modeling.architectures.sam import BoxSAM, encoder_gflops
from modeling.checkpoint import sha256_file, verify_sha256
from modeling.registry import BASE_KEY, WEIGHTS_DIR, ModelSpec, Overlay, get_spec, load_model, model_specs

GRAPHS = ("encoder", "decoder")
PIN_FILE = Path(__file__).resolve().parent / "pinned_ir_sha256.json"


def log(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


def run_torch(model: BoxSAM, images: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        emb = model.image_encoder(torch.from_numpy(images))
        logits = model.decode(emb, torch.from_numpy(boxes))
    return emb.numpy(), logits.numpy()


def run_onnx(onnx_dir: Path, images: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    opts = ort.SessionOptions()
    enc = ort.InferenceSession(str(onnx_dir / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(onnx_dir / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    emb = enc.run(None, {"image": images})[0]
    logits = [  # the decoder takes one image and its boxes: probe i is box i on image i
        dec.run(None, {"image_embeddings": emb[i : i + 1], "boxes": boxes[i : i + 1]})[0]
        for i in range(len(boxes))
    ]
    return emb, np.concatenate(logits)


def run_openvino(
    graphs: dict[str, Path], images: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``graphs``: {"encoder": xml, "decoder": xml}, exactly the IR files that ship."""
    core = ov.Core()
    enc = core.compile_model(str(graphs["encoder"]), "CPU", compile_config())
    dec = core.compile_model(str(graphs["decoder"]), "CPU", compile_config(graph="decoder"))
    emb = np.concatenate(  # both IR take batch 1: one slice, one box per call, as the app calls them
        [np.asarray(enc({"image": images[i : i + 1]})[0]).copy() for i in range(len(images))]
    )
    logits = [
        np.asarray(dec({"image_embeddings": emb[i : i + 1], "boxes": boxes[i : i + 1]})[0]).copy()
        for i in range(len(boxes))
    ]
    return emb, np.concatenate(logits)


def rt_info(key: str, spec: ModelSpec) -> dict[str, str]:
    return {
        "model_key": key,
        "architecture": spec.architecture,
        **{k: str(v) for k, v in spec.preprocessing.items()},
    }


def encoder_identity(spec: ModelSpec) -> tuple[str, str]:
    """What makes two models' encoder IR the same: the architecture and the image-encoder
    overlay's sha256 ("" when the encoder is the base checkpoint's)."""
    trained = [o.sha256 for o in spec.overlays if o.module == "image_encoder"]
    return spec.architecture, trained[0] if trained else ""


def export_order(specs: dict[str, ModelSpec]) -> list[str]:
    """Keys in export order: the base, then models that train no decoder (student encoders),
    then the rest; the first key with an encoder identity owns that encoder's IR."""

    def rank(key: str) -> tuple[bool, bool, str]:
        trains_decoder = any(o.module == "mask_decoder" for o in specs[key].overlays)
        return key != BASE_KEY, trains_decoder, key

    return sorted(specs, key=rank)


def encoder_owners(specs: dict[str, ModelSpec]) -> dict[str, str]:
    """Key -> the key whose folder holds its encoder IR (itself, or the first key in
    :func:`export_order` with the same :func:`encoder_identity`: a decoder specialist shares the
    base's encoder, or the student encoder it was trained over)."""
    first: dict[tuple[str, str], str] = {}
    for key in export_order(specs):
        first.setdefault(encoder_identity(specs[key]), key)
    return {key: first[encoder_identity(spec)] for key, spec in specs.items()}


def shipped_graphs(key: str, encoder_owner: str, models_dir: Path) -> dict[str, Path]:
    """Where each graph of ``key`` ships: its own folder, the encoder in its owner's."""
    graphs = {g: models_dir / key / f"{g}.xml" for g in GRAPHS}
    graphs["encoder"] = models_dir / encoder_owner / "encoder.xml"
    return graphs


def card_facts(spec: ModelSpec) -> dict[str, Any]:
    """What the manifest records of a trained model: data, validation result, weight sha256s."""
    if not spec.card:
        return {}
    return {
        "overlays": {o.module: {"file": o.path.name, "sha256": o.sha256} for o in spec.overlays},
        **{k: spec.card[k] for k in ("kind", "training", "validation", "licence") if k in spec.card},
    }


def export_one(
    key: str,
    models_dir: Path,
    build_dir: Path,
    weights_dir: Path = WEIGHTS_DIR,
    encoder_owner: str | None = None,
) -> dict[str, Any]:
    """Export ``key`` (its encoder IR into ``encoder_owner``'s folder, already exported when it is
    another key's; default: :func:`encoder_owners` over ``weights_dir``) with the parity gates;
    its manifest entry."""
    spec = get_spec(key, weights_dir)
    encoder_owner = encoder_owner or encoder_owners(model_specs(weights_dir))[key]
    t0 = time.perf_counter()
    model = load_model(spec)
    onnx_dir, ir_dir = build_dir / key, models_dir / key
    onnx_dir.mkdir(parents=True, exist_ok=True)
    ir_dir.mkdir(parents=True, exist_ok=True)
    log(f"{key}: checkpoint verified and loaded strictly; exporting ONNX (opset {OPSET})")
    export_encoder(EncoderForExport(model), spec.input_size, onnx_dir / "encoder.onnx")
    export_decoder(DecoderForExport(model), spec.input_size, onnx_dir / "decoder.onnx")
    images, boxes = parity_inputs(spec.input_size)
    ref = run_torch(model, images, boxes)
    hops: list[HopResult] = [compare("torch->onnx", ref, run_onnx(onnx_dir, images, boxes))]
    check(hops[-1])
    graphs = shipped_graphs(key, encoder_owner, models_dir)
    log(f"{key}: torch->onnx parity ok; converting to OpenVINO IR")
    for graph in GRAPHS:
        if graphs[graph].parent == ir_dir:
            convert_to_ir(onnx_dir / f"{graph}.onnx", graphs[graph], rt_info(key, spec), batch_one=True)
        else:
            (ir_dir / f"{graph}.xml").unlink(missing_ok=True)
            (ir_dir / f"{graph}.bin").unlink(missing_ok=True)
            log(f"{key}: {graph} shared with {graphs[graph].relative_to(models_dir)}")
    ov_out = run_openvino(graphs, images, boxes)
    hops.append(compare("onnx->openvino", run_onnx(onnx_dir, images, boxes), ov_out))
    hops.append(compare("torch->openvino", ref, ov_out))
    for hop in hops[1:]:
        check(hop)
    log(f"{key}: all parity gates passed in {time.perf_counter() - t0:.1f} s")
    shipped = {module: ship_file(overlay, ir_dir, module) for module, overlay in beside_ir(spec).items()}
    files = sorted(p for p in ir_dir.iterdir() if p.suffix in {".xml", ".bin"})
    entry: dict[str, Any] = {
        "architecture": spec.architecture,
        "input_size": spec.input_size,
        "files": {p.name: sha256_file(p) for p in files},
        "preprocessing": spec.preprocessing,
        "encoder_gflops": round(encoder_gflops(model, spec.input_size), 2),
        "source_checkpoint": {
            "source": spec.source,
            "sha256": spec.checkpoint_sha256,
            "licence": spec.licence,
        },
        "parity": [h.as_dict() for h in hops],
    }
    shared = {g: str(p.relative_to(models_dir)) for g, p in graphs.items() if p.parent != ir_dir}
    if shared:
        entry["graphs"] = shared
    if spec.card:
        entry["trained"] = card_facts(spec)
    for module, path in shipped.items():
        if path is not None:
            entry[module] = {"file": f"{key}/{path.name}", "sha256": sha256_file(path),
                             **spec.card[module].get("facts", {})}  # fmt: skip
    return entry


def beside_ir(spec: ModelSpec) -> dict[str, Overlay | None]:
    """The files a model ships next to its IR, by module: its router reference and image screen."""
    return {"router": spec.router, "screen": spec.screen}


def ship_file(overlay: Overlay | None, ir_dir: Path, module: str) -> Path | None:
    """Copy a verified file of the spec next to its IR as ``<module>.npz`` (or remove a stale one)."""
    target = ir_dir / f"{module}.npz"
    if overlay is None:
        target.unlink(missing_ok=True)
        return None
    verify_sha256(overlay.path, overlay.sha256)
    shutil.copyfile(overlay.path, target)
    return target


def route_rows(keys: list[str], weights_dir: Path = WEIGHTS_DIR) -> list[dict[str, Any]]:
    """The manifest's routing table: one row per (dims, modality) a shipped model serves."""
    return [
        {"dims": dims, "modality": mod, "model": key}
        for key in keys
        for dims, mod in get_spec(key, weights_dir).routes
    ]


def precision_rows(weights_dir: Path = WEIGHTS_DIR) -> list[dict[str, Any]]:
    """The manifest's precision table: the routes the precision gate allows another precision
    than fp32 (``weights/precision.json``, written by ``make precision-gate``; none: fp32)."""
    path = weights_dir / PRECISION_FILE
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    precision_table(rows)  # an unknown precision or a route named twice stops the export here
    routes_from_rows([{**r, "model": "any"} for r in rows])  # and so does an unknown modality
    return [{"dims": r["dims"], "modality": r["modality"], "precision": r["precision"]} for r in rows]


def write_manifest(models_dir: Path, entries: dict[str, Any], weights_dir: Path = WEIGHTS_DIR) -> Path:
    manifest = {
        "format": 1,
        "generated_by": "make export (python -m export)",
        "versions": {"torch": torch.__version__, "openvino": ov.__version__, "onnx_opset": OPSET},
        "models": entries,
        "routes": route_rows(sorted(entries), weights_dir),
        "precision": precision_rows(weights_dir),
    }
    routes_from_rows(manifest["routes"])  # a clash or an unknown modality stops the export here
    path = models_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def build_identity() -> dict[str, str]:
    """What a pinned build is keyed by: same OpenVINO, CPU model and kernel ISA -> same bytes
    expected (a generic model name such as "Intel(R) Xeon(R) Processor" covers several ISAs)."""
    return {"openvino": ov.__version__, "cpu": cpu_model_name(), "isa": cpu_isa()}


def matching_pin(pins: dict[str, Any], identity: dict[str, str]) -> dict[str, Any] | None:
    """The pinned build recorded for this identity, or None."""
    for build in pins.get("builds", []):
        if all(build.get(k) == v for k, v in identity.items()):
            return build
    return None


def pinned_files_match(pinned: dict[str, str], shipped: dict[str, str]) -> bool:
    """Every file a pin names has its pinned checksum (a pin may name fewer files than ship: a
    graph whose form changed is dropped from pins made on CPUs not at hand, until re-pinned)."""
    return all(shipped.get(name) == digest for name, digest in pinned.items())


def report_reproducibility(entries: dict[str, dict[str, Any]], pin: bool) -> None:
    """Compare the IR checksums with the build pinned for this OpenVINO + CPU (or pin them)."""
    identity = build_identity()
    current = {**identity, "models": {k: e["files"] for k, e in entries.items()}}
    pins = json.loads(PIN_FILE.read_text()) if PIN_FILE.is_file() else {"builds": []}
    if pin:
        others = [b for b in pins.get("builds", []) if matching_pin({"builds": [b]}, identity) is None]
        pins["builds"] = [*others, current]
        PIN_FILE.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
        log(f"pinned IR checksums for {identity} in {PIN_FILE}")
        return
    pinned = matching_pin(pins, identity)
    if pinned is None:
        log(f"no pinned build for {identity}; parity gates passed (pin with --pin)")
        return
    common = sorted(set(pinned["models"]) & set(current["models"]))
    unpinned = sorted(set(current["models"]) - set(pinned["models"]))
    changed = [k for k in common if not pinned_files_match(pinned["models"][k], current["models"][k])]
    log(
        f"IR of {', '.join(common)} byte-identical to the pinned build"
        if not changed
        else f"IR of {', '.join(changed)} differs from the pinned build (parity passed; --pin if intended)"
    )
    if unpinned:
        log(f"not pinned (yet): {', '.join(unpinned)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    # --models / --weights as in every other command; the -dir spellings are kept as aliases
    parser.add_argument("--models", "--models-dir", dest="models_dir", type=Path, default=MODELS)
    parser.add_argument("--build-dir", type=Path, default=Path("build/onnx"))
    parser.add_argument(
        "--weights",
        "--weights-dir",
        dest="weights_dir",
        type=Path,
        default=WEIGHTS_DIR,
        help="trained models (<key>/card.json)",
    )
    parser.add_argument(
        "--keys",
        nargs="*",
        default=None,
        help="model keys to export (default: the base and every weights/ card)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"record the IR checksums in {PIN_FILE} (after a deliberate change)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    keys = sorted(model_specs(args.weights_dir)) if args.keys is None else args.keys
    specs = {key: get_spec(key, args.weights_dir) for key in set(keys) | {BASE_KEY}}
    owners = encoder_owners(specs)  # encoder owners come first in export_order
    entries = {
        key: export_one(key, args.models_dir, args.build_dir, args.weights_dir, owners[key])
        for key in export_order(specs)
    }
    path = write_manifest(args.models_dir, entries, args.weights_dir)
    for key, entry in entries.items():
        for hop in entry["parity"]:
            log(
                f"{key} {hop['hop']}: emb {hop['embedding_max_abs']:.1e}, "
                f"logit {hop['logit_max_abs']:.1e}, sign agree {hop['mask_sign_agreement']:.5f}"
            )
    log(f"wrote {path}")
    report_reproducibility(entries, args.pin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
