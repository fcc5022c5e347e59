"""``make bench DATA=<folder>``: challenge-protocol speed and memory, app vs baseline.

Every case runs as one fresh process per system (interpreter start, imports, model load or
compile, inference, save), app and baseline alternating case by case (and which goes first
alternates too) so that machine drift hits both. Per process: wall seconds and peak RSS (the
kernel's high-water mark of that process, from ``os.wait4``). The app runs with a warm
compiled-model cache, as the container ships one; ``make startup`` measures cold vs warm.

Large 3D timing cases are built by resampling the smoke CT of ``../shared/data/smoke`` to the
challenge's heaviest shape (287 x 512 x 512, its 6 largest objects): timing only, never accuracy.
Writes ``reports/bench/REPORT.md`` and ``reports/bench/ratios.png``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np

from app.routing import DEFAULT_MODEL_KEY, case_dims, modality
from common.machine import cpu_model_name, describe
from common.paths import MODELS, PUBLIC, SMOKE
from common.process import cli_command, timed_process
from common.reports import write_report
from evaluation.physical import measured_gflops_per_s
from evaluation.timing import alternating_medians

SYSTEMS = ("app", "baseline")


@dataclass(frozen=True)
class Run:
    case: str
    group: str
    system: str
    seconds: float
    rss_mb: float
    ok: bool


def run_case(
    case: Path, system: str, work: Path, env: dict[str, str], extra: tuple[str, ...] = ()
) -> tuple[float, float, bool]:
    """One case alone in its input folder, as the challenge's harness does (``extra``: more
    arguments for the system's command line)."""
    inputs, outputs = work / f"{system}_in", work / f"{system}_out"
    for folder in (inputs, outputs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    shutil.copy(case, inputs / case.name)
    run = timed_process(cli_command(system, inputs, outputs, *extra), env)
    return run.seconds, run.peak_rss_mb, run.ok


def sample_cases(data: Path, per_group: int, only: list[str] | None = None) -> list[Path]:
    """The first ``per_group`` cases (sorted names) of every modality x dims group (of the groups
    named in ``only``, e.g. ``["CT 3D"]``, when given)."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(data.glob("*.npz")):
        groups.setdefault(group_of(path.name), []).append(path)
    return [p for g, paths in groups.items() if not only or g in only for p in paths[:per_group]]


def groups_flag(groups: list[str] | None) -> str:
    return " --groups " + " ".join(f'"{g}"' for g in groups) if groups else ""


def group_of(name: str) -> str:
    return f"{modality(name) or 'unknown'} {case_dims(name) or 2}D"


def large_cases(smoke: Path, folder: Path, shape: tuple[int, int, int] = (287, 512, 512)) -> list[Path]:
    """Resample the smoke CT (imgs + gts) to ``shape``; boxes of its 6 largest objects."""
    import cv2

    from common.synthetic import save_case, tight_boxes

    src = next(iter(sorted(smoke.glob("3DBox_*.npz"))), None)
    if src is None:
        return []
    with np.load(src) as c:
        imgs, gts = c["imgs"], c["gts"]
    zs = np.linspace(0, imgs.shape[0] - 1, shape[0]).round().astype(int)  # nearest in z
    vol = np.stack([cv2.resize(imgs[z], shape[:0:-1], interpolation=cv2.INTER_LINEAR) for z in zs])
    lab = np.stack([cv2.resize(gts[z], shape[:0:-1], interpolation=cv2.INTER_NEAREST) for z in zs])
    sizes = np.bincount(lab.ravel())
    keep = np.argsort(sizes[1:])[::-1][:6] + 1
    remap = np.zeros(sizes.size, np.uint16)
    remap[keep] = np.arange(1, keep.size + 1)
    lab = remap[lab]
    out = folder / "3DBox_CT_resampledSMOKE_287x512x512_6boxes.npz"
    save_case(out, vol, tight_boxes(lab))
    return [out]


def paired(runs: list[Run], keep: Callable[[Run], bool]) -> list[dict[str, Run]]:
    """Per case of the runs ``keep`` picks, its app and baseline runs, where both ran fine."""
    by_case: dict[str, dict[str, Run]] = {}
    for r in runs:
        if keep(r) and r.ok:
            by_case.setdefault(r.case, {})[r.system] = r
    return [v for v in by_case.values() if len(v) == 2]


def summary_row(label: str, pairs: list[dict[str, Run]]) -> str:
    """One table row: the cases' median seconds, speed-up median [min, max], RSS and its ratio."""
    ratio = [p["baseline"].seconds / p["app"].seconds for p in pairs]
    mem = [p["baseline"].rss_mb / p["app"].rss_mb for p in pairs]
    med = {s: statistics.median(p[s].seconds for p in pairs) for s in SYSTEMS}
    rss = {s: statistics.median(p[s].rss_mb for p in pairs) for s in SYSTEMS}
    return (
        f"| {label} | {len(pairs)} | {med['app']:.2f} | {med['baseline']:.2f} | "
        f"{statistics.median(ratio):.2f}x [{min(ratio):.2f}, {max(ratio):.2f}] | {rss['app']:.0f} | "
        f"{rss['baseline']:.0f} | {statistics.median(mem):.2f}x |"
    )


def summarise(runs: list[Run]) -> list[str]:
    """A row per group, then per dimensionality over every group's cases pooled (issue 13's
    "median per-case speed-up on 2D / 3D")."""
    lines = [
        "| group | cases | app s (median) | baseline s (median) | speed-up median [min, max] | "
        "app RSS MB | baseline RSS MB | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in sorted({r.group for r in runs}):
        if pairs := paired(runs, lambda r, g=group: r.group == g):
            lines.append(summary_row(group, pairs))
    for dims in ("2D", "3D"):
        if pairs := paired(runs, lambda r, d=dims: r.group.endswith(f" {d}")):
            lines.append(summary_row(f"**all {dims} cases**", pairs))
    return lines


def plot_ratios(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r.group for r in runs})
    ratios = [
        [p["baseline"].seconds / p["app"].seconds for p in paired(runs, lambda r, g=group: r.group == g)]
        for group in groups
    ]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.boxplot(ratios, tick_labels=groups)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_ylabel("baseline s / app s (per case)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def harness_rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def startup_costs(
    env: dict[str, str], work: Path, app_args: tuple[str, ...] = (), repeats: int = 3
) -> dict[str, float]:
    """Median seconds from process start to ready-to-infer (models loaded), no case."""
    empty = work / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    warmup = [sys.executable, "-m", "app", "--warmup", *app_args]
    app = [timed_process(warmup, env).seconds for _ in range(repeats)]
    base = [timed_process(cli_command("baseline", empty, work / "x"), env).seconds for _ in range(repeats)]
    return {"app": statistics.median(app), "baseline": statistics.median(base)}


def own_encoders(manifest: dict) -> dict[str, float]:
    """Model key -> encoder GFLOP per slice, for every model with an encoder of its own (the base
    and any student; decoder specialists share the base's)."""
    return {
        key: facts["encoder_gflops"]
        for key, facts in sorted(manifest["models"].items())
        if "encoder.xml" in facts.get("files", {})
    }


def encoder_label(key: str) -> str:
    """The one name of an app encoder in the encoder section (and its timing calls)."""
    return f"app {key} (OpenVINO)"


def encoder_seconds(models: Path, keys: list[str]) -> dict[str, float]:
    """Median seconds per 256x256 slice through each encoder (the app's models ``keys``, then the
    baseline's), called in turn in this process."""
    import torch

    from app.sessions import SessionCache, create_core, default_threads
    from baseline.litemedsam import load_baseline

    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    sessions = SessionCache(create_core(None), models, default_threads())
    model = load_baseline()
    with torch.no_grad():
        calls = {encoder_label(key): partial(sessions.get(key).encode, x) for key in keys}
        calls["baseline (torch)"] = partial(model.image_encoder, torch.from_numpy(x))
        return alternating_medians(calls, repeats=5, warmup=1)


# The runtime's own code: a change here makes earlier runs another product's.
RUNTIME_SOURCES = ("app/*.py", "predict.sh")


def source_digest(root: Path, patterns: tuple[str, ...] = RUNTIME_SOURCES) -> str:
    """sha256 over the names and contents of the files ``patterns`` match under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for pattern in patterns for p in root.glob(pattern)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_identity(manifest: Path, root: Path = Path()) -> dict[str, str]:
    """What recorded runs are valid for: the exported models (manifest checksum), the runtime's
    code (:data:`RUNTIME_SOURCES` under ``root``), the CPU and the OpenVINO build."""
    import openvino as ov  # only once a benchmark starts

    models = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return {"models": models, "app": source_digest(root), "cpu": cpu_model_name(), "openvino": ov.__version__}


def start_runs(runs_csv: Path, identity: dict[str, str]) -> None:
    """Keep ``runs_csv`` (resume) only when it was recorded for ``identity``
    (``<runs>.identity.json``); otherwise start it afresh, so a rerun never reports another
    product's or another machine's runs as its own."""
    sidecar = runs_csv.with_suffix(".identity.json")
    recorded = json.loads(sidecar.read_text()) if sidecar.is_file() else None
    if runs_csv.is_file() and recorded != identity:
        print(f"bench: {runs_csv} was recorded for {recorded or 'an unrecorded product'}, not "
              f"{identity}: starting a fresh benchmark", file=sys.stderr)  # fmt: skip
        runs_csv.unlink()
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n")


def read_runs(path: Path) -> list[Run]:
    """Runs recorded by earlier (interrupted) invocations; empty when there is no file."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [
            Run(
                r["case"], r["group"], r["system"], float(r["seconds"]), float(r["rss_mb"]), r["ok"] == "True"
            )
            for r in csv.DictReader(fh)
        ]


