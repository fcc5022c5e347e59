"""Student encoders (shapes, export parity) and the distillation pipeline (views, cache, resume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.preprocessing import encoder_input
from modeling.architectures.sam import ARCHITECTURES, build_architecture
from modeling.architectures.students import STUDENTS, build_student
from train.distill.loop import DistillConfig, distill
from train.distill.samples import augment, case_images, quantised_input


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_student_maps_the_input_to_the_embedding_grid(name: str) -> None:
    torch.manual_seed(0)
    encoder = build_student(name).eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 256, 64, 64)
    assert torch.isfinite(out).all()
    assert f"student_{name}" in ARCHITECTURES


def test_unknown_student_is_refused() -> None:
    with pytest.raises(ValueError, match="valid"):
        build_student("resnet_9000")


def test_student_sam_loads_the_base_prompt_encoder_and_decoder_strictly() -> None:
    from modeling.checkpoint import lite_medsam_checkpoint, load_state_strict

    model = build_architecture("student_repvit_m06")
    load_state_strict(model, lite_medsam_checkpoint(), skip=("image_encoder",))
    with pytest.raises(ValueError, match="does not match"):
        load_state_strict(build_architecture("student_repvit_m06"), lite_medsam_checkpoint())


def test_student_exports_to_ir_with_parity(tmp_path: Path) -> None:
    import openvino as ov

    from app.sessions import compile_config
    from evaluation.students import export_candidate

    xml, params, gflops = export_candidate("repvit_m06", tmp_path)
    assert 0.5 < params < 5 and 0 < gflops < 75 / 2.5
    torch.manual_seed(0)
    model = build_architecture("student_repvit_m06").eval()  # same seed -> same weights
    x = np.random.default_rng(1).random((2, 3, 256, 256), dtype=np.float32)
    with torch.no_grad():
        ref = model.image_encoder(torch.from_numpy(x)).numpy()
    got = ov.Core().compile_model(str(xml), "CPU", compile_config())({"image": x})[0]
    assert np.abs(got - ref).max() < 1e-3


def test_augment_keeps_dtype_and_channels_and_is_seeded() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    a = augment(image, np.random.default_rng(5))
    b = augment(image, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape[2] == 3 and sorted(a.shape[:2]) == [40, 60]
    assert np.array_equal(a, b)
    grey = augment(image[:, :, 0], np.random.default_rng(1))
    assert grey.ndim == 2


def test_quantised_input_is_the_app_input_to_within_one_step() -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 70), dtype=np.uint8)
    q = quantised_input(image)
    x, _ = encoder_input(image, 256)
    assert q.dtype == np.uint8 and q.shape == (3, 256, 256)
    assert np.abs(q / 255.0 - x[0]).max() <= 0.5 / 255 + 1e-6


def test_case_images_takes_nonempty_slices_of_volumes(tmp_path: Path) -> None:
    vol = np.zeros((30, 8, 8), np.uint8)
    vol[10:20] = 5
    np.savez(tmp_path / "3DBox_CT_x_1.npz", imgs=vol)
    np.savez(tmp_path / "2DBox_US_x_1.npz", imgs=np.ones((8, 8, 3), np.uint8))
    slices = case_images(tmp_path / "3DBox_CT_x_1.npz", 4)
    assert len(slices) == 4 and all(s.max() == 5 for s in slices)
    assert len(case_images(tmp_path / "2DBox_US_x_1.npz", 4)) == 1


def test_distillation_lowers_the_loss_and_resumes_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, (4, 3, 256, 256), dtype=np.uint8)
    teacher = (rng.standard_normal((4, 256, 64, 64)) * 0.1).astype(np.float16)
    labels = np.zeros((2, 256, 256), np.uint16)
    labels[:, 50:120, 60:140] = 1
    hw = np.full((2, 2), 256, np.int32)
    val = {"inputs": inputs[:2], "teacher": teacher[:2], "labels": labels, "hw": hw}
    train = {"inputs": inputs, "teacher": teacher}
    cfg = DistillConfig(student="mobile_s", steps=4, batch=2, lr=1e-3, checkpoint_every=2, val_every=4)
    straight, log = distill(train, val, tmp_path / "a", cfg)
    assert [r["step"] for r in log] == [0, 1, 2, 3, 4]
    assert log[-1]["val_mse"] < log[0]["val_mse"]
    distill(train, val, tmp_path / "b", DistillConfig(**{**cfg.__dict__, "steps": 2}))
    resumed, log_b = distill(train, val, tmp_path / "b", cfg)
    assert [r["step"] for r in log_b] == [0, 1, 2, 3, 4]
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    with pytest.raises(ValueError, match="remove it"):
        distill(train, val, tmp_path / "b", DistillConfig(**{**cfg.__dict__, "lr": 0.5}))


def test_make_distill_runs_end_to_end_on_a_tiny_corpus(tmp_path: Path, models_dir: Path) -> None:
    from common.synthetic import disks_2d, save_case, sphere_3d
    from train.distill.__main__ import main

    data = tmp_path / "data"
    data.mkdir()
    save_case(data / "2DBox_US_a_1.npz", *disks_2d(hw=(96, 120)))
    save_case(data / "2DBox_US_b_2.npz", *disks_2d(hw=(80, 80)))
    save_case(data / "3DBox_CT_c_3.npz", *sphere_3d(shape=(6, 48, 48)), spacing=(3.0, 1.0, 1.0))
    split = tmp_path / "split.csv"
    split.write_text(
        "case,modality,group,split\n2DBox_US_a_1.npz,US,a,train\n3DBox_CT_c_3.npz,CT,c,train\n"
        "2DBox_US_b_2.npz,US,b,val\n"
    )
    report = tmp_path / "report"
    args = ["--data", str(data), "--split", str(split), "--models", str(models_dir),
            "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--report", str(report),
            "--student", "mobile_s", "--steps", "2", "--batch", "2", "--val-every", "2",
            "--per-volume", "2"]  # fmt: skip
    assert main(args) == 0
    with np.load(tmp_path / "c" / "train" / "3DBox_CT_c_3.npz") as cached:
        assert cached["inputs"].shape == (4, 3, 256, 256) and cached["teacher"].shape == (4, 256, 64, 64)
    assert (tmp_path / "o" / "mobile_s" / "encoder_fp16.pt").is_file()
    assert "| 2 | 4 |" in (report / "distill.md").read_text()
    assert (report / "distill.png").stat().st_size > 0


def test_teacher_at_reduced_size_keeps_every_teacher_weight_and_the_embedding_grid() -> None:
    import torch

    from modeling.architectures.tiny_vit import ReducedResolution, TinyViT

    teacher = TinyViT().state_dict()
    for size in (128, 192):
        student = ReducedResolution(size).eval()
        student.encoder.load_state_dict(teacher, strict=True)  # every key and shape fits
        with torch.no_grad():
            assert student(torch.rand(1, 3, 256, 256)).shape == (1, 256, 64, 64)
