"""``make graph-forms``: each graph as the architecture writes it vs the forms the export ships.

Decoder: SAM's mask decoder; then the mask as a channel-weighted sum; then the cross-attentions
folded (``modeling/architectures/folded_decoder.py``). Encoder: TinyViT with its fused qkv
projection; then the qkv projection run as three (``tiny_vit.SplitQKVAttention``). Each later
row adds one change to the row above; the last row of each table is what ``make export`` ships.

Every form of one model key's graphs goes checkpoint -> ONNX -> OpenVINO IR (static batch 1, the
runtime's compile settings) into a temporary folder. Inputs: the export's parity probe images;
boxes: the probe's boxes plus random ones, on the shipped encoder's embeddings. Reported: seconds
per slice and per box (one per call, as the app runs them; the forms called in turn, medians),
and how far each form's output is from the first form's (embeddings: max |diff|; decoder: max
|diff| of the 256x256 low-res logits and their sign agreement, i.e. the masks before resizing).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from torch import nn

from app.routing import DEFAULT_MODEL_KEY
from app.sessions import compile_config, default_threads, read_manifest
from common.machine import describe
from common.paths import MODELS
from common.reports import write_report
from evaluation.timing import alternating_medians
from export.parity import parity_inputs
from export.to_onnx import export_decoder, export_encoder
from export.to_openvino import convert_to_ir
from export.wrappers import DecoderForExport, EncoderForExport
from modeling.architectures.mask_decoder import mask_as_matmul, mask_as_weighted_sum
from modeling.architectures.sam import BoxSAM, decode_boxes
from modeling.registry import get_spec, load_model

RANDOM_BOXES = 5  # per probe image, besides the probe's own three
MaskProduct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (up, hyper) -> logits
Prompt = tuple[np.ndarray, np.ndarray]  # (1, 256, 64, 64) embedding, (1, 4) model-frame box


class ReferenceDecoder(nn.Module):
    """``BoxSAM.decode`` with the reference attention and a chosen mask product."""

    def __init__(self, model: BoxSAM, mask_product: MaskProduct) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = copy.deepcopy(model.mask_decoder)
        self.mask_decoder.mask_product = mask_product
        self.eval()

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return decode_boxes(self.prompt_encoder, self.mask_decoder, image_embeddings, boxes)


class ReferenceEncoder(nn.Module):
    """The image encoder as the architecture writes it."""

    def __init__(self, model: BoxSAM) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


SAM_DECODER = "SAM's: attention as written, mask as a matmul (shipped before stop 32)"
TINYVIT = "TinyViT as written: one fused qkv projection per window attention (shipped before stop 32)"
# Form name -> the module exported for it; each later row adds one change to the one above.
DECODER_FORMS: dict[str, Callable[[BoxSAM], nn.Module]] = {
    SAM_DECODER: lambda model: ReferenceDecoder(model, mask_as_matmul),
    "mask as a channel-weighted sum": lambda model: ReferenceDecoder(model, mask_as_weighted_sum),
    "and cross-attention projections folded (shipped)": DecoderForExport,
}
ENCODER_FORMS: dict[str, Callable[[BoxSAM], nn.Module]] = {
    TINYVIT: ReferenceEncoder,
    "qkv as three projections (shipped)": EncoderForExport,
}
# Graph -> how one form is written to ONNX.
EXPORTERS: dict[str, Callable[[nn.Module, int, Path], None]] = {
    "decoder": export_decoder,
    "encoder": export_encoder,
}


def compiled_forms(
    graph: str,
    forms: dict[str, Callable[[BoxSAM], nn.Module]],
    model: BoxSAM,
    input_size: int,
    folder: Path,
    threads: int | None,
) -> dict[str, ov.CompiledModel]:
    """Form name -> that form of ``graph`` exported to IR in ``folder``, compiled as the runtime does."""
    core, out = ov.Core(), {}
    for i, (name, build) in enumerate(forms.items()):
        onnx, xml = folder / f"{graph}{i}.onnx", folder / f"{graph}{i}.xml"
        EXPORTERS[graph](build(model), input_size, onnx)
        convert_to_ir(onnx, xml, {}, batch_one=True)
        out[name] = core.compile_model(str(xml), "CPU", compile_config(threads, graph=graph))
    return out


def probe_prompts(encoder: ov.CompiledModel, images: np.ndarray, boxes: np.ndarray) -> list[Prompt]:
    """Every probe image's embedding with its probe boxes and ``RANDOM_BOXES`` random ones.

    images (I, 3, S, S) float32; boxes (K, 4) model-frame XYXY."""
    size = images.shape[-1]
    rng = np.random.default_rng(0)
    pairs = []
    for image in images:
        embedding = encoder({"image": image[None]})[0].copy()
        x0y0 = rng.uniform(0, 0.7 * size, (RANDOM_BOXES, 2))
        extra = np.concatenate([x0y0, x0y0 + rng.uniform(6, 0.3 * size, (RANDOM_BOXES, 2))], axis=1)
        pairs += [(embedding, box[None].astype(np.float32)) for box in np.concatenate([boxes, extra])]
    return pairs


def logit_differences(
    ref: ov.CompiledModel, other: ov.CompiledModel, pairs: list[Prompt]
) -> tuple[float, float]:
    """``other``'s low-res logits against ``ref``'s over every pair: max |diff|, and the lowest
    fraction of pixels of one prompt with the same sign (the same mask before resizing)."""
    diffs, agree = [], []
    for embedding, box in pairs:
        inputs = {"image_embeddings": embedding, "boxes": box}
        a, b = ref(inputs)[0], other(inputs)[0]  # (1, 1, 256, 256)
        diffs.append(float(np.abs(a - b).max()))
        agree.append(float(np.mean((a > 0) == (b > 0))))
    return max(diffs), min(agree)


def embedding_difference(ref: ov.CompiledModel, other: ov.CompiledModel, images: np.ndarray) -> float:
    """Max |diff| between the two encoders' embeddings over the (I, 3, S, S) images."""
    return max(float(np.abs(ref({"image": x[None]})[0] - other({"image": x[None]})[0]).max()) for x in images)


