"""Container test tooling (no engine needed): the run line, case sampling, output checks."""

from pathlib import Path

import numpy as np
import pytest

from container.challenge_run import check_output, container_cmd
from container.check import DOCKERFILE, base_image, equal_outputs, peak_rss_mb, public_sample, report


def test_container_cmd_is_the_challenge_line(tmp_path: Path) -> None:
    cmd = container_cmd("podman", "img", "team", tmp_path, ["--network", "none"])
    assert cmd[:7] == ["podman", "run", "-m", "8G", "--name", "team", "--rm"]
    assert f"{tmp_path / 'inputs'}/:/workspace/inputs/" in cmd
    assert f"{tmp_path / 'outputs'}/:/workspace/outputs/" in cmd
    assert cmd[-4:] == ["img", "/bin/bash", "-c", "sh predict.sh"]
    assert container_cmd("podman", "img", "t", tmp_path, [], memory="300m", command="true")[3] == "300m"


def test_public_sample_takes_the_smallest_case_per_group(tmp_path: Path) -> None:
    for name, size in [
        ("2DBox_US_a.npz", 50),
        ("2DBox_US_b.npz", 10),
        ("3DBox_CT_c.npz", 5),
        ("3DBox_MR_d.npz", 7),
    ]:
        (tmp_path / name).write_bytes(b"x" * size)
    assert [p.name for p in public_sample(tmp_path)] == ["2DBox_US_b.npz", "3DBox_CT_c.npz", "3DBox_MR_d.npz"]
    assert public_sample(tmp_path / "absent") == []


def test_output_checks(tmp_path: Path) -> None:
    case = tmp_path / "3DBox_CT_x.npz"
    np.savez(case, imgs=np.zeros((3, 8, 9), np.uint8), boxes=np.zeros((1, 6)))
    out = tmp_path / "out.npz"
    assert check_output(case, out).startswith("missing")
    np.savez(out, segs=np.zeros((3, 8, 9), np.uint16))
    assert check_output(case, out) == "ok"
    other = tmp_path / "other.npz"
    np.savez(other, segs=np.ones((3, 8, 9), np.uint16))
    assert equal_outputs(out, out) and not equal_outputs(out, other)
    np.savez(out, segs=np.zeros((3, 8, 8), np.uint16))
    assert "shape" in check_output(case, out)


def test_peak_rss_is_read_from_stderr() -> None:
    assert peak_rss_mb("app: 1 done\npeak_rss_mb 812.5\n") == 812.5
    assert peak_rss_mb("Killed") is None


def test_base_image_is_the_dockerfiles_first_from() -> None:
    assert base_image(DOCKERFILE.read_text()) == "python:3.11-slim"  # the design card's base
    assert base_image("# FROM comment\nfrom a:1 AS build\nFROM b:2\n") == "a:1"
    with pytest.raises(ValueError, match="FROM"):
        base_image("RUN true\n")


def test_report_gives_the_first_case_cost_less_the_engines_own_start(tmp_path: Path) -> None:
    facts = {
        "date": "d", "machine": "m", "engine": "podman", "image": "img", "size_mb": 1.0,
        "base": "python:3.11-slim", "overhead": 0.17, "base_overhead": 0.16, "cache_case": "c.npz",
        "cache": {"warm": 0.98, "cold": 1.2, "host": 0.82}, "baked_hits": (2, 2), "writes": [],
    }  # fmt: skip
    report(facts, [], {}, [], tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "container costs +0.16 s; less the engine's own start (the base image's `true`) +0.00 s" in text
    assert "the base image's 0.16 s" in text
