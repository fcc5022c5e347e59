"""The precision probe's selection, variants and report (no quantization here: that needs ../shared)."""

import numpy as np

from app.sessions import compile_config
from evaluation import precision_probe as probe


def rows(n: int, split: str, source: str) -> list[dict[str, str]]:
    return [
        {"case": f"2DBox_US_{source}_{i}.npz", "modality": "US", "source": source, "split": split}
        for i in range(n)
    ]


def test_pick_rows_caps_each_group_and_keeps_the_split() -> None:
    table = rows(10, "train", "A") + rows(3, "val", "A") + rows(5, "val", "B")
    train = probe.pick_rows(table, "train", 4, by_source=False)
    assert len(train) == 4 and {r["split"] for r in train} == {"train"}
    val = probe.pick_rows(table, "val", 4, by_source=True)
    assert sorted(r["source"] for r in val) == ["A"] * 3 + ["B"] * 4
    assert probe.pick_rows(table, "val", 4, by_source=False) != val  # one group: 4 rows in all
    assert probe.pick_rows(table, "train", 4, by_source=False) == train  # seeded


def test_summary_reports_the_change_in_points_and_the_agreement() -> None:
    def box(source: str, fp32: float, variant: float, agreement: float) -> dict:
        return {"modality": "US", "source": source, "dsc fp32": fp32, "dsc v": variant,
                "agreement fp32": 1.0, "agreement v": agreement}  # fmt: skip

    scored = [box("A", 0.8, 0.7, 0.9), box("B", 0.6, 0.6, 1.0)]
    lines = probe.summary(scored, ["v"], ("modality", "source"))
    assert lines[0].startswith("| US | A | 1 | 0.800 | -10.00 / 0.900 /")
    assert lines[-1].startswith("| all |  | 2 | 0.700 | -5.00 / 0.950 /")


def test_dice_of_two_empty_masks_is_one() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert (
        probe.dice(empty, empty) == 1.0 and probe.dice(full, empty) == 0.0 and probe.dice(full, full) == 1.0
    )


def test_bf16_runs_only_where_the_cpu_has_it_and_fp32_always() -> None:
    assert "bf16" not in probe.runnable(probe.VARIANTS, ["FP32", "INT8"])
    assert set(probe.runnable(probe.VARIANTS, ["FP32", "INT8", "BF16"])) == set(probe.VARIANTS)
    assert probe.REFERENCE in probe.runnable(probe.VARIANTS, [])
    assert probe.VARIANTS[probe.REFERENCE] == probe.Variant()  # the shipped fp32 encoder, not quantized


def test_precision_config_replaces_the_runtime_precision_and_keeps_the_rest() -> None:
    base = compile_config()
    bf16 = probe.precision_config(base, "bf16")
    assert str(bf16["INFERENCE_PRECISION_HINT"]) != str(base["INFERENCE_PRECISION_HINT"])
    assert bf16["PERFORMANCE_HINT"] == base["PERFORMANCE_HINT"] and len(bf16) == len(base)
    assert probe.precision_config(base, "f32") == base


def test_report_gives_speed_ratios_and_names_what_this_cpu_could_not_run() -> None:
    def box(source: str) -> dict:
        return {"modality": "US", "source": source, "dsc fp32": 0.8, "dsc int8": 0.7,
                "agreement fp32": 1.0, "agreement int8": 0.9}  # fmt: skip

    timed = {"fp32": (0.4, 0.03), "int8": (0.1, 0.03)}
    lines = probe.render([box("A")], timed, {}, 8, "cpu", ["FP32"], ["bf16"])
    text = "\n".join(lines)
    assert "| int8 | 0.100 | 4.00x | 0.0300 | 1.00x |" in text
    assert "Not run on this CPU: bf16" in text
