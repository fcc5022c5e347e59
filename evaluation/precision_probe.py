"""``make precision-probe``: does a cheaper number format pay on this CPU, and does it keep the masks?

Variants of the LiteMedSAM encoder (:data:`VARIANTS`): the fp32 IR run in bf16 (OpenVINO's
``INFERENCE_PRECISION_HINT``; measured only where the CPU has bf16: AVX512_BF16 or AMX), and NNCF
int8 post-training quantizations of it (``ModelType.TRANSFORMER``), calibrated on one slice of each
of the first cases (seeded order) of every modality x dims group of the *train* split. On the
*validation* split (every source, held-out sources included) each box is decoded from the fp32 and
from each variant's embedding, by LiteMedSAM's decoder at the variant's precision (an int8 encoder
keeps the fp32 decoder; bf16 runs both graphs in bf16, as an app run so would): mask agreement (Dice
of the two masks) and DSC against the ground truth, per modality and source. Seconds per slice and
per box: every variant in one process, alternating call by call, medians; plus where the encoder's
time goes (OpenVINO per-op profile by kernel). 2D cases: the image and its boxes; 3D: the middle
slice of each object's z range with the object's tight box on that slice (no propagation).

Writes ``reports/precision/README.md`` and ``reports/precision/boxes.csv``; quantized IRs go to
``build/precision/<variant>.xml`` (reused when present: delete to recalibrate). Needs nncf (dev).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from common.paths import BUILD, MODELS, SHARED_DATA, SPLIT_CSV
from common.reports import write_csv, write_report
from evaluation import metrics
from evaluation.split import read_rows
from evaluation.timing import alternating_medians


@dataclass(frozen=True)
class Variant:
    """An encoder under test: the fp32 IR, or (``left_fp32`` not None) an NNCF int8 quantization of
    it keeping those operation types / node-name patterns in fp32, compiled at ``precision``."""

    precision: str = "f32"  # a key of PRECISIONS: the encoder's and the decoder's inference precision
    left_fp32: dict[str, list[str]] | None = None


# Inference precision -> (OpenVINO INFERENCE_PRECISION_HINT type name, EXECUTION_MODE_HINT, the
# OPTIMIZATION_CAPABILITIES entry the CPU needs; "" = every CPU).
PRECISIONS: dict[str, tuple[str, str, str]] = {
    "f32": ("f32", "ACCURACY", ""),
    "bf16": ("bf16", "PERFORMANCE", "BF16"),
}

REFERENCE = "fp32"
VARIANTS: dict[str, Variant] = {
    REFERENCE: Variant(),
    "bf16": Variant(precision="bf16"),
    "int8 everywhere": Variant(left_fp32={}),
    "int8, stem and neck fp32": Variant(left_fp32={"patterns": [".*patch_embed.*", ".*neck.*"]}),
    "int8 convolutions only": Variant(left_fp32={"types": ["MatMul", "ScaledDotProductAttention"]}),
}
CALIBRATION_PER_GROUP = 8  # train cases per modality x dims group, one slice each
VALIDATION_PER_SOURCE = 4  # val cases per modality x dims x source
BOXES_PER_CASE = 6  # 2D boxes (3D: objects, one slice each) per validation case
SEED = 0


@dataclass(frozen=True)
class Slice:
    """One validation image: (H, W[, 3]) uint8, its (N, 4) XYXY boxes and (N, H, W) bool masks."""

    case: str
    modality: str
    source: str
    image: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


def pick_rows(rows: list[dict[str, str]], split: str, per: int, by_source: bool) -> list[dict[str, str]]:
    """The first ``per`` rows (seeded shuffle) of each modality x dims (x source) group."""
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        if row["split"] == split:
            key = (row["modality"], row["case"][:2]) + ((row["source"],) if by_source else ())
            groups.setdefault(key, []).append(row)
    rng = np.random.default_rng(SEED)
    picked = []
    for key in sorted(groups):
        group = groups[key]
        picked += [group[i] for i in rng.permutation(len(group))[:per]]
    return picked


def case_slices(row: dict[str, str], data: Path, max_boxes: int) -> list[Slice]:
    """2D: the image with its first boxes; 3D: the middle slice of each of the first objects."""
    from app.npz_io import load_case
    from app.postprocessing import mask_bbox

    path = data / row["corpus"] / row["case"]
    case = load_case(path)
    gts = np.load(path)["gts"]
    mod, src = row["modality"], row["source"]
    if not case.is_3d:
        boxes = case.boxes[:max_boxes]
        masks = np.stack([gts == i + 1 for i in range(len(boxes))])
        return [Slice(row["case"], mod, src, case.image, boxes, masks)]
    out = []
    for i, (_, _, z0, _, _, z1) in enumerate(case.boxes[:max_boxes]):
        z = int(np.clip((z0 + z1) // 2, 0, case.image.shape[0] - 1))
        mask = gts[z] == i + 1
        box = mask_bbox(mask)  # (4,) XYXY, None when the object misses this slice
        if box is not None:
            out.append(Slice(f"{row['case']}:z{z}", mod, src, case.image[z], box[None], mask[None]))
    return out


def calibration_inputs(rows: list[dict[str, str]], data: Path) -> list[np.ndarray]:
    """(1, 3, 256, 256) encoder inputs, one slice per picked train case."""
    from app.preprocessing import encoder_input

    picked = pick_rows(rows, "train", CALIBRATION_PER_GROUP, by_source=False)
    return [encoder_input(s.image, 256)[0] for r in picked for s in case_slices(r, data, 1)[:1]]


def quantize(fp32: Any, inputs: list[np.ndarray], left_fp32: dict[str, list[str]]) -> Any:
    import nncf

    scope = nncf.IgnoredScope(**left_fp32) if left_fp32 else None
    kwargs = {"ignored_scope": scope} if scope else {}
    return nncf.quantize(
        fp32, nncf.Dataset(inputs), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(inputs), **kwargs
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """The challenge Dice, with two empty masks counted as agreeing (1, not NaN)."""
    value = metrics.dice(a, b)
    return 1.0 if np.isnan(value) else value


def precision_config(config: dict[Any, Any], precision: str) -> dict[Any, Any]:
    """The runtime's compile settings with the inference precision of ``precision`` (PRECISIONS)."""
    import openvino as ov
    import openvino.properties.hint as hints

    element, mode, _ = PRECISIONS[precision]
    return {
        **config,
        hints.inference_precision: getattr(ov.Type, element),
        hints.execution_mode: getattr(hints.ExecutionMode, mode),
    }


