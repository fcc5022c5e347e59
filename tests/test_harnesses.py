"""Smoke runs of the evaluation and benchmark harnesses on two tiny generated cases."""

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from common.synthetic import disks_2d, save_case, sphere_3d
from evaluation import bench, evaluate, runner, split


def tiny_corpus(folder: Path) -> Path:
    save_case(folder / "2DBox_US_tiny.npz", *disks_2d(hw=(96, 120)))
    save_case(folder / "3DBox_CT_tiny.npz", *sphere_3d(shape=(5, 48, 48)), spacing=(3.0, 1.0, 1.0))
    return folder


def test_eval_scores_app_and_baseline(tmp_path, models_dir) -> None:
    data = tiny_corpus(tmp_path / "data")
    out = tmp_path / "report"
    lite = runner.base_only_models(models_dir, tmp_path / "lite")  # same weights as the oracle
    args = ["--data", str(data), "--out", str(out), "--work", str(tmp_path / "w"), "--models", str(lite)]
    assert evaluate.main(args) == 0
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert {r["case"] for r in rows} == {"2DBox_US_tiny.npz", "3DBox_CT_tiny.npz"}
    assert all(float(r["app_dsc"]) > 0.5 and r["app_dsc"] == r["baseline_dsc"] for r in rows)
    assert (out / "modalities.png").stat().st_size > 0 and "| all | 2 |" in (out / "README.md").read_text()


def test_bench_times_both_systems_per_process(tmp_path, models_dir) -> None:
    data = tiny_corpus(tmp_path / "data")
    env = {**os.environ, "SEG_CACHE_DIR": str(tmp_path / "cache")}
    runs_csv = tmp_path / "runs.csv"
    cases = bench.sample_cases(data, 1, ["US 2D"])  # one case: the harness is the same for 3D
    runs = bench.bench(cases, env, tmp_path / "work", runs_csv)
    assert len(runs) == 2 and all(r.ok and r.seconds > 0 and r.rss_mb > 10 for r in runs)
    table = bench.summarise(runs)
    assert any(line.startswith("| US 2D | 1 |") for line in table)
    assert any(line.startswith("| **all 2D cases** | 1 |") for line in table)
    assert not any("all 3D" in line for line in table)  # no 3D case ran
    # Resumed: every recorded case is reused, nothing runs again.
    assert bench.bench(cases, env, tmp_path / "work", runs_csv) == runs
    assert bench.read_runs(runs_csv) == runs


def test_bench_samples_only_the_named_groups(tmp_path) -> None:
    data = tiny_corpus(tmp_path / "data")
    assert [p.name for p in bench.sample_cases(data, 3, ["CT 3D"])] == ["3DBox_CT_tiny.npz"]
    assert len(bench.sample_cases(data, 3)) == 2


def test_split_keeps_patients_and_blocks_together() -> None:
    names = [f"3DBox_{m}_IBSISTS_STS_{i:03d}.npz" for m in ("CT", "PET") for i in range(40)]
    names += [f"2DBox_Microscopy_ISBI2012EM_slice{i:02d}.npz" for i in range(30)]
    val = split.val_groups(names)
    by_group: dict[str, set[bool]] = {}
    for n in names:
        by_group.setdefault(split.group_key(n), set()).add(split.group_key(n) in val)
    assert all(len(v) == 1 for v in by_group.values())
    assert split.group_key(names[0]) == split.group_key(names[40])  # CT and PET of STS_000
    assert {split.group_key(n) for n in names[80:88]} == {"isbi_block:0"}
    assert any(split.group_key(n) in val for n in names[80:])  # microscopy is validated too


def test_committed_split_matches_the_rule() -> None:
    path = Path(__file__).resolve().parent.parent / "splits" / "public.csv"
    rows = list(csv.DictReader(path.open()))
    assert rows == split.split_rows({r["case"]: r["corpus"] for r in rows})
    assert np.mean([r["split"] == "val" for r in rows if r["held_out"] == "no"]) > 0.2


