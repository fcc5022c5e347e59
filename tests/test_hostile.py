"""Hostile inputs against the real CLI: a decompression bomb between good cases, a blocked output
path, output errors a user can act on, and fuzzing of the zip/npy layer."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import CaseError
from app.npz_io import load_case, write_output
from common.synthetic import disks_2d, npy_bytes, save_case, write_bomb
from tests.conftest import ROOT

# Runs the app as its child and prints that child's peak RSS in KiB (its own high-water mark
# starts from this small wrapper, not from pytest).
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run_app(inputs: Path, outputs: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """(completed app process, its peak RSS in GB)."""
    app = [sys.executable, "-m", "app", "-i", str(inputs), "-o", str(outputs), *extra]
    cmd = [sys.executable, "-c", PEAK, *app]
    env = {**os.environ, "SEG_CACHE_DIR": str(outputs.parent / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return done, peak_kib / 1024**2


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good, bomb, good: the bomb claims 1.08 GB (over the default 1 GiB budget), 5 MB on disk."""
    folder = tmp_path_factory.mktemp("bomb") / "in"
    imgs, boxes, _ = disks_2d()
    save_case(folder / "2DBox_US_a_good.npz", imgs, boxes)
    write_bomb(folder / "2DBox_US_b_bomb.npz", (20000, 18000, 3))
    save_case(folder / "2DBox_US_c_good.npz", imgs, boxes)
    return folder


def test_a_bomb_is_refused_by_name_and_the_batch_goes_on(bomb_folder: Path, models_dir: Path) -> None:
    out = bomb_folder.parent / "out"
    done, peak_gb = run_app(bomb_folder, out)
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in out.glob("*.npz")) == ["2DBox_US_a_good.npz", "2DBox_US_c_good.npz"]
    line = next(x for x in done.stderr.splitlines() if "2DBox_US_b_bomb.npz" in x)
    assert "imgs claims shape (20000, 18000, 3) uint8 = 1.1 GB decompressed" in line
    assert "image budget of 1.1 GB" in line and "--max-image-bytes" in line
    assert "app: 2 done, 1 failed" in done.stderr
    assert peak_gb < 1.0, f"peak RSS {peak_gb:.2f} GB"


def test_the_budget_is_a_flag_then_an_env_var_then_1_gib(
    bomb_folder: Path, models_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from app.npz_safe import DEFAULT_MAX_IMAGE_BYTES, MAX_IMAGE_BYTES_ENV, max_image_bytes

    done, _ = run_app(bomb_folder, tmp_path / "out", "--max-image-bytes", "1000")
    assert done.returncode == 1
    assert done.stderr.count("over the image budget of 1.0 KB") == 3  # now the good ones too
    monkeypatch.delenv(MAX_IMAGE_BYTES_ENV, raising=False)
    assert max_image_bytes() == DEFAULT_MAX_IMAGE_BYTES == 2**30
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "5000")
    assert max_image_bytes() == 5000 and max_image_bytes(7) == 7


def test_a_blocked_output_path_names_the_case_and_the_path(tmp_path: Path, models_dir: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    imgs, boxes, _ = disks_2d()
    save_case(inputs / "2DBox_US_a.npz", imgs, boxes)
    save_case(inputs / "2DBox_US_b.npz", imgs, boxes)
    (out / "2DBox_US_a.npz").mkdir(parents=True)
    done, _ = run_app(inputs, out)
    assert done.returncode == 1
    blocked = out / "2DBox_US_a.npz"
    assert f"2DBox_US_a.npz: output path {blocked} is a directory: remove or rename it" in done.stderr
    assert ".tmp" not in done.stderr
    assert (out / "2DBox_US_b.npz").is_file()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only"),
    ],
)
def test_output_errors_say_what_is_wrong(tmp_path: Path, monkeypatch, code: int, words: str) -> None:
    def failing(path: Path, write: object) -> None:
        raise OSError(code, os.strerror(code), str(path.parent / ".x.npz.abc.tmp"))

    monkeypatch.setattr("app.npz_io.write_atomic", failing)  # every output kind writes through it
    with pytest.raises(CaseError) as err:
        write_output(tmp_path / "case.npz", np.zeros((2, 2), np.uint16), "case.npz")
    text = str(err.value)
    assert text.startswith(f"case.npz: output path {tmp_path / 'case.npz'}") and words in text
    assert ".tmp" not in text


def valid_npz_bytes(tmp_path: Path) -> bytes:
    path = save_case(tmp_path / "seed.npz", np.zeros((12, 10, 3), np.uint8), np.array([[1, 1, 5, 5]]))
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_archives_load_or_fail_by_name(data, tmp_path_factory) -> None:
    """Bytes of a valid npz flipped, cut or spliced: load_case returns a case or raises CaseError."""
    folder = tmp_path_factory.mktemp("zipfuzz")
    raw = bytearray(valid_npz_bytes(folder))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = folder / "2DBox_US_fuzz.npz"
    path.write_bytes(bytes(raw))
    try:
        case = load_case(path)
    except CaseError as err:
        assert str(err).startswith("2DBox_US_fuzz.npz: ")
        return
    assert case.image.dtype == np.uint8 and case.boxes.shape[1] == 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 2**40), min_size=0, max_size=4),
    dtype=st.sampled_from(["|u1", "<f8", "<i2", "|O", "<c8"]),
    extra=st.integers(-64, 64),
)
def test_fuzzed_npy_headers_never_inflate_a_lie(shape, dtype, extra, tmp_path_factory) -> None:
    """Any claimed shape with any amount of data: refused by name unless header and data agree."""
    from common.synthetic import _npy_header

    folder = tmp_path_factory.mktemp("hdrfuzz")
    claimed = int(np.prod(shape)) * np.dtype(dtype).itemsize
    body = bytes(max(0, min(claimed, 4096) + extra))
    path = folder / "2DBox_US_hdr.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("imgs.npy", _npy_header(tuple(shape), dtype) + body)
        zf.writestr("boxes.npy", npy_bytes(np.zeros((0, 4), np.int64)))
    try:
        load_case(path)
    except CaseError as err:
        assert str(err).startswith("2DBox_US_hdr.npz: ")
        return
    assert claimed == len(body) and claimed <= 4096
