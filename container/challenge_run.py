"""The challenge's timing protocol against the product image, case by case.

For every case: empty ``inputs/``, copy the case in, then
``<engine> run -m 8G --name <team> --rm -v $PWD/inputs/:/workspace/inputs/
-v $PWD/outputs/:/workspace/outputs/ IMAGE /bin/bash -c "sh predict.sh"``,
timed from outside (wall seconds, as CVPR24_time_eval.py), the output moved aside to
``results/`` and checked (same name, key ``segs``, the image's spatial shape). Writes a CSV like
the challenge script's (case, runtime, exit code, check).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from app.routing import case_dims
from common.reports import write_csv

TEAM = "medseg"  # the container name, as the challenge's --name <team>


def container_cmd(
    engine: str, image: str, team: str, root: Path, extra: list[str], memory: str = "8G", command: str = ""
) -> list[str]:
    """The challenge's run line; ``command`` replaces ``sh predict.sh`` (e.g. to read peak memory)."""
    return [
        engine, "run", "-m", memory, "--name", team, "--rm", *extra,
        "-v", f"{root / 'inputs'}/:/workspace/inputs/", "-v", f"{root / 'outputs'}/:/workspace/outputs/",
        image, "/bin/bash", "-c", command or "sh predict.sh",
    ]  # fmt: skip


def stage_case(case: Path, root: Path) -> None:
    """Empty ``root/inputs`` and ``root/outputs`` (world-writable, as the harness's chmod -R 777)
    and copy ``case`` alone into the inputs."""
    for sub in ("inputs", "outputs"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
        (root / sub).chmod(0o777)
    shutil.copy(case, root / "inputs" / case.name)


def check_output(case: Path, out: Path) -> str:
    """'ok' or what is wrong with the container's output for ``case``."""
    if not out.is_file():
        return "missing output (wrong segmentation name?)"
    with np.load(case) as c, np.load(out) as o:
        if o.files != ["segs"]:
            return f"keys {o.files}, expected ['segs']"
        spatial = c["imgs"].shape[: case_dims(case.name) or 2]
        if o["segs"].shape != spatial:
            return f"segs shape {o['segs'].shape}, expected {spatial}"
    return "ok"


def run_protocol(engine: str, image: str, cases: list[Path], root: Path, extra: list[str]) -> list[dict]:
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        stage_case(case, root)
        t0 = time.time()
        proc = subprocess.run(container_cmd(engine, image, TEAM, root, extra), capture_output=True, text=True)
        runtime = time.time() - t0
        status = check_output(case, root / "outputs" / case.name)
        if status == "ok":
            shutil.move(root / "outputs" / case.name, results / case.name)
        rows.append(
            {
                "case": case.name,
                "runtime": round(runtime, 3),
                "exit": proc.returncode,
                "check": status,
                "stderr": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "",
            }
        )
        print(f"container: {case.name} {runtime:.2f} s exit {proc.returncode} {status}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python container/challenge_run.py", description=__doc__)
    parser.add_argument("cases", nargs="+", type=Path, help="case files or folders of them")
    parser.add_argument("--image", default="localhost/medseg:latest")
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--root", type=Path, default=Path("build/container"))
    parser.add_argument("--csv", type=Path, default=Path("build/container/medseg_running_time.csv"))
    parser.add_argument("--extra", nargs="*", default=[], help="extra engine run flags, e.g. --network none")
    args = parser.parse_args(argv)
    cases = sorted(p for c in args.cases for p in (c.glob("*.npz") if c.is_dir() else [c]))
    rows = run_protocol(args.engine, args.image, cases, args.root.resolve(), args.extra)
    write_csv(args.csv, rows, None if rows else ["case"])
    failed = [r for r in rows if r["check"] != "ok" or r["exit"] != 0]
    print(f"container: {len(rows) - len(failed)} ok, {len(failed)} failed -> {args.csv}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