def test_held_out_sources_are_wholly_validation() -> None:
    names = {
        "2DBox_US_HC18_001.npz": "public",
        "2DBox_US_HC18_002.npz": "public",
        "2DBox_US_BUSI_benign1.npz": "public2",
        "2DBox_Fundus_CHASEDB1_Image01L.npz": "public2",
    }
    rows = {r["case"]: r for r in split.split_rows(names)}
    assert rows["2DBox_US_BUSI_benign1.npz"]["split"] == "val"
    assert rows["2DBox_US_BUSI_benign1.npz"]["held_out"] == "yes"
    assert rows["2DBox_US_BUSI_benign1.npz"]["source"] == "BUSI"
    assert rows["2DBox_Fundus_CHASEDB1_Image01L.npz"]["held_out"] == "no"  # a training source
    assert {r["held_out"] for n, r in rows.items() if "HC18" in n} == {"no"}


def test_memcheck_reads_the_app_process_peak(tmp_path, models_dir) -> None:
    from evaluation.memcheck import run_case

    imgs, boxes, _ = disks_2d()
    save_case(tmp_path / "in" / "2DBox_US_mem.npz", imgs, boxes)
    ballast = np.ones(1536 * 2**20, np.uint8)  # 1.5 GiB resident in the harness: not the app's
    wall, peak_gb, rc = run_case(tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out" / "2DBox_US_mem.npz").is_file() and wall > 0 and rc == 0
    assert 0.05 < peak_gb < 1.0 < ballast.nbytes / 2**30


def test_app_outputs_are_kept_apart_per_model_set(tmp_path, models_dir) -> None:
    lite = runner.base_only_models(models_dir, tmp_path / "lite")
    manifest = (lite / "manifest.json").read_text()
    assert '"routes": []' in manifest and (lite / "lite_medsam" / "encoder.xml").is_file()
    assert runner.base_only_models(models_dir, tmp_path / "lite") == lite  # idempotent
    assert runner.output_folder("baseline", tmp_path) == tmp_path / "baseline"
    first = runner.output_folder("app", tmp_path, lite)
    (lite / "manifest.json").write_text(manifest.replace('"routes": []', '"routes": [ ]'))
    assert runner.output_folder("app", tmp_path, lite) != first


def test_bench_report_sections_render_their_figures() -> None:
    enc = bench.encoder_section(
        {"teacher": 75.0, "student": 20.0}, measured_peak=250.0, seconds={"teacher": 0.6, "student": 0.16}
    )
    assert enc[-2:] == ["| teacher | 75.00 | 300 | 0.600 | 2.0x |", "| student | 20.00 | 80 | 0.160 | 2.0x |"]
    manifest = {"models": {"b": {"encoder_gflops": 75.0, "files": {"encoder.xml": "x"}},
                           "spec": {"encoder_gflops": 75.0, "files": {"decoder.xml": "y"}},
                           "a": {"encoder_gflops": 20.0, "files": {"encoder.xml": "z"}}}}  # fmt: skip
    assert bench.own_encoders(manifest) == {"a": 20.0, "b": 75.0}
    start = bench.startup_section({"app": 0.41, "baseline": 2.5})
    assert (
        "| app (warm cache) | 0.41 s |" in start
        and "| baseline (torch import + checkpoint) | 2.50 s |" in start
    )
    assert any("--large-baseline" in line for line in bench.large_section([], with_baseline=False))
    args = argparse.Namespace(data=Path("d"), per_group=3, large_baseline=False, groups=None, no_large=False,
                              runs=Path("runs.csv"))  # fmt: skip
    manifest_versions = {"versions": {"openvino": "x", "torch": "y"}}
    assert not any(
        line.startswith("Resumed") for line in bench.header_section(args, manifest_versions, 70, (1, 2))
    )
    resumed = bench.header_section(args, manifest_versions, 70, (1, 2), resumed=66)
    assert any(line.startswith("Resumed: 66 runs were read back from `runs.csv`") for line in resumed)
    missing = bench.large_section([], with_baseline=False, smoke=Path("nowhere"))
    assert "Not run: no `3DBox_*.npz` smoke CT under `nowhere`." in missing


def test_bench_resumes_only_runs_recorded_for_the_same_models_and_machine(tmp_path) -> None:
    runs = tmp_path / "runs.csv"
    one = {"models": "aaa", "cpu": "x", "openvino": "1"}
    bench.start_runs(runs, one)
    runs.write_text("case,group,system,seconds,rss_mb,ok\n")
    bench.start_runs(runs, one)  # the same product and machine: resume
    assert runs.is_file()
    bench.start_runs(runs, {**one, "models": "bbb"})  # re-exported models: start afresh
    assert not runs.is_file()
    runs.write_text("case,group,system,seconds,rss_mb,ok\n")
    (tmp_path / "runs.identity.json").unlink()
    bench.start_runs(runs, one)  # runs of an unrecorded product are never resumed
    assert not runs.is_file()


def test_batching_times_the_encoder_per_slice_and_the_decoder_per_box(tmp_path, models_dir) -> None:
    from evaluation import batching

    out = tmp_path / "batching.md"
    argv = ["--models", str(models_dir), "--rounds", "1", "--out", str(out)]
    assert batching.main([*argv, "--encoder-batches", "2", "--decoder-batches", "8"]) == 0  # and 1: always
    text = out.read_text()
    assert "## Encoder: slices per call" in text and "## Decoder: boxes of one image per call" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 2", "| 1", "| 8"]
    assert all(float(r.split(" | ")[1]) > 0 for r in rows)
    drift = [float(r.split(" | ")[3].rstrip(" |")) for r in rows[2:]]  # each box vs its batch-1 call
    assert drift[0] == 0.0 and max(drift) <= 1e-4


def test_overlap_decodes_each_slice_on_its_own_embedding_and_reports_both_ways(tmp_path, models_dir) -> None:
    import openvino as ov

    from app.sessions import compile_config, read_manifest
    from evaluation import overlap

    assert "student_tinyvit_r112d" in overlap.encoders_3d(models_dir)  # CT 3D's encoder, once
    entry = read_manifest(models_dir)["student_tinyvit_r112d"]
    core = ov.Core()
    encoder, decoder = (
        core.compile_model(str(x), "CPU", compile_config()) for x in (entry.encoder_xml, entry.decoder_xml)
    )
    slices = overlap.random_slices(3, entry.input_size)
    alone = overlap.sequential(encoder, decoder, slices, 1)
    assert len(set(alone)) == 3  # three different slices, three different masks
    assert overlap.overlapped(encoder, decoder, slices, 2) == alone  # each slice's own embedding

    out = tmp_path / "overlap.md"
    argv = ["--models", str(models_dir), "--keys", "student_tinyvit_r112d", "--rounds", "1", "--slices", "2"]
    assert overlap.main([*argv, "--out", str(out)]) == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| student")]
    assert [int(r[1]) for r in rows] == list(overlap.OBJECTS_PER_SLICE)
    for r in rows:
        sequential_ms, overlapped_ms = float(r[2]), float(r[3])
        assert sequential_ms > 0 and overlapped_ms > 0
        assert abs(float(r[4].rstrip(" |x")) - overlapped_ms / sequential_ms) < 0.01  # ms printed to 0.1


def test_startup_phases_time_the_apps_steps_and_write_what_the_app_writes(
    tmp_path: Path, models_dir: Path
) -> None:
    import subprocess
    import sys

    from common.synthetic import disks_2d, save_case
    from evaluation.startup import START, phases_once
    from evaluation.startup_phases import PHASES

    case = save_case(tmp_path / "in" / "2DBox_XRay_phases.npz", *disks_2d())  # LiteMedSAM's route
    (tmp_path / "app").mkdir()
    (tmp_path / "phases").mkdir()
    phases = phases_once(case, tmp_path / "phases", tmp_path / "cache")
    assert list(phases) == [START, *PHASES] and all(v >= 0 for v in phases.values())
    assert phases["encode"] > phases["npz write"]  # one TinyViT call outweighs writing a small label map
    cmd = [sys.executable, "-m", "app", "-q", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "app"),
           "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    subprocess.run(cmd, check=True)
    timed = np.load(tmp_path / "phases" / case.name)["segs"]
    np.testing.assert_array_equal(timed, np.load(tmp_path / "app" / case.name)["segs"])


def test_the_runtimes_code_is_part_of_what_bench_runs_are_recorded_for(tmp_path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "cli.py").write_text("x = 1\n")
    (tmp_path / "predict.sh").write_text("exec python3 -m app\n")
    (tmp_path / "README.md").write_text("not the runtime\n")
    before = bench.source_digest(tmp_path)
    (tmp_path / "README.md").write_text("edited\n")
    assert bench.source_digest(tmp_path) == before
    (tmp_path / "app" / "cli.py").write_text("x = 2\n")
    assert bench.source_digest(tmp_path) != before
    assert bench.source_digest(Path()) == bench.source_digest(Path().resolve())  # names, not places


def test_graph_forms_time_every_form_and_bound_their_drift(tmp_path, models_dir) -> None:
    from evaluation import graph_forms

    out = tmp_path / "forms.md"
    assert (
        graph_forms.main(["--models", str(models_dir), "--repeats", "1", "--images", "1", "--out", str(out)])
        == 0
    )
    lines = out.read_text().splitlines()
    tables = {}
    for graph, forms, rule in (
        ("Encoder", graph_forms.ENCODER_FORMS, "|---|---|---|---|"),
        ("Decoder", graph_forms.DECODER_FORMS, "|---|---|---|---|---|"),
    ):
        start = lines.index(rule, lines.index(f"## {graph}")) + 1
        rows = [line.split(" | ") for line in lines[start : start + len(forms)]]
        assert [r[0][2:] for r in rows] == list(forms)
        assert (
            rows[0][2] == "1.00x" and float(rows[0][3].rstrip(" |")) == 0.0
        )  # the first form against itself
        tables[graph] = rows[1:]
    assert all(float(r[3].rstrip(" |")) < 1e-4 for r in tables["Encoder"])
    assert all(float(r[3]) < 1e-3 and float(r[4].rstrip(" |")) > 0.999 for r in tables["Decoder"])


def test_agreement_between_two_builds_counts_identical_and_differing_maps(tmp_path) -> None:
    from evaluation import agreement

    data = tiny_corpus(tmp_path / "data")
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder in (a, b):
        folder.mkdir()
    for path in sorted(data.glob("*.npz")):
        segs = np.load(path)["gts"].astype(np.uint16)
        np.savez_compressed(a / path.name, segs=segs)
        changed = segs.copy()
        if path.name.startswith("3D"):
            changed.flat[np.flatnonzero(segs)[0]] = 0  # one pixel of one object
        np.savez_compressed(b / path.name, segs=changed)
    assert agreement.main(["--data", str(data), "--between", str(a), str(b), "--out", str(out)]) == 0
    text = (out / "between.md").read_text()
    assert "| 2DBox_US | 1 | 1 | 0.0e+00 | 1.00000 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 3DBox_CT |"))
    assert row.split(" | ")[2] == "0" and float(row.split(" | ")[4]) < 1.0