def runnable(variants: dict[str, Variant], capabilities: list[str]) -> dict[str, Variant]:
    """The variants this CPU can run (bf16 needs its BF16 capability); the reference always."""
    return {n: v for n, v in variants.items() if PRECISIONS[v.precision][2] in ("", *capabilities)}


def box_rows(slc: Slice, models: dict[str, tuple[Any, Any]]) -> list[dict[str, Any]]:
    """Per box: DSC of every variant's mask (its encoder, its decoder) vs the ground truth, and
    agreement with the reference's mask."""
    from app.postprocessing import logits_to_mask
    from app.preprocessing import box_to_model, clip_box_2d, encoder_input

    x, resized = encoder_input(slc.image, 256)
    hw = slc.image.shape[:2]
    embeddings = {name: np.array(enc({"image": x})[0]) for name, (enc, _) in models.items()}
    rows = []
    for box, gt in zip(slc.boxes, slc.masks, strict=True):
        model_box = box_to_model(clip_box_2d(box, hw), hw, 256).reshape(1, 4)
        feeds = {n: {"image_embeddings": e, "boxes": model_box} for n, e in embeddings.items()}
        logits = {n: models[n][1](feed)[0][0, 0] for n, feed in feeds.items()}
        masks = {n: logits_to_mask(np.array(lg), resized, hw) for n, lg in logits.items()}
        row: dict[str, Any] = {"case": slc.case, "modality": slc.modality, "source": slc.source}
        for name, mask in masks.items():
            row[f"dsc {name}"] = round(dice(mask, gt), 4)
            row[f"agreement {name}"] = round(dice(mask, masks[REFERENCE]), 4)
        rows.append(row)
    return rows


