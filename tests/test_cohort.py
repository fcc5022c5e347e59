"""The Dask runner (cohort/) on a loopback LocalCluster of 2 single-threaded workers: models
compiled once per worker, a bad case is a record while the others are written, a worker killed
mid-case is replaced and the case completes, a rerun skips everything, outputs equal
``python -m app``'s; and the deployment files (Kubernetes Indexed Job, SLURM array) are valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.shards import read_records
from common.synthetic import disks_2d, save_case, sphere_3d
from tests.conftest import ROOT

distributed = pytest.importorskip("distributed")  # requirements/cohort.txt (in dev.txt)
yaml = pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 2D cases, a small 3D volume and a corrupt file."""
    folder = tmp_path_factory.mktemp("cohort_in")
    for seed in range(2):
        imgs, boxes, gts = disks_2d(seed=seed)
        save_case(folder / f"2DBox_US_disks{seed}.npz", imgs, boxes, gts)
    imgs, boxes, gts = sphere_3d(shape=(6, 96, 96))
    save_case(folder / "3DBox_CT_sphere.npz", imgs, boxes, gts, spacing=(1.0, 1.0, 1.0))
    (folder / "2DBox_US_corrupt.npz").write_bytes(b"PK\x03\x04 this is not an archive")
    return folder


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-model cache for the module's workers and CLI runs (compile once, load after)."""
    return tmp_path_factory.mktemp("ov_cache")


@pytest.fixture(scope="module")
def client(models_dir: Path, ov_cache: Path) -> Iterator[object]:
    from cohort.worker import SessionsPlugin

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="3GB"
    )
    with cluster, distributed.Client(cluster) as c:
        c.register_plugin(SessionsPlugin(models_dir, ov_cache, threads=1))
        yield c


def worker_facts(client: object) -> dict[str, dict]:
    from cohort.worker import worker_facts as facts

    return client.run(facts)  # type: ignore[attr-defined]


def used_precisions(sessions: object) -> set[str]:
    """The precisions a SessionCache runs some route at on this host (fp32 always)."""
    return {"f32"} | {sessions.precision_for(*r) for r in sessions.precisions}  # type: ignore[attr-defined]


def compile_all(dask_worker: object) -> int:
    """For ``client.run``: make this worker's sessions compile every model at every precision
    it runs; graphs compiled."""
    from cohort.worker import PLUGIN_NAME

    sessions = dask_worker.plugins[PLUGIN_NAME].sessions  # type: ignore[attr-defined]
    for key in sessions.keys:
        for precision in used_precisions(sessions):
            sessions.get(key, precision).compile_all()
    return sessions.compiles


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.npz"))}


def compiled_graphs(models_dir: Path, precisions: set[str]) -> set[tuple[Path, str]]:
    """The distinct (OpenVINO graph, inference type) pairs of the manifest at ``precisions``
    (specialists share LiteMedSAM's encoder; precisions that agree on a graph share it)."""
    from app.precision import inference_type
    from app.sessions import read_manifest

    entries = read_manifest(models_dir).values()
    return {
        (xml, inference_type(p, graph).get_type_name())
        for e in entries
        for graph, xml in (("encoder", e.encoder_xml), ("decoder", e.decoder_xml))
        for p in precisions
    }


def test_cases_run_on_workers_that_compile_once_and_a_rerun_skips_everything(
    client: object, cases: Path, models_dir: Path, tmp_path: Path
) -> None:
    from cohort.runner import input_cases, run_cohort

    out, log = tmp_path / "out", tmp_path / "results.jsonl"
    out.mkdir()
    records = run_cohort(client, input_cases(cases), out, results=log)  # type: ignore[arg-type]
    status = {r.case: r.status for r in records}
    assert status.pop("2DBox_US_corrupt.npz") == "failed"
    assert set(status.values()) == {"done"} and len(status) == 3
    failed = next(r for r in read_records(log) if r.status == "failed")
    assert "not a readable npz" in (failed.error or "")
    assert sorted(p.name for p in out.glob("*.npz")) == sorted(status)
    from app.sessions import SessionCache, create_core

    graphs = len(compiled_graphs(models_dir, used_precisions(SessionCache(create_core(None), models_dir))))
    warmed = client.run(compile_all)  # type: ignore[attr-defined]
    assert set(warmed.values()) == {graphs}  # every graph once per worker and inference type
    run_cohort(client, input_cases(cases), tmp_path / "again", results=None)  # type: ignore[arg-type]
    facts = worker_facts(client)
    assert len(facts) == 2 and all(f["setups"] == 1 for f in facts.values())  # one SessionCache each
    assert {f["compiles"] for f in facts.values()} == {graphs}, facts  # nothing compiled per case
    before = snapshot(out)
    rerun = run_cohort(client, input_cases(cases), out, skip_done=True)  # type: ignore[arg-type]
    assert {r.case: r.status for r in rerun if r.status != "failed"} == dict.fromkeys(status, "skipped")
    assert snapshot(out) == before  # byte-identical, untouched


