"""The precision gate's decisions (``evaluation/precision_gate.py``): a route takes the first
candidate that passes, and a later candidate runs only the cases of routes still open."""

from __future__ import annotations

from pathlib import Path

from evaluation.precision_gate import (
    CANDIDATES,
    RULE,
    accepted_rows,
    report_folder,
    route_of,
    still_open,
    verdict_of,
)
from train.gate import ALL, GateResult

NAMES = [
    "2DBox_X-Ray_DC1000_1.npz",
    "2DBox_Endoscopy_KvasirSEG_2.npz",
    "3DBox_MR_SpineGeneric_3.npz",
    "2DBox_Unknown_x_4.npz",
]


def result(modality: str, dsc_change: float, source: str = ALL, cases: int = 5) -> GateResult:
    return GateResult("thin_2d", 2, modality, cases, 0.8, 0.8, 0.8 + dsc_change, 0.8, RULE, source)


def test_route_of_a_case_name() -> None:
    assert [route_of(n) for n in NAMES] == [(2, "XRay"), (2, "Endoscopy"), (3, "MR"), None]


def test_a_later_candidate_runs_only_the_routes_still_open() -> None:
    rows = [{"dims": 2, "modality": "Endoscopy", "precision": CANDIDATES[0]}]
    assert still_open(NAMES[:3], rows) == [NAMES[0], NAMES[2]]
    assert still_open(NAMES[:3], []) == NAMES[:3]


def test_a_route_passes_only_when_every_source_of_it_holds_the_rule() -> None:
    results = [
        result("XRay", -0.001),
        result("XRay", 0.002, "UFBA425"),
        result("XRay", -0.006, "DC1000"),  # half a point and a bit: fails the route
        result("Endoscopy", -0.004),
        result("Endoscopy", -0.004, "KvasirSEG"),
    ]
    say = verdict_of("bf16_encoder")
    assert [say(results, r) for r in results] == [
        "keeps fp32", "within the rule", "fails the rule", "bf16_encoder", "within the rule"
    ]  # fmt: skip
    rows = accepted_rows(results, "bf16_encoder")
    assert [(r["modality"], r["precision"], r["dsc_change"]) for r in rows] == [
        ("Endoscopy", "bf16_encoder", -0.004)
    ]


def test_the_first_candidate_reports_at_the_top_each_later_one_in_its_own_folder() -> None:
    out = Path("reports/precision_gate")
    assert report_folder(out, CANDIDATES[0]) == out
    assert [report_folder(out, c) for c in CANDIDATES[1:]] == [out / c for c in CANDIDATES[1:]]
