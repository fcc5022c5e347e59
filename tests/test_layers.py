"""Imports run down the layers, never up: the runtime and the shared helpers import no offline
stage; the networks (modeling/) import no stage at all; export (the stage that makes the models)
imports no later stage. Every import counts, function-level ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

OFFLINE = {"export", "evaluation", "train", "container", "demo", "baseline", "cohort"}
# package -> first-party packages it must never import
FORBIDDEN: dict[str, set[str]] = {
    "app": OFFLINE | {"common"},
    "common": OFFLINE | {"app", "clinical"},
    "clinical": OFFLINE | {"common"},
    "cohort": OFFLINE - {"cohort"},
    "modeling": OFFLINE | {"common", "clinical"},
    "export": {"evaluation", "train", "container", "demo", "cohort", "clinical"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_up_the_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no package {package}"
    wrong = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & FORBIDDEN[package])
        for p in files
        if imported_roots(p) & FORBIDDEN[package]
    }
    assert not wrong, f"{package} imports from later layers: {wrong}"