def test_a_worker_killed_mid_case_is_replaced_and_the_case_completes(
    client: object, models_dir: Path, tmp_path: Path
) -> None:
    from cohort.worker import segment_task

    imgs, boxes, gts = sphere_3d(shape=(20, 128, 128), seed=3)  # seconds on one thread
    case = save_case(tmp_path / "in" / "3DBox_CT_slow.npz", imgs, boxes, gts, spacing=(1.0, 1.0, 1.0))
    out = tmp_path / "out"
    out.mkdir()
    before = set(worker_facts(client))
    future = client.submit(segment_task, str(case), str(out), None, key="segment/slow", pure=False)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    busy: list[str] = []
    while not busy and time.monotonic() < deadline:
        busy = [w for w, keys in client.processing().items() if "segment/slow" in keys]  # type: ignore[attr-defined]
        time.sleep(0.2)
    assert busy, "the case never started"
    time.sleep(0.5)  # mid-case
    (pid,) = client.run(os.getpid, workers=busy).values()  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    record = future.result(timeout=180)
    assert record["status"] == "done", record
    assert (out / case.name).is_file()
    deadline = time.monotonic() + 60
    while len(worker_facts(client)) < 2 and time.monotonic() < deadline:  # the nanny restarts it
        time.sleep(0.5)
    after = worker_facts(client)
    assert busy[0] not in after and set(after) - before, "the killed worker was not replaced"
    assert all(f["setups"] == 1 for f in after.values())  # the plugin set the new worker up


def test_the_cli_lists_failures_and_writes_what_python_m_app_writes(
    cases: Path, ov_cache: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "SEG_CACHE_DIR": str(ov_cache)}
    cohort = subprocess.run(
        [sys.executable, "-m", "cohort", "-i", str(cases), "-o", str(tmp_path / "dask"), "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert cohort.returncode == 1, cohort.stderr
    assert "cohort: failed: 2DBox_US_corrupt.npz: " in cohort.stderr
    assert "3 done, 1 failed, 0 skipped" in cohort.stderr
    app = subprocess.run(
        [sys.executable, "-m", "app", "-i", str(cases), "-o", str(tmp_path / "app")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert app.returncode == 1
    written = sorted(p.name for p in (tmp_path / "app").glob("*.npz"))
    assert len(written) == 3 and written == sorted(p.name for p in (tmp_path / "dask").glob("*.npz"))
    for name in written:
        with np.load(tmp_path / "app" / name) as a, np.load(tmp_path / "dask" / name) as b:
            np.testing.assert_array_equal(a["segs"], b["segs"])
    lines = (tmp_path / "dask" / ".medseg-results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["case"] for line in lines) == sorted(p.name for p in cases.glob("*.npz"))


def test_the_cli_refuses_an_unusable_setup(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "cohort", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_the_kubernetes_indexed_job_runs_the_product_image_per_shard() -> None:
    job = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "indexed-job.yaml").read_text())
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["backoffLimitPerIndex"] >= 1
    rules = spec["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and 2 in r["onExitCodes"]["values"] for r in rules)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["SEG_NUM_SHARDS"]) == spec["completions"]  # JOB_COMPLETION_INDEX is set by Kubernetes
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/workspace/inputs", "/workspace/outputs"}
    assert "--skip-done" in " ".join(container["command"] + container.get("args", []))


def test_the_slurm_array_task_runs_its_shard_in_the_image(tmp_path: Path) -> None:
    script = ROOT / "deploy" / "slurm" / "array.sh"
    assert "#SBATCH --array=0-" in script.read_text()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apptainer").write_text('#!/bin/sh\necho "apptainer $*"\n')
    (fake / "apptainer").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8"}
    args = ["bash", str(script), str(tmp_path), str(tmp_path / "out")]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30, check=True)
    assert (
        "-m app -i /workspace/inputs -o /workspace/outputs --skip-done --num-shards 8 --shard-index 3"
        in run.stdout
    )
    assert f"--bind {tmp_path}:/workspace/inputs:ro" in run.stdout
    pinned = subprocess.run(
        args, capture_output=True, text=True, env={**env, "MEDSEG_SHARDS": "16"}, timeout=30, check=True
    )
    assert "--num-shards 16 --shard-index 3" in pinned.stdout