def seconds(models: dict[str, tuple[Any, Any]], repeats: int = 15) -> dict[str, tuple[float, float]]:
    """Variant -> median seconds (per 256x256 slice encoded, per box decoded), the variants called
    in turn (machine drift hits all)."""
    rng = np.random.default_rng(SEED)
    x = rng.random((1, 3, 256, 256), dtype=np.float32)
    feed = {"image_embeddings": rng.standard_normal((1, 256, 64, 64), dtype=np.float32),
            "boxes": np.array([[40.0, 50.0, 180.0, 200.0]], np.float32)}  # fmt: skip
    enc = alternating_medians({n: partial(e, {"image": x}) for n, (e, _) in models.items()}, repeats, 2)
    dec = alternating_medians({n: partial(d, feed) for n, (_, d) in models.items()}, repeats * 2, 2)
    return {n: (enc[n], dec[n]) for n in models}


def kernel_profile(core: Any, xml: Path, config: dict[Any, Any], top: int = 6) -> list[tuple[str, float]]:
    """(op type / kernel, ms) of one call, the most expensive first."""
    compiled = core.compile_model(str(xml), "CPU", {**config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(SEED).random((1, 3, 256, 256), dtype=np.float32)
    for _ in range(3):
        request.infer({"image": x})
    spent: Counter[str] = Counter()
    for p in request.profiling_info:
        spent[f"{p.node_type} / {p.exec_type}"] += p.real_time.total_seconds() * 1000
    return spent.most_common(top)


def summary(rows: list[dict[str, Any]], names: list[str], key: tuple[str, ...]) -> list[str]:
    """Markdown rows: per group of ``key`` columns, boxes, DSC fp32, then per variant DSC change
    (points) and mean / 10th-percentile agreement with fp32."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in key), []).append(r)
    groups[("all",) + ("",) * (len(key) - 1)] = rows
    lines = []
    for k, rs in groups.items():
        base = np.mean([r["dsc fp32"] for r in rs])
        cells = [f"{base:.3f}"]
        for n in names:
            agree = [r[f"agreement {n}"] for r in rs]
            diff = 100 * (np.mean([r[f"dsc {n}"] for r in rs]) - base)
            cells.append(f"{diff:+.2f} / {np.mean(agree):.3f} / {np.percentile(agree, 10):.3f}")
        lines.append(f"| {' | '.join(k)} | {len(rs)} | {' | '.join(cells)} |")
    return lines


def render(
    rows: list[dict[str, Any]], timed: dict[str, tuple[float, float]],
    profiles: dict[str, list[tuple[str, float]]], n_cal: int, cpu: str, capabilities: list[str],
    skipped: list[str],
) -> list[str]:  # fmt: skip
    names = [n for n in timed if n != REFERENCE]
    enc0, dec0 = timed[REFERENCE]
    head = " | ".join(f"{n}: DSC change / agreement mean / p10" for n in names)
    sep = "|---" * (3 + len(names)) + "|"
    lines = [
        "# Precision probe: bf16 and NNCF int8 encoders against fp32",
        "",
        f"Command: `make precision-probe` (`python -m evaluation.precision_probe`). CPU: {cpu} "
        f"(OpenVINO optimization capabilities: {', '.join(capabilities)}). Calibration (int8): "
        f"{n_cal} slices, one per train case, {CALIBRATION_PER_GROUP} per modality x dims group. "
        f"Validation: up to {VALIDATION_PER_SOURCE} val cases per source, {BOXES_PER_CASE} boxes "
        "each (3D: the middle slice of each object with its tight box). An int8 variant's masks come "
        "from LiteMedSAM's fp32 decoder (only the encoder changes); bf16 runs the encoder and the "
        "decoder in bf16. Agreement = Dice of the variant's mask with the fp32 mask."
        + (f" Not run on this CPU: {', '.join(skipped)} (no bf16 support)." if skipped else ""),
        "",
        "## Seconds per 256x256 slice and per box (one process, alternating calls, medians)",
        "",
        "| variant | encoder s per slice | vs fp32 | decoder s per box | vs fp32 |",
        "|---|---|---|---|---|",
        *(f"| {n} | {e:.3f} | {enc0 / e:.2f}x | {d:.4f} | {dec0 / d:.2f}x |" for n, (e, d) in timed.items()),
        "",
        "## Where one call's time goes (OpenVINO per-op profile, op type / kernel, ms)",
        "",
    ]
    for name, prof in profiles.items():
        lines.append(f"- {name}: " + "; ".join(f"{k} {ms:.0f}" for k, ms in prof))
    lines += [
        "",
        "## Masks per modality (DSC change in points vs fp32; agreement with fp32)",
        "",
        f"| modality | boxes | DSC fp32 | {head} |",
        sep,
        *summary(rows, names, ("modality",)),
        "",
        "## Masks per source",
        "",
        f"| modality | source | boxes | DSC fp32 | {head} |",
        sep + "---|",
        *summary(rows, names, ("modality", "source")),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.precision_probe", description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="holds public/ and public2/")
    parser.add_argument("--split", type=Path, default=SPLIT_CSV)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--work", type=Path, default=BUILD / "precision")
    parser.add_argument("--out", type=Path, default=Path("reports/precision"))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="fp32 always runs"
    )
    args = parser.parse_args(argv)
    import openvino as ov

    from app.sessions import compile_config
    from common.machine import cpu_model_name

    rows = [r for r in read_rows(args.split) if (args.data / r["corpus"] / r["case"]).is_file()]
    if not rows:
        print(f"precision-probe: no case of {args.split} under {args.data}", file=sys.stderr)
        return 2
    core, config = ov.Core(), compile_config()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    asked = {n: VARIANTS[n] for n in [REFERENCE, *args.variants] if n in VARIANTS}
    variants = runnable(asked, capabilities)
    fp32_xml = args.models / "lite_medsam" / "encoder.xml"
    quantized = [v for v in variants.values() if v.left_fp32 is not None]
    cal = calibration_inputs(rows, args.data) if quantized else []
    xmls = {}
    for name, variant in variants.items():
        xmls[name] = fp32_xml
        if variant.left_fp32 is not None:
            xmls[name] = args.work / f"{name.replace(' ', '_').replace(',', '')}.xml"
            if not xmls[name].is_file():
                t0 = time.perf_counter()
                args.work.mkdir(parents=True, exist_ok=True)
                ov.save_model(quantize(core.read_model(fp32_xml), cal, variant.left_fp32), xmls[name])
                print(
                    f"precision-probe: {name}: quantized in {time.perf_counter() - t0:.0f} s", file=sys.stderr
                )
    configs = {n: precision_config(config, v.precision) for n, v in variants.items()}
    decoder_xml = str(args.models / "lite_medsam" / "decoder.xml")
    decoder_config = compile_config(graph="decoder")
    decoders = {p: core.compile_model(decoder_xml, "CPU", precision_config(decoder_config, p))
                for p in {v.precision for v in variants.values()}}  # fmt: skip
    models = {
        n: (core.compile_model(str(xmls[n]), "CPU", configs[n]), decoders[v.precision])
        for n, v in variants.items()
    }
    timed = seconds(models)
    profiles = {n: kernel_profile(core, xmls[n], configs[n]) for n in variants}
    scored: list[dict[str, Any]] = []
    picked = pick_rows(rows, "val", VALIDATION_PER_SOURCE, by_source=True)
    for i, row in enumerate(picked, start=1):
        for slc in case_slices(row, args.data, BOXES_PER_CASE):
            scored += box_rows(slc, models)
        print(f"precision-probe: scored {i}/{len(picked)} {row['case']}", file=sys.stderr)
    write_csv(args.out / "boxes.csv", scored)
    skipped = sorted(set(asked) - set(variants))
    lines = render(scored, timed, profiles, len(cal), cpu_model_name(), capabilities, skipped)
    write_report(args.out / "README.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