def test_bench_runs_the_app_on_the_models_it_is_given(tmp_path, models_dir) -> None:
    data = tiny_corpus(tmp_path / "data")
    env = {**os.environ, "SEG_CACHE_DIR": str(tmp_path / "cache")}
    broken = tmp_path / "broken_models"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")  # the app refuses it: exit 2
    case = bench.sample_cases(data, 1, ["US 2D"])
    good = bench.bench(
        case, env, tmp_path / "w1", tmp_path / "a.csv", ("app",), app_args=("--models", str(models_dir))
    )
    bad = bench.bench(
        case, env, tmp_path / "w2", tmp_path / "b.csv", ("app",), app_args=("--models", str(broken))
    )
    assert good[0].ok and not bad[0].ok


def test_models_without_screens_keep_their_routers_and_alone_drops_both(tmp_path, models_dir) -> None:
    import json

    plain = runner.without_screens(models_dir, tmp_path / "no_screen")
    alone = runner.without_routers(models_dir, tmp_path / "alone")
    shipped = json.loads((models_dir / "manifest.json").read_text())["models"]
    assert any("screen" in e for e in shipped.values())  # the US specialist ships one
    for folder in (plain, alone):
        entries = json.loads((folder / "manifest.json").read_text())["models"]
        assert entries.keys() == shipped.keys() and not any("screen" in e for e in entries.values())
    assert [
        k for k, e in json.loads((plain / "manifest.json").read_text())["models"].items() if "router" in e
    ] == [k for k, e in shipped.items() if "router" in e]
    assert not any(
        "router" in e for e in json.loads((alone / "manifest.json").read_text())["models"].values()
    )


