"""The GPU distillation kit (``train/distill/kit.py``) and trainer (``train/distill/gpu.py``), run
on the CPU: the same code a lent GPU runs, at two steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.preprocessing import resized_hw
from train.distill.frame import content_hw
from train.distill.gpu import ViewDraw, draw, framed, split_holdout, view_of


def extent(view: torch.Tensor) -> tuple[int, int]:
    """(3, S, S) framed view -> (h, w) of its content (``frame.content_hw``)."""
    h, w = content_hw(view.numpy()[None])[0]
    return int(h), int(w)


def tiny_corpus(root: Path) -> tuple[Path, Path]:
    """Two train cases (a tinted RGB picture, a grey volume) and one val case, with their split."""
    from common.synthetic import disks_2d, save_case, sphere_3d

    data = root / "data"
    data.mkdir()
    imgs, boxes, gts = disks_2d(hw=(96, 120))
    imgs[..., 0] = imgs[..., 0] // 2  # a colour picture: its channels differ
    save_case(data / "2DBox_Dermoscopy_a_1.npz", imgs, boxes, gts)
    save_case(data / "3DBox_CT_c_3.npz", *sphere_3d(shape=(6, 48, 48)), spacing=(3.0, 1.0, 1.0))
    save_case(data / "2DBox_US_b_2.npz", *disks_2d(hw=(80, 80)))
    split = root / "split.csv"
    split.write_text(
        "case,modality,group,split\n2DBox_Dermoscopy_a_1.npz,Dermoscopy,a,train\n"
        "3DBox_CT_c_3.npz,CT,c,train\n2DBox_US_b_2.npz,US,b,val\n"
    )
    return data, split


def test_framed_puts_the_content_where_the_app_does() -> None:
    content = torch.rand(3, 30, 50) * 0.5 + 0.2  # (3, h, w)
    out = framed(content)  # (3, 256, 256)
    newh, neww = resized_hw((30, 50), 256)
    assert out.shape == (3, 256, 256)
    assert extent(out) == (newh, neww)
    assert float(out[:, :newh, :neww].min()) == 0.0 and float(out[:, :newh, :neww].max()) == 1.0
    assert not out[:, newh:].any() and not out[:, :, neww:].any()


@pytest.mark.parametrize("seed", range(6))
def test_every_view_is_an_input_the_app_could_give(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = framed(torch.rand(3, 40, 70) + 0.1)  # a framed view: content (146, 256) at the top left
    out = view_of(image, extent(image), draw(rng, crop_min=0.7))
    h, w = extent(out)
    assert max(h, w) == 256  # the longest side fills the frame
    assert not out[:, h:].any() and not out[:, :, w:].any()  # padding below and to the right
    assert 0.0 <= float(out.min()) and float(out.max()) == 1.0


def test_a_quarter_turn_swaps_the_contents_sides_and_a_full_crop_keeps_them() -> None:
    image = framed(torch.rand(3, 40, 80) + 0.1)  # content (128, 256)
    keep = ViewDraw((1.0, 1.0), (0.0, 0.0), False, False, 0, 1.0, 1.0)
    turn = ViewDraw((1.0, 1.0), (0.0, 0.0), False, False, 1, 1.0, 1.0)
    assert extent(view_of(image, (128, 256), keep)) == (128, 256)
    assert extent(view_of(image, (128, 256), turn)) == (256, 128)
    assert torch.allclose(view_of(image, (128, 256), keep), image, atol=1e-5)


def test_the_holdout_is_a_share_of_the_views_apart_from_the_rest() -> None:
    train, held = split_holdout(100, 0.05, np.random.default_rng(0))
    assert len(held) == 5 and len(train) == 95 and not set(train) & set(held)
    assert len(split_holdout(1, 0.05, np.random.default_rng(0))[1]) == 0


def test_balanced_draws_give_every_source_the_same_chance() -> None:
    from train.distill.gpu import draw_chances

    sources = np.array(["CT"] * 8 + ["Fundus"] * 2)
    by_source = draw_chances(sources, "source")
    assert np.isclose(by_source.sum(), 1.0)
    assert np.isclose(by_source[sources == "CT"].sum(), 0.5) and np.isclose(by_source[8], 0.25)
    assert np.allclose(draw_chances(sources, "none"), 0.1)


def test_the_kit_holds_grey_and_colour_views_of_the_train_split_only(tmp_path: Path) -> None:
    from train.distill.gpu import load_views
    from train.distill.kit import main

    data, split = tiny_corpus(tmp_path)
    kit = tmp_path / "kit"
    assert main(["--data", str(data), "--split", str(split), "--out", str(kit), "--per-volume", "3"]) == 0
    card = json.loads((kit / "kit.json").read_text())
    assert (card["train_cases"], card["grey_views"], card["colour_views"]) == (2, 3, 1)
    views, sources = load_views(kit)
    assert views.shape == (4, 3, 256, 256) and views.dtype == torch.uint8
    assert sorted(set(sources)) == ["2DBox_Dermoscopy_a", "3DBox_CT_c"]  # never the val case
    grey = views[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    assert main(["--data", str(data), "--split", str(split), "--out", str(kit), "--budget-mib", "0.01"]) == 1


def test_a_gpu_run_on_the_cpu_writes_a_carry_that_is_judged_here(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from train.distill.__main__ import main as distill_main
    from train.distill.gpu import main as gpu_main
    from train.distill.kit import main as kit_main
    from train.distill.loop import initial_encoder, load_start

    data, split = tiny_corpus(tmp_path)
    kit, out = tmp_path / "kit", tmp_path / "out"
    assert kit_main(["--data", str(data), "--split", str(split), "--out", str(kit), "--per-volume", "3"]) == 0
    args = ["--kit", str(kit), "--out", str(out), "--device", "cpu", "--student", "tinyvit_r112d",
            "--max-steps", "2", "--batch", "2", "--log-every", "1", "--holdout-share", "0.25"]  # fmt: skip
    assert gpu_main(args) == 0
    carry = out / "tinyvit_r112d_gpu.pt"
    state = torch.load(carry, weights_only=False)
    assert state["step"] == 2 and [r["step"] for r in state["log"]] == [0, 1, 2]
    assert all("holdout_mse" in r for r in state["log"])
    encoder = initial_encoder("tinyvit_r112d")
    assert load_start(encoder, carry) == 2  # the CPU loop's own loader, strict
    report = tmp_path / "report"
    judged = ["--data", str(data), "--split", str(split), "--models", str(models_dir),
              "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--report", str(report),
              "--student", "tinyvit_r112d", "--evaluate", str(carry)]  # fmt: skip
    assert distill_main(judged) == 0
    summary = (report / "distill.md").read_text()
    assert "Distillation on cpu (cpu)" in summary and "| 2DBox_US_b |" in summary
    assert (tmp_path / "o" / "tinyvit_r112d_gpu" / "encoder_fp16.pt").is_file()
    assert not (tmp_path / "c" / "train").exists()  # judging a carry caches no train views
    with pytest.raises(SystemExit, match="tinyvit_r112d"):
        distill_main(
            [*judged[: judged.index("--student")], "--student", "tinyvit_r128d", "--evaluate", str(carry)]
        )
    # --gate on a carry: the app runs are stood in for (the same scores for both systems), the
    # card and the report are the gate's own; nothing passes on one case, so nothing ships
    import train.distill.gate as student_gate
    from train.gate import route_results

    def same_scores(val_names: dict, data: Path, gate_dir: Path, rule: object, models: Path) -> tuple:
        scores = {"base_dsc": 0.8, "base_nsd": 0.8, "spec_dsc": 0.8, "spec_nsd": 0.8}
        rows = [{"case": n, "modality": "US", **scores} for names in val_names.values() for n in names]
        return route_results(rows, val_names, rule), rows

    monkeypatch.setattr(student_gate, "run_gate", same_scores)
    weights, gate_dir = tmp_path / "weights", tmp_path / "gate"
    weights.mkdir()
    assert distill_main([*judged, "--gate", "--weights", str(weights), "--gate-dir", str(gate_dir)]) == 0
    gated = (report / "gate" / "README.md").read_text()
    assert f"--evaluate {carry} --gate" in gated
    assert "| us_2d: US 2D / b (*unseen*) | 1 |" in gated  # the kit trained on a and c only
    card = json.loads((gate_dir / "weights" / "student_tinyvit_r112d" / "card.json").read_text())
    assert card["training"]["sources"].keys() == {"a", "c"}
    assert not any(weights.iterdir())  # one val case: no route can pass, nothing ships


def test_travel_slims_the_index_for_the_device_and_restores_it(tmp_path: Path) -> None:
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    for folder, size in (("weights", 3000), ("checkpoints", 2000), ("app", 10)):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "f.bin").write_bytes(b"x" * size)
    (repo / "train" / "distill").mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "train" / "distill" / "travel.sh", repo / "train" / "distill")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    def travel(verb: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "train/distill/travel.sh", verb], cwd=repo, capture_output=True, text=True
        )

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    before = git("ls-files")
    slim = travel("slim")
    script = (repo / "train" / "distill" / "travel.sh").stat().st_size
    assert slim.returncode == 0 and f"tracked {10 + script} bytes" in slim.stdout  # app/ and the script
    assert "weights/f.bin" not in git("ls-files")
    assert "??" not in git("status", "--porcelain", "--untracked-files=all")  # ignored: they do not travel
    assert (repo / "weights" / "f.bin").is_file()  # nothing on disk is touched
    assert travel("restore").returncode == 0
    assert git("ls-files") == before and git("status", "--porcelain") == ""
    assert "/weights/" not in (repo / ".git" / "info" / "exclude").read_text()
    assert travel("sideways").returncode == 2
