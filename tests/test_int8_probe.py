"""The int8 probe's selection and report (no quantization here: that needs ../shared)."""

import numpy as np

from evaluation import int8_probe as probe


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
