"""Run the appliance or the baseline oracle over a folder of cases, resumably.

Outputs go to ``WORK/baseline/`` and ``WORK/app-<tag>/``, where the tag is a short sha256 of
the models manifest the app ran with, so outputs of different model sets (LiteMedSAM alone, with
specialists, with candidates) never mix. A system is run only on the cases whose output is
missing, so an interrupted corpus run resumes, and ``make eval``, ``make agreement`` and the
training gates share one set of runs (default ``build/runs``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from app.routing import DEFAULT_MODEL_KEY
from common.paths import MODELS
from common.process import cli_command, timed_process

DEFAULT_WORK = Path("build/runs")
DEFAULT_MODELS = MODELS
# Flags per system for accuracy runs. The oracle reuses slice embeddings across the boxes of a
# 3D case (identical masks, a fraction of the time); `make bench` times the original instead.
SYSTEM_ARGS: dict[str, list[str]] = {"app": [], "baseline": ["--reuse-embeddings"]}


def run_cli(module: str, data: Path, out: Path, log: Path, extra: list[str] | None = None) -> float:
    """``python -m <module> -i data -o out [extra]``; stdout+stderr appended to ``log``; wall s."""
    out.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    return timed_process(cli_command(module, data, out, *(extra or [])), log=log).seconds


def link_cases(names: list[str], data: Path, folder: Path) -> Path:
    """A folder of symlinks to the chosen cases (so a CLI can run on a subset)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npz"):
        old.unlink()
    for name in names:
        (folder / name).symlink_to((data / name).resolve())
    return folder


def models_tag(models: Path) -> str:
    """Short sha256 of ``models/manifest.json`` (which names every IR file by its sha256)."""
    return hashlib.sha256((models / "manifest.json").read_bytes()).hexdigest()[:12]


def output_folder(system: str, work: Path, models: Path = DEFAULT_MODELS) -> Path:
    return work / (f"app-{models_tag(models)}" if system == "app" else system)


def derived_models(models: Path, dest: Path, manifest: dict) -> Path:
    """A models folder ``dest`` with ``manifest`` and links to ``models``' folders of its keys."""
    dest.mkdir(parents=True, exist_ok=True)
    for key in manifest["models"]:
        link = dest / key
        if not link.exists():
            link.symlink_to((models / key).resolve())
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if not (dest / "manifest.json").is_file() or (dest / "manifest.json").read_text() != text:
        (dest / "manifest.json").write_text(text)
    return dest


def base_only_models(models: Path, dest: Path) -> Path:
    """A models folder with LiteMedSAM alone, no routes and fp32 everywhere (links to ``models``'
    IR): what the app runs when agreement with the oracle or a gate's baseline is measured."""
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["models"] = {DEFAULT_MODEL_KEY: manifest["models"][DEFAULT_MODEL_KEY]}
    manifest["routes"] = []
    manifest["precision"] = []
    return derived_models(models, dest, manifest)


def with_precision(models: Path, dest: Path, rows: list[dict[str, object]]) -> Path:
    """The same models and routes with ``rows`` as the precision table (``app/precision.py``;
    ``[]``: fp32 everywhere)."""
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["precision"] = rows
    return derived_models(models, dest, manifest)


def without_routers(models: Path, dest: Path) -> Path:
    """The same models and routes with no router and no image screen: each specialist serves
    every box routed to it (how a specialist alone is measured)."""
    return without(models, dest, ("router", "screen"))


def without_screens(models: Path, dest: Path) -> Path:
    """The same models, routes and routers with no image screen (``app/screen.py``): every image
    of a specialist's routes goes to its router (the product before the screen)."""
    return without(models, dest, ("screen",))


def without(models: Path, dest: Path, parts: tuple[str, ...]) -> Path:
    """The same models with ``parts`` of every manifest entry left out."""
    manifest = json.loads((models / "manifest.json").read_text())
    for entry in manifest["models"].values():
        for part in parts:
            entry.pop(part, None)
    return derived_models(models, dest, manifest)


def run_missing(
    system: str, names: list[str], data: Path, work: Path, models: Path = DEFAULT_MODELS
) -> tuple[int, float]:
    """Run ``system`` on the cases of ``names`` without an output in its folder
    (:func:`output_folder`): (cases run, seconds). The app runs with ``models``."""
    out = output_folder(system, work, models)
    todo = [n for n in names if not (out / n).is_file()]
    if not todo:
        return 0, 0.0
    inputs = link_cases(todo, data, work / f"{out.name}_inputs")
    log = work / f"{out.name}.log"
    extra = ["--models", str(models)] if system == "app" else []
    return len(todo), run_cli(system, inputs, out, log, [*SYSTEM_ARGS.get(system, []), *extra])
