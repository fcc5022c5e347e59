"""``make decoder-forms``: the mask decoder as SAM writes it vs the forms the export ships
(the mask as a channel-weighted sum, the cross-attentions folded:
``modeling/architectures/folded_decoder.py``), each exported the same way.

Every form of one model key's decoder goes checkpoint -> ONNX -> OpenVINO IR (static batch 1,
the runtime's compile settings) into a temporary folder. Embeddings: the shipped encoder on the
export's parity probe images; boxes: the probe's boxes plus random ones. Reported: seconds per
box (one box per call, as the app decodes; the forms called in turn, medians), and how far each
form's logits are from SAM's form (max |diff|, sign agreement of the 256x256 low-res logits,
i.e. of the masks before resizing).
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
from export.to_onnx import export_decoder
from export.to_openvino import convert_to_ir
from export.wrappers import DecoderForExport
from modeling.architectures.mask_decoder import mask_as_matmul, mask_as_weighted_sum
from modeling.architectures.sam import BoxSAM, decode_boxes
from modeling.registry import get_spec, load_model

RANDOM_BOXES = 5  # per probe image, besides the probe's own three
MaskProduct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (up, hyper) -> logits


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


SAM_FORM = "SAM's: attention as written, mask as a matmul (shipped before stop 32)"
# Form name -> the module exported for it; each later row adds one change to the one above.
FORMS: dict[str, Callable[[BoxSAM], nn.Module]] = {
    SAM_FORM: lambda model: ReferenceDecoder(model, mask_as_matmul),
    "mask as a channel-weighted sum": lambda model: ReferenceDecoder(model, mask_as_weighted_sum),
    "and cross-attention projections folded (shipped)": DecoderForExport,
}


def compiled_forms(
    model: BoxSAM, input_size: int, folder: Path, threads: int | None
) -> dict[str, ov.CompiledModel]:
    """Form name -> its decoder exported to IR in ``folder`` and compiled as the runtime does."""
    core, out = ov.Core(), {}
    for i, (name, build) in enumerate(FORMS.items()):
        onnx, xml = folder / f"decoder{i}.onnx", folder / f"decoder{i}.xml"
        export_decoder(build(model), input_size, onnx)
        convert_to_ir(onnx, xml, {}, batch_one=True)
        out[name] = core.compile_model(str(xml), "CPU", compile_config(threads))
    return out


def probe_prompts(
    encoder_xml: Path, input_size: int, threads: int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(1, 256, 64, 64) embedding and (1, 4) model-frame box pairs: every probe image with its
    three probe boxes and ``RANDOM_BOXES`` random ones."""
    images, boxes = parity_inputs(input_size)  # (3, 3, S, S), (3, 4)
    encoder = ov.Core().compile_model(str(encoder_xml), "CPU", compile_config(threads))
    rng = np.random.default_rng(0)
    pairs = []
    for image in images:
        embedding = encoder({"image": image[None]})[0].copy()
        x0y0 = rng.uniform(0, 0.7 * input_size, (RANDOM_BOXES, 2))
        extra = np.concatenate([x0y0, x0y0 + rng.uniform(6, 0.3 * input_size, (RANDOM_BOXES, 2))], axis=1)
        pairs += [(embedding, box[None].astype(np.float32)) for box in np.concatenate([boxes, extra])]
    return pairs


def logit_differences(
    ref: ov.CompiledModel, other: ov.CompiledModel, pairs: list[tuple[np.ndarray, np.ndarray]]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.decoder_forms", description=__doc__)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--key", default=DEFAULT_MODEL_KEY)
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed rounds (each: every pair once per form)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/decoder_forms.md"))
    args = parser.parse_args(argv)
    threads = default_threads()
    spec, entry = get_spec(args.key), read_manifest(args.models)[args.key]
    model = load_model(spec).eval()
    pairs = probe_prompts(entry.encoder_xml, spec.input_size, threads)
    with tempfile.TemporaryDirectory() as tmp:
        forms = compiled_forms(model, spec.input_size, Path(tmp), threads)
        drift = {
            name: logit_differences(forms[SAM_FORM], compiled, pairs) for name, compiled in forms.items()
        }
        calls = {
            name: lambda c=compiled: [c({"image_embeddings": e, "boxes": b}) for e, b in pairs]
            for name, compiled in forms.items()
        }
        seconds = alternating_medians(calls, args.repeats)
    per_box = {name: s / len(pairs) for name, s in seconds.items()}
    base = per_box[SAM_FORM]
    lines = [
        f"# Decoder forms ({args.key})",
        "",
        f"Machine: {describe()}.\n\n"
        f"Command: `make decoder-forms` (`python -m evaluation.decoder_forms`), {time.strftime('%Y-%m-%d')}; "
        f"{len(pairs)} prompts (3 probe images x {3 + RANDOM_BOXES} boxes), one box per call, "
        f"{args.repeats} alternating rounds, medians. Logits: the 256x256 low-res output against the "
        "first row's (the export's parity gate allows 5e-2 and a sign agreement of 0.9995).",
        "",
        "| decoder forward | ms per box | speed vs the first | max abs logit diff | min sign agreement |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {1000 * s:.1f} | {base / s:.2f}x | {drift[name][0]:.1e} | {drift[name][1]:.5f} |"
            for name, s in per_box.items()
        ),
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