def append_run(path: Path, run: Run) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Run)])
        if new:
            writer.writeheader()
        writer.writerow(asdict(run))


def bench(
    cases: list[Path],
    env: dict[str, str],
    work: Path,
    runs_csv: Path,
    systems=SYSTEMS,
    label: str = "",
    app_args: tuple[str, ...] = (),
) -> list[Run]:
    """Time every case with every system, alternating; a case whose runs are all recorded in
    ``runs_csv`` is not run again (both systems of a case are always timed back to back).
    ``app_args``: more arguments for the app's command line (its models folder)."""
    recorded = read_runs(runs_csv)
    runs = []
    for i, case in enumerate(cases):
        earlier = [r for r in recorded if r.case == case.name and r.system in systems]
        if {r.system for r in earlier} == set(systems):
            runs.extend(earlier)
            continue
        order = systems if i % 2 == 0 else systems[::-1]
        for system in order:
            secs, rss, ok = run_case(case, system, work, env, app_args if system == "app" else ())
            run = Run(case.name, label or group_of(case.name), system, secs, rss, ok)
            append_run(runs_csv, run)
            runs.append(run)
            print(
                f"bench: {case.name} {system} {secs:.2f} s {rss:.0f} MB {'ok' if ok else 'FAILED'}",
                flush=True,
            )
    return runs


