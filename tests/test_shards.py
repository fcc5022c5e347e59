"""The shard contract (app/shards.py): every case in exactly one shard, shards from flags or the
scheduler's environment, --skip-done, and the per-case JSON-lines results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.shards import ALL, Record, Shard, append_record, is_done, read_records, shard_from, shard_of
from common.synthetic import disks_2d, save_case
from tests.conftest import ROOT

NAMES = [f"2DBox_US_case{i:03d}.npz" for i in range(200)]


def test_every_case_is_in_exactly_one_shard_and_stays_there() -> None:
    for count in (1, 2, 3, 7):
        shards = [{n for n in NAMES if Shard(k, count).holds(n)} for k in range(count)]
        assert set().union(*shards) == set(NAMES)
        assert sum(len(s) for s in shards) == len(NAMES)
        assert min(len(s) for s in shards) > len(NAMES) / count / 2  # roughly balanced
    before = {n: shard_of(n, 3) for n in NAMES}
    assert all(shard_of(n, 3) == k for n, k in before.items())  # adding cases moves nothing


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ALL),
        ({"JOB_COMPLETION_INDEX": "2", "SEG_NUM_SHARDS": "4"}, Shard(2, 4)),
        (
            {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "4"},
            Shard(1, 3),
        ),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, Shard(0, 2)),
        ({"JOB_COMPLETION_INDEX": "1"}, ALL),  # no count: the whole folder
    ],
)
def test_shard_from_the_schedulers_environment(env: dict[str, str], expected: Shard) -> None:
    assert shard_from(None, None, env) == expected


def test_flags_win_and_bad_shards_are_refused() -> None:
    assert shard_from(1, 2, {"JOB_COMPLETION_INDEX": "0", "SEG_NUM_SHARDS": "9"}) == Shard(1, 2)
    for index, count in ((3, 3), (-1, 2), (0, 0), (1, None)):
        with pytest.raises(ValueError):
            shard_from(index, count, {})
    with pytest.raises(ValueError, match="slurm"):
        shard_from(None, None, {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})


def test_records_round_trip_and_done_means_a_readable_segs(tmp_path: Path) -> None:
    log = tmp_path / "r.jsonl"
    append_record(log, Record("a.npz", "done", 1.5, model="lite_medsam"))
    append_record(log, Record("b.npz", "failed", 0.1, error="imgs is empty"))
    assert [r.status for r in read_records(log)] == ["done", "failed"]
    np.savez_compressed(tmp_path / "ok.npz", segs=np.zeros((2, 2), np.uint16))
    (tmp_path / "half.npz").write_bytes(b"PK\x03\x04 truncated")
    np.savez_compressed(tmp_path / "other.npz", x=np.zeros(2))
    assert is_done(tmp_path / "ok.npz")
    assert not is_done(tmp_path / "half.npz") and not is_done(tmp_path / "other.npz")
    assert not is_done(tmp_path / "missing.npz")


def run_app(inputs: Path, outputs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEG_CACHE_DIR": str(outputs.parent / "cache")}
    for var in ("JOB_COMPLETION_INDEX", "SEG_NUM_SHARDS", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "app", "-i", str(inputs), "-o", str(outputs), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    inputs = tmp_path_factory.mktemp("cohort") / "in"
    imgs, boxes, _ = disks_2d((64, 80))
    for i in range(6):
        save_case(inputs / f"2DBox_US_c{i}.npz", imgs, boxes)
    (inputs / "2DBox_US_broken.npz").write_bytes(b"not a zip")
    return inputs


def test_three_shards_write_every_case_exactly_once(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = [run_app(cohort, out, "--num-shards", "3", "--shard-index", str(k)) for k in range(3)]
    records = [r for k in range(3) for r in read_records(out / Shard(k, 3).results_name)]
    names = sorted(p.name for p in cohort.glob("*.npz"))
    assert sorted(r.case for r in records) == names  # each case in one shard's log, once
    assert sorted(p.name for p in out.glob("*.npz")) == [n for n in names if n != "2DBox_US_broken.npz"]
    broken = next(r for r in records if r.case == "2DBox_US_broken.npz")
    assert broken.status == "failed" and "not a readable npz" in broken.error
    assert sorted(r.returncode for r in runs) == [0, 0, 1]  # only the broken case's shard fails
    assert all(r.model == "us_2d" or r.model == "lite_medsam" or r.status == "failed" for r in records)


def test_skip_done_skips_finished_cases_and_leaves_them_untouched(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_app(cohort, out)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.npz")}
    second = run_app(cohort, out, "--skip-done")
    assert first.returncode == second.returncode == 1  # the broken case fails both times
    assert "6 skipped (done before)" in second.stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*.npz")} == stamps
    lines = (out / ".medseg-results.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines].count("skipped") == 6


def test_a_bad_shard_setting_exits_2(cohort: Path, tmp_path: Path) -> None:
    done = run_app(cohort, tmp_path / "out", "--num-shards", "2", "--shard-index", "2")
    assert done.returncode == 2 and "shard index 2 is not in 0..1" in done.stderr
