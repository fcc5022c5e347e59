"""End-to-end: the predict.sh contract on a temp folder, with the real model."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.synthetic import disks_2d, save_case, sphere_3d
from tests.conftest import ROOT


def run_predict(inputs: Path, outputs: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SEG_INPUT": str(inputs),
        "SEG_OUTPUT": str(outputs),
        "SEG_CACHE_DIR": str(cache),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        ["sh", "predict.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600
    )


@pytest.fixture(scope="module")
def batch(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("cli")
    inputs, outputs = root / "inputs", root / "outputs"
    save_case(inputs / "2DBox_US_disks.npz", *disks_2d())
    save_case(inputs / "3DBox_CT_sphere.npz", *sphere_3d(shape=(8, 64, 64)))
    (inputs / "2DBox_US_broken.npz").write_bytes(b"garbage")
    np.savez(inputs / "2DBox_US_nokeys.npz", image=np.zeros((4, 4, 3), np.uint8))
    first = run_predict(inputs, outputs, root / "cache")
    second = run_predict(inputs, outputs, root / "cache")
    return inputs, outputs, first, second


def test_good_cases_are_written_with_the_contract(batch) -> None:
    inputs, outputs, first, _ = batch
    for name, shape in [("2DBox_US_disks.npz", (320, 400)), ("3DBox_CT_sphere.npz", (8, 64, 64))]:
        with np.load(outputs / name) as data:
            assert data.files == ["segs"]
            assert data["segs"].dtype == np.uint16 and data["segs"].shape == shape
            assert data["segs"].max() >= 1


def test_bad_cases_are_named_and_do_not_stop_the_batch(batch) -> None:
    _, outputs, first, _ = batch
    assert first.returncode == 1
    assert "2DBox_US_broken.npz: is not a readable npz" in first.stderr
    assert "2DBox_US_nokeys.npz: missing key(s) ['imgs', 'boxes']" in first.stderr
    assert "app: 2 done, 2 failed" in first.stderr
    assert sorted(p.name for p in outputs.iterdir()) == ["2DBox_US_disks.npz", "3DBox_CT_sphere.npz"]


def test_rerun_overwrites_identically(batch) -> None:
    _, outputs, _, second = batch
    assert second.returncode == 1
    with np.load(outputs / "2DBox_US_disks.npz") as data:
        assert data.files == ["segs"]


def test_unusable_output_folder_exits_2(tmp_path, models_dir) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_predict(tmp_path, blocker / "out", tmp_path / "cache")
    assert result.returncode == 2 and "cannot create output folder" in result.stderr


def test_every_shipped_ir_agrees_with_the_manifest(models_dir) -> None:
    from app.sessions import contract_mismatches, create_core, read_manifest

    core = create_core(None)
    entries = read_manifest(models_dir)
    assert entries
    assert {key: contract_mismatches(core, e) for key, e in entries.items()} == {key: [] for key in entries}


def test_warmup_refuses_an_ir_the_manifest_misdescribes(tmp_path, models_dir) -> None:
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(models_dir / "lite_medsam", models / "lite_medsam")
    manifest = json.loads((models_dir / "manifest.json").read_text())
    manifest["models"] = {"lite_medsam": {**manifest["models"]["lite_medsam"], "input_size": 512}}
    manifest.pop("routes", None)
    (models / "manifest.json").write_text(json.dumps(manifest))
    cache = tmp_path / "c"
    argv = [sys.executable, "-m", "app", "--warmup", "--models", str(models), "--cache-dir", str(cache)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "input size 256, manifest says 512" in done.stderr
    assert not any(cache.rglob("*.blob"))  # nothing was compiled


def test_a_cache_folder_that_cannot_be_written_is_still_read(tmp_path, monkeypatch) -> None:
    """A --read-only container keeps the blobs baked into its image: the app must load them."""

    from app import sessions

    baked = tmp_path / "baked"
    (baked / sessions.settings_folder()).mkdir(parents=True)
    real_access = os.access
    read_only = lambda p, mode: False if mode & os.W_OK else real_access(p, mode)  # noqa: E731
    monkeypatch.setattr(sessions.os, "access", read_only)
    assert sessions.cache_dir_from(baked) == baked / sessions.settings_folder()
    assert sessions.cache_dir_from(Path("none")) is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert sessions.cache_dir_from(blocker / "cache") is None  # cannot be created: no cache


def test_the_app_process_exits_with_its_code_and_every_buffered_byte() -> None:
    """``python -m app`` ends without the interpreter's teardown (app/__main__.py): what sits in
    the standard streams' buffers and the logging handlers must still come out, code unchanged."""
    code = (
        "import logging, sys; from app.__main__ import exit_now; "
        "logging.basicConfig(stream=sys.stderr, format='%(message)s'); "
        "print('x' * 100000, end=''); logging.getLogger('app').error('last words'); exit_now(3)"
    )
    cmd = [sys.executable, "-c", code]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 3
    assert result.stdout == "x" * 100000 and result.stderr.strip() == "last words"