def test_lever_bench_rows_set_a_runs_ratios_side_by_side(tmp_path) -> None:
    from evaluation.lever_bench import LEVERS, ratio_row

    runs = tmp_path / "runs.csv"
    runs.write_text(
        "case,group,system,seconds,rss_mb,ok\n"
        "a.npz,US 2D,app,1.0,300,True\na.npz,US 2D,baseline,4.0,600,True\n"
        "b.npz,US 2D,baseline,3.0,600,True\nb.npz,US 2D,app,2.0,500,True\n"
        "c.npz,US 2D,app,1.0,300,False\nc.npz,US 2D,baseline,3.0,600,True\n"  # a failed run: no pair
    )
    row = ratio_row(LEVERS["screen"].case_sets[0], "no screen", runs)
    assert row.endswith("| no screen | 2 | 1.50 | 3.50 | 2.75x [1.50, 4.00] | 400 |")


def test_lever_bench_pairs_the_app_on_and_off_case_by_case() -> None:
    from evaluation.lever_bench import LEVERS, paired_rows

    lever = LEVERS["decoder-batch"]
    seconds = {
        "a.npz": {"batched": [9.0, 10.0, 11.0], "one box per call": [12.0, 10.0, 11.0]},
        "b.npz": {"batched": [2.0], "one box per call": [2.0]},
        "c.npz": {"batched": [3.0]},  # every "off" run failed: no ratio, left out of the median
    }
    rows = paired_rows(lever.case_sets[0], lever, seconds)
    assert rows[0] == "| microscopy | a.npz | 10.00 (3) | 11.00 (3) | 0.91x |"
    assert rows[1] == "| microscopy | b.npz | 2.00 (1) | 2.00 (1) | 1.00x |"
    assert rows[2] == "| microscopy | c.npz | failed | | |"
    assert rows[3] == "| microscopy | **median of the cases** | | | **0.95x** |"