def header_section(
    args: argparse.Namespace, manifest: dict, floor_mb: float, load: tuple[float, float], resumed: int = 0
) -> list[str]:
    """Title, machine, command and the protocol the tables follow; ``resumed``: how many of the
    runs were read back from the runs file (timed by an earlier invocation), not timed now."""
    return [
        "# Benchmark: app vs LiteMedSAM baseline, challenge protocol",
        "",
        f"Date {time.strftime('%Y-%m-%d %H:%M')}. Machine: {describe()}. OpenVINO "
        f"{manifest['versions']['openvino']}, torch {manifest['versions']['torch']}.",
        f"Command: `make bench` (`python -m evaluation.bench --data {args.data} --per-group {args.per_group}"
        f"{' --large-baseline' if args.large_baseline else ''}{groups_flag(args.groups)}"
        f"{' --no-large' if args.no_large else ''}`). Data: the first {args.per_group} cases "
        f"(sorted names) of {'the named' if args.groups else 'every'} modality x dims group of "
        f"`{args.data}`.",
        "",
        "Each case runs alone as a fresh process per system (start, imports, model load/compile,",
        "inference, save), app and baseline alternating; wall seconds and the process's peak RSS.",
        "Speed-up = baseline s / app s per case, summarised by the median (min, max) over the group's",
        "cases. The app has a warm compiled-model cache (as the container ships). Every run is appended",
        f"to `{args.runs}` as it completes; an interrupted benchmark resumes there, and a case's two runs",
        "are always timed back to back. Peak RSS includes at",
        f"most {floor_mb:.0f} MB inherited from the harness at fork (its RSS while timing).",
        f"Machine load (1-min load average) at start {load[0]:.1f}, at end {load[1]:.1f}: other",
        "work on this shared machine slows both systems alike; the ratios, not the seconds, are the result.",
        *(
            [
                f"Resumed: {resumed} runs were read back from `{args.runs}`, timed by an earlier "
                "invocation on the same models, runtime code and machine (the date and load above are "
                "this invocation's)."
            ]
            if resumed
            else []
        ),
        "",
    ]


def startup_section(startup: dict[str, float]) -> list[str]:
    return [
        "## Start-up (process start to models ready, no case; median of 3)",
        "",
        f"| app (warm cache) | {startup['app']:.2f} s |",
        "|---|---|",
        f"| baseline (torch import + checkpoint) | {startup['baseline']:.2f} s |",
        "",
    ]


def large_section(large_runs: list[Run], with_baseline: bool, smoke: Path | None = None) -> list[str]:
    """The large 3D case's runs; ``smoke`` names where the smoke CT was looked for when none ran."""
    if not large_runs and smoke is not None:
        return ["## Large 3D timing case", "", f"Not run: no `3DBox_*.npz` smoke CT under `{smoke}`.", ""]
    return [
        "## Large 3D timing case (resampled smoke CT, timing only)",
        "",
        "| case | system | wall s | peak RSS MB |",
        "|---|---|---|---|",
        *(f"| {r.case} | {r.system} | {r.seconds:.1f} | {r.rss_mb:.0f} |" for r in large_runs),
        ""
        if with_baseline
        else "\nThe baseline was not run on it (`--large-baseline`: it re-encodes every slice per box).",
        "",
    ]