def encoder_table(
    model: BoxSAM, images: np.ndarray, folder: Path, threads: int | None, repeats: int
) -> tuple[list[str], ov.CompiledModel]:
    """The encoder forms' table lines, and the shipped form (for the decoder's prompts)."""
    forms = compiled_forms("encoder", ENCODER_FORMS, model, images.shape[-1], folder, threads)
    drift = {name: embedding_difference(forms[TINYVIT], c, images) for name, c in forms.items()}
    calls = {name: lambda c=c: [c({"image": x[None]}) for x in images] for name, c in forms.items()}
    per_slice = {name: s / len(images) for name, s in alternating_medians(calls, repeats).items()}
    base = per_slice[TINYVIT]
    lines = [
        "| encoder forward | s per slice | speed vs the first | max abs embedding diff |",
        "|---|---|---|---|",
        *(f"| {n} | {s:.3f} | {base / s:.2f}x | {drift[n]:.1e} |" for n, s in per_slice.items()),
    ]
    return lines, list(forms.values())[-1]


def decoder_table(
    model: BoxSAM, pairs: list[Prompt], size: int, folder: Path, threads: int | None, repeats: int
) -> list[str]:
    forms = compiled_forms("decoder", DECODER_FORMS, model, size, folder, threads)
    drift = {name: logit_differences(forms[SAM_DECODER], c, pairs) for name, c in forms.items()}
    calls = {
        name: lambda c=c: [c({"image_embeddings": e, "boxes": b}) for e, b in pairs]
        for name, c in forms.items()
    }
    per_box = {name: s / len(pairs) for name, s in alternating_medians(calls, repeats).items()}
    base = per_box[SAM_DECODER]
    return [
        "| decoder forward | ms per box | speed vs the first | max abs logit diff | min sign agreement |",
        "|---|---|---|---|---|",
        *(
            f"| {n} | {1000 * s:.1f} | {base / s:.2f}x | {drift[n][0]:.1e} | {drift[n][1]:.5f} |"
            for n, s in per_box.items()
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.graph_forms", description=__doc__)
    parser.add_argument(
        "--models", type=Path, default=MODELS, help="exported models (for the model key's spec)"
    )
    parser.add_argument("--key", default=DEFAULT_MODEL_KEY)
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed rounds (each: every input once per form)"
    )
    parser.add_argument(
        "--images", type=int, default=3, help="probe images used, 1..3 (fewer: a quicker smoke run)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/graph_forms.md"))
    args = parser.parse_args(argv)
    if not 1 <= args.images <= 3:
        parser.error(f"--images must be 1..3, got {args.images}")
    threads = default_threads()
    read_manifest(args.models)[args.key]  # the key must be exported (a clear error otherwise)
    spec = get_spec(args.key)
    model = load_model(spec).eval()
    images, boxes = parity_inputs(spec.input_size)  # (3, 3, S, S), (3, 4)
    images = images[: args.images]  # (I, 3, S, S)
    with tempfile.TemporaryDirectory() as tmp:
        encoder_lines, shipped_encoder = encoder_table(model, images, Path(tmp), threads, args.repeats)
        pairs = probe_prompts(shipped_encoder, images, boxes)
        decoder_lines = decoder_table(model, pairs, spec.input_size, Path(tmp), threads, args.repeats)
    lines = [
        f"# Graph forms ({args.key})",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make graph-forms` (`python -m evaluation.graph_forms`), {time.strftime('%Y-%m-%d')}; "
        f"{len(images)} probe images, {len(pairs)} prompts ({len(boxes)} probe + {RANDOM_BOXES} random boxes "
        f"per image), one slice or box per call, {args.repeats} alternating rounds, medians. Differences "
        "are against each table's first row (the export's parity gate allows 1e-3 on embeddings, 5e-2 on "
        "logits and a sign agreement of 0.9995).",
        "",
        "## Encoder",
        "",
        *encoder_lines,
        "",
        "## Decoder",
        "",
        *decoder_lines,
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