def test_lever_bench_report_names_its_command_machine_and_an_app_only_run() -> None:
    """The report says how it was made (arguments, date, machine), and that an ``--app-only``
    run made no runs against the baseline."""
    from common.machine import describe
    from evaluation.lever_bench import LEVERS, readme

    lever = LEVERS["encoder-snippets"]
    paired = ["| ct_2d | a.npz | 1.00 (3) | 1.10 (3) | 0.91x |"]
    text = "\n".join(readme("encoder-snippets", lever, [], paired, 3, ["encoder-snippets", "--app-only"]))
    assert "`python -m evaluation.lever_bench encoder-snippets --app-only`" in text
    assert describe() in text and "With `--app-only` no such run is made" in text
    groups = ["CT 2D", "Dermoscopy 2D", "Microscopy 2D", "XRay 2D", "CT 3D"]
    assert [c.group for c in lever.case_sets] == groups
    assert len({c.label for c in lever.case_sets}) == len(lever.case_sets)  # one folder per set
    assert lever.off_env == {"SEG_ENCODER_SNIPPETS": "1"}
    with_rows = "\n".join(readme("encoder-snippets", lever, ["| row |"], paired, 3, ["encoder-snippets"]))
    assert "--app-only" not in with_rows


def test_windows_check_compares_the_many_box_images_with_and_without_windows(tmp_path) -> None:
    """``make windows-check`` on a generated corpus: only the image with BATCHED_FROM+ boxes is
    picked, the app runs it with windows off and on, and the report's row says the two agree."""
    from app.infer_2d import BATCHED_FROM
    from evaluation import windows_check
    from tests.test_decoder_batch import disks_image, spread_boxes

    data, out = tiny_corpus(tmp_path / "data"), tmp_path / "out"
    boxes = spread_boxes(BATCHED_FROM + 2, 320, seed=4, side=36)  # (50, 4) XYXY, small: windows
    save_case(data / "2DBox_Microscopy_Generated_1.npz", disks_image(), boxes)
    assert windows_check.many_box_cases(data) == ["2DBox_Microscopy_Generated_1.npz"]
    argv = ["--data", str(data), "--work", str(tmp_path / "work"), "--out", str(out)]
    assert windows_check.main(argv) == 0
    assert "| Generated | 1 | 1 | 0.0e+00 | 1.00000 |" in (out / "README.md").read_text()
    with open(out / "cases.csv") as f:
        assert [row["case"] for row in csv.DictReader(f)] == ["2DBox_Microscopy_Generated_1.npz"]