def encoder_section(gflops: dict[str, float], measured_peak: float, seconds: dict[str, float]) -> list[str]:
    """Each encoder's cost against this CPU's measured fp32 peak (the floor no runtime beats);
    ``gflops`` per row of ``seconds`` (the baseline's is the base model's)."""
    rows = []
    for label, secs in seconds.items():
        cost = gflops[label]
        ideal = cost / measured_peak
        rows.append(f"| {label} | {cost:.2f} | {ideal * 1000:.0f} | {secs:.3f} | {secs / ideal:.1f}x |")
    return [
        "## Physical limit of the encoders",
        "",
        "Encoder cost in GFLOP per 256x256 slice (torch FLOP counter, at export). This CPU sustains "
        f"{measured_peak:.0f} GFLOP/s fp32 (best of 5 2048^3 numpy matmuls); cost / that rate is the "
        "floor no runtime beats.",
        "",
        "| encoder | GFLOP | floor ms | s per slice (median of 5) | vs floor |",
        "|---|---|---|---|---|",
        *rows,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.bench", description=__doc__)
    parser.add_argument("--data", type=Path, default=PUBLIC)
    parser.add_argument("--smoke", type=Path, default=SMOKE)
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--per-group", type=int, default=3, help="cases per modality x dims group")
    parser.add_argument(
        "--groups", nargs="+", default=None, metavar="GROUP", help='only these groups, e.g. "CT 3D" "PET 3D"'
    )
    parser.add_argument("--no-large", action="store_true", help="skip the large 3D timing case")
    parser.add_argument(
        "--large-baseline", action="store_true", help="also time the baseline on the large 3D cases (slow)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench/REPORT.md"))
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="every timed run, appended as it completes; a rerun skips the cases recorded there "
        "(delete it for a fresh benchmark); default: runs.csv next to --out, so that two reports "
        "never share (and skip) each other's runs",
    )
    args = parser.parse_args(argv)
    args.runs = args.runs or args.out.parent / "runs.csv"
    from app.sessions import MANIFEST_NAME  # openvino: imported only once the run starts

    manifest = json.loads((args.models / MANIFEST_NAME).read_text())
    encoders = own_encoders(manifest)  # key -> GFLOP
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "SEG_CACHE_DIR": str(work / "ov_cache")}
        app_args = ("--models", str(args.models))  # the app runs the models it is timed with
        timed_process(
            [sys.executable, "-m", "app", "--warmup", *app_args], env
        )  # the container ships a warm cache
        # Forked children inherit this process's RSS as their starting high-water mark (ru_maxrss
        # survives exec), so every process is timed while this harness is still small; the
        # in-process encoder measurements (torch, OpenVINO) come last.
        floor_mb = harness_rss_mb()
        startup = startup_costs(env, work, app_args)
        cases = sample_cases(args.data, args.per_group, args.groups)
        if not cases:
            parser.error(f"no case of the chosen groups under {args.data}")
        start_runs(args.runs, run_identity(args.models / MANIFEST_NAME))
        resumed = len(read_runs(args.runs))
        runs = bench(cases, env, work, args.runs, app_args=app_args)
        large = [] if args.no_large else large_cases(args.smoke, work / "large")
        if not large and not args.no_large:
            print(f"bench: no smoke CT under {args.smoke}: large 3D case skipped", file=sys.stderr)
        systems = SYSTEMS if args.large_baseline else ("app",)
        large_runs = bench(large, env, work, args.runs, systems, label="large 3D", app_args=app_args)
        enc = encoder_seconds(args.models, list(encoders))
        peak = measured_gflops_per_s()
    load_end = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_ratios(runs, args.out.parent / "ratios.png")
    lines = [
        *header_section(args, manifest, floor_mb, (load_start[0], load_end[0]), resumed),
        *summarise(runs),
        "",
        "![per-case speed-up by group](ratios.png)",
        "",
        *startup_section(startup),
        *(
            ["## Large 3D timing case", "", "Not run (`--no-large`).", ""]
            if args.no_large
            else large_section(large_runs, args.large_baseline, args.smoke)
        ),
        *encoder_section(
            {
                **{encoder_label(k): g for k, g in encoders.items()},
                "baseline (torch)": encoders[DEFAULT_MODEL_KEY],
            },
            measured_peak=peak,
            seconds=enc,
        ),
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
