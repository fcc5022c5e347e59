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
from train.distill.samples import augment, case_pairs, quantised_input


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


def test_teacher_at_size_student_with_its_detail_head_exports_with_parity(tmp_path: Path) -> None:
    """The chosen student through the product's export hops (torch -> ONNX -> IR), its detail
    head made non-zero so that the parity covers it."""
    import openvino as ov

    from app.sessions import compile_config
    from export.to_onnx import export_encoder
    from export.to_openvino import convert_to_ir
    from export.wrappers import EncoderForExport

    torch.manual_seed(0)
    model = build_architecture("student_tinyvit_r128d").eval()
    torch.nn.init.normal_(model.image_encoder.detail.out.weight, std=0.05)
    export_encoder(EncoderForExport(model), 256, tmp_path / "encoder.onnx")
    convert_to_ir(tmp_path / "encoder.onnx", tmp_path / "encoder.xml", {"model_key": "student_tinyvit_r128d"})
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    with torch.no_grad():
        ref = model.image_encoder(torch.from_numpy(x)).numpy()
        plain = model.image_encoder.encoder(torch.nn.functional.interpolate(torch.from_numpy(x), size=128))
    got = ov.Core().compile_model(str(tmp_path / "encoder.xml"), "CPU", compile_config())({"image": x})[0]
    assert np.abs(got - ref).max() < 1e-3
    assert plain.shape == (1, 256, 32, 32)


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


def test_case_pairs_takes_nonempty_image_slices_of_volumes_with_their_labels(tmp_path: Path) -> None:
    vol = np.zeros((30, 8, 8), np.uint8)
    vol[10:20] = 5
    gts = np.zeros((30, 8, 8), np.uint16)
    gts[15:17, 2:4, 2:4] = 1  # objects on 2 of the 10 non-empty slices
    np.savez(tmp_path / "3DBox_CT_x_1.npz", imgs=vol, gts=gts)
    np.savez(tmp_path / "2DBox_US_x_1.npz", imgs=np.ones((8, 8, 3), np.uint8), gts=np.ones((8, 8), np.uint8))
    pairs = case_pairs(tmp_path / "3DBox_CT_x_1.npz", 4)
    assert len(pairs) == 4 and all(image.max() == 5 for image, _ in pairs)
    assert [int(labels.any()) for _, labels in pairs] == [0, 0, 1, 0]  # slices 10, 13, 16, 19
    assert len(case_pairs(tmp_path / "2DBox_US_x_1.npz", 4)) == 1


def test_a_view_moves_the_labels_with_the_image(tmp_path: Path) -> None:
    from train.distill.samples import case_views

    labels = np.zeros((40, 60), np.uint16)
    labels[5:12, 40:55] = 1
    labels[30:38, 3:9] = 2
    image = np.where(labels > 0, 255, 0).astype(np.uint8)
    np.savez(tmp_path / "2DBox_US_x_1.npz", imgs=image, gts=labels)
    views = case_views(tmp_path / "2DBox_US_x_1.npz", 8, 1, seed=3)
    assert len(views) == 8 and np.array_equal(views[0][1], labels)
    for view_image, view_labels in views:
        # intensity changes are monotonic: the objects stay the brightest pixels, wherever they went
        assert np.array_equal(view_image == view_image.max(), view_labels > 0)
        assert sorted(np.bincount(view_labels.ravel())[1:]) == sorted(np.bincount(labels.ravel())[1:])
    assert len({v[1].tobytes() for v in views}) > 2  # the views differ


def test_object_boxes_cover_one_of_the_views_objects_or_fall_back_to_random() -> None:
    from train.distill.samples import OBJECT_BOX_SHIFT, object_boxes

    labels = np.zeros((2, 256, 256), np.uint16)
    labels[0, 20:40, 100:180] = 3
    labels[0, 200:220, 10:30] = 7
    hw = np.array([[256, 256], [120, 200]])
    boxes = object_boxes(labels, hw, 6, np.random.default_rng(0))
    assert boxes.shape == (12, 4)
    tight = np.array([[100, 20, 179, 39], [10, 200, 29, 219]], np.float32)
    nearest = np.abs(boxes[:6, None] - tight[None]).max(axis=2).min(axis=1)
    assert (nearest <= OBJECT_BOX_SHIFT).all()
    assert (boxes[6:, 2] < 200).all() and (boxes[6:, 3] < 120).all()  # random, inside the image


def test_soft_target_bce_is_stationary_at_agreement_and_soft_dice_is_not() -> None:
    from train.losses import mask_distillation_loss, soft_target_bce

    torch.manual_seed(0)
    teacher = torch.randn(3, 1, 32, 32) * 3
    valid = torch.ones_like(teacher)
    for loss, stationary in ((soft_target_bce, True), (mask_distillation_loss, False)):
        student = teacher.clone().requires_grad_(True)
        loss(student, teacher, valid).backward()
        assert (student.grad.abs().max() < 1e-6) == stationary, loss.__name__


def random_corpus() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A tiny distillation corpus: 4 random train views with random teacher embeddings, the first
    2 also the validation slices (one square object each)."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, (4, 3, 256, 256), dtype=np.uint8)
    teacher = (rng.standard_normal((4, 256, 64, 64)) * 0.1).astype(np.float16)
    labels = np.zeros((2, 256, 256), np.uint16)
    labels[:, 50:120, 60:140] = 1
    hw = np.full((2, 2), 256, np.int32)
    val = {"inputs": inputs[:2], "teacher": teacher[:2], "labels": labels, "hw": hw}
    return {"inputs": inputs, "teacher": teacher}, val


def test_distillation_lowers_the_loss_and_resumes_exactly(tmp_path: Path) -> None:
    train, val = random_corpus()
    cfg = DistillConfig(student="mobile_s", steps=4, batch=2, lr=1e-3, checkpoint_every=2, val_every=4)
    straight, log, _ = distill(train, val, tmp_path / "a", cfg)
    assert [r["step"] for r in log] == [0, 1, 2, 3, 4]
    assert log[-1]["val_mse"] < log[0]["val_mse"]
    distill(train, val, tmp_path / "b", DistillConfig(**{**cfg.__dict__, "steps": 2}))
    resumed, log_b, _ = distill(train, val, tmp_path / "b", cfg)
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
            "--carry", str(tmp_path / "carry.pt"),
            "--student", "mobile_s", "--steps", "2", "--batch", "2", "--val-every", "2",
            "--per-volume", "2"]  # fmt: skip
    assert main(args) == 0
    with np.load(tmp_path / "c" / "train" / "3DBox_CT_c_3.npz") as cached:
        assert cached["inputs"].shape == (4, 3, 256, 256) and cached["teacher"].shape == (4, 256, 64, 64)
    assert (tmp_path / "o" / "mobile_s" / "encoder_fp16.pt").is_file()
    assert torch.load(tmp_path / "carry.pt", weights_only=False)["step"] == 2
    assert "| 2 | 4 |" in (report / "distill.md").read_text()
    assert (report / "distill.png").stat().st_size > 0
    # The task-aware run with object prompts: a labels cache beside the teacher's, view for view.
    kd_report = tmp_path / "kd_report"
    kd = [*args[: args.index("--report")], "--report", str(kd_report), "--carry", str(tmp_path / "kd.pt"),
          *args[args.index("--student"):], "--kd-weight", "1", "--kd-boxes", "1", "--kd-prompts", "objects",
          "--kd-loss", "bce", "--start-from", str(tmp_path / "carry.pt")]  # fmt: skip
    assert main(kd) == 0
    with np.load(tmp_path / "c" / "train_labels" / "3DBox_CT_c_3.npz") as cached:
        assert cached["labels"].shape == (4, 256, 256) and cached["labels"].max() >= 1
    summary = (kd_report / "distill.md").read_text()
    assert "own objects" in summary and "| 2DBox_US_b |" in summary
    assert (tmp_path / "o" / "mobile_s_kd_objects_bce" / "state.pt").is_file()


def test_teacher_at_reduced_size_keeps_every_teacher_weight_and_the_embedding_grid() -> None:
    from modeling.architectures.tiny_vit import TEACHER_AT, TinyViT, build_teacher_at

    teacher = TinyViT()
    for name in TEACHER_AT:
        student = build_teacher_at(name).eval()
        student.load_teacher(teacher)  # strict: every key and shape fits at any size
        with torch.no_grad():
            assert student(torch.rand(1, 3, 256, 256)).shape == (1, 256, 64, 64)
        assert f"student_{name}" in ARCHITECTURES
    with pytest.raises(ValueError, match="valid"):
        build_teacher_at("tinyvit_r7")


def test_detail_head_starts_as_the_identity_and_reads_the_full_resolution_image() -> None:
    from modeling.architectures.tiny_vit import ReducedResolution

    torch.manual_seed(0)
    plain, detailed = ReducedResolution(128).eval(), ReducedResolution(128, detail=True).eval()
    detailed.encoder.load_state_dict(plain.encoder.state_dict())
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(plain(x), detailed(x))  # zero-initialised output layer
        torch.nn.init.normal_(detailed.detail.out.weight, std=0.1)
        a = detailed(x)
        y = x.clone()
        y[:, :, 1::2, 1::2] = 1 - y[:, :, 1::2, 1::2]  # detail the 128 view cannot see exactly
        b = detailed(y)
        assert not torch.allclose(a, b)


def test_initial_encoder_starts_from_the_teacher(tmp_path: Path) -> None:
    from modeling.registry import BASE, load_model
    from train.distill.loop import initial_encoder

    teacher = load_model(BASE).image_encoder.state_dict()
    student = initial_encoder("tinyvit_r128d")
    for k, v in student.encoder.state_dict().items():
        assert torch.equal(v, teacher[k]), k


def test_a_new_sitting_continues_from_the_git_carry(tmp_path: Path) -> None:
    train, val = random_corpus()
    cfg = DistillConfig(student="mobile_s", steps=2, batch=2, lr=1e-3, checkpoint_every=1, val_every=2)
    carry = tmp_path / "carry" / "mobile_s.pt"
    first, *_ = distill(train, val, tmp_path / "sitting1", cfg, carry)
    saved = torch.load(carry, weights_only=False)
    assert saved["step"] == 2 and "optimizer" not in saved
    assert all(v.dtype == torch.float16 for v in saved["encoder"].values() if v.is_floating_point())
    assert carry.stat().st_size < 0.6 * (tmp_path / "sitting1" / "state.pt").stat().st_size
    # A fresh machine: no build state, the carry only.
    second, log, _ = distill(
        train, val, tmp_path / "sitting2", DistillConfig(**{**cfg.__dict__, "steps": 4}), carry
    )
    assert [r["step"] for r in log] == [0, 1, 2, 3, 4]
    assert torch.load(carry, weights_only=False)["step"] == 4
    assert not all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


def test_teacher_at_size_distils_with_its_trunk_frozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeling.registry import BASE, load_model

    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, (3, 3, 256, 256), dtype=np.uint8)
    teacher = load_model(BASE).image_encoder.eval()
    with torch.no_grad():
        target = teacher(torch.from_numpy(inputs.astype(np.float32) / 255)).numpy().astype(np.float16)
    labels = np.zeros((1, 256, 256), np.uint16)
    labels[0, 50:120, 60:140] = 1
    val = {
        "inputs": inputs[:1],
        "teacher": target[:1],
        "labels": labels,
        "hw": np.full((1, 2), 256, np.int32),
        "source": np.array(["A"]),
    }
    cfg = DistillConfig(student="tinyvit_r128d", steps=2, batch=2, lr=1e-3, checkpoint_every=2, val_every=2)
    out = tmp_path / "o"
    student, log, sources = distill({"inputs": inputs, "teacher": target}, val, out, cfg)
    from train.distill.loop import base_decoder_model, proxy_by_source, student_embeddings

    # The last validation's proxy per source comes back: what the report would otherwise recompute.
    decoder = base_decoder_model()
    recomputed = proxy_by_source(decoder, student_embeddings(student, val["inputs"]), val, 8)
    assert sources["student"] == pytest.approx(recomputed, abs=1e-6)
    assert sources["teacher"] == pytest.approx(proxy_by_source(decoder, val["teacher"], val, 8))
    state = teacher.state_dict()
    for k, v in student.encoder.named_parameters():
        frozen = k.startswith(("patch_embed.", "layers.0.", "layers.1."))
        assert torch.equal(v, state[k]) == frozen, k  # the trunk stays the teacher's, the rest trains
    running = {k: v for k, v in student.encoder.state_dict().items() if "running_" in k}
    assert running and all(torch.equal(v, state[k]) for k, v in running.items())  # BatchNorm: teacher's
    # A finished run started again (to rewrite its report and carry) computes no trunk features.
    import train.distill.loop as loop

    monkeypatch.setattr(loop, "trunk_features", lambda *a, **k: pytest.fail("trunk features recomputed"))
    _, again, nothing_validated = distill({"inputs": inputs, "teacher": target}, val, out, cfg)
    assert again == log and nothing_validated == {}
    assert log[-1]["val_mse"] < log[0]["val_mse"]


def test_the_proxy_scores_at_most_a_few_objects_per_slice() -> None:
    from train.distill.loop import capped_objects

    labels = np.zeros((3, 8, 8), np.uint16)
    labels[0, 0, :6] = np.arange(1, 7)  # 6 objects
    labels[2, 1, :2] = [4, 9]
    rows = capped_objects(labels, 4)
    assert rows.tolist() == [[0, 1], [0, 2], [0, 3], [0, 4], [2, 4], [2, 9]]
    assert capped_objects(np.zeros((2, 4, 4), np.uint16), 4).shape == (0, 2)


def test_only_decoder_specialists_take_routes_from_a_student_gate(tmp_path: Path) -> None:
    import json

    from train.distill.gate import read_cards, routes_taken

    cards = (
        ("us_2d", "decoder specialist", [(2, "US")]),
        ("student_tinyvit_r128d", "student encoder", [(2, "Dermoscopy"), (3, "CT")]),
    )
    for key, kind, routes in cards:
        (tmp_path / key).mkdir()
        card = {"key": key, "kind": kind, "routes": [{"dims": d, "modality": m} for d, m in routes]}
        (tmp_path / key / "card.json").write_text(json.dumps(card))
    assert routes_taken(read_cards(tmp_path)) == {(2, "US")}


def test_a_route_two_students_pass_goes_to_the_cheaper_one() -> None:
    from train.distill.gate import arbitrate

    ct, derm, endo = (3, "CT"), (2, "Dermoscopy"), (2, "Endoscopy")
    # a cheaper student takes every route it passed; the old one keeps the rest
    won, others = arbitrate({"student_big": (20.75, {ct, derm})}, "student_small", 14.5, {ct, endo})
    assert won == {ct, endo}
    assert others == {"student_big": {derm}}
    # a dearer one gets only the routes no cheaper student serves
    won, others = arbitrate({"student_small": (14.5, {ct})}, "student_big", 20.75, {ct, derm})
    assert won == {derm}
    assert others == {"student_small": {ct}}
    # the student's own earlier card is not a rival
    won, others = arbitrate({"student_small": (14.5, {ct})}, "student_small", 14.5, {ct, derm})
    assert won == {ct, derm}
    assert others == {}


def test_a_student_left_without_routes_is_removed_and_one_with_fewer_is_rewritten(tmp_path: Path) -> None:
    import json

    from train.distill.gate import card_routes, hand_over, read_cards

    for key, routes in (("student_a", [(3, "CT")]), ("student_b", [(3, "CT"), (2, "Dermoscopy")])):
        (tmp_path / key).mkdir()
        card = {
            "key": key,
            "kind": "student encoder",
            "routes": [{"dims": d, "modality": m} for d, m in routes],
        }
        (tmp_path / key / "card.json").write_text(json.dumps(card))
    hand_over(tmp_path, {"student_a": set(), "student_b": {(2, "Dermoscopy")}}, read_cards(tmp_path))
    assert not (tmp_path / "student_a").exists()
    assert card_routes(read_cards(tmp_path)["student_b"]) == {(2, "Dermoscopy")}


def test_a_partial_student_gate_refuses_to_replace_a_shipped_students_routes(tmp_path: Path) -> None:
    import argparse
    import json

    from train.distill.gate import gate_student

    card = {"kind": "student encoder", "routes": [{"dims": 3, "modality": "CT"}]}
    (tmp_path / "student_x").mkdir()
    (tmp_path / "student_x" / "card.json").write_text(json.dumps(card))
    args = argparse.Namespace(weights=tmp_path, gate_groups=["mr_3d"], student="x", probe=False)
    with pytest.raises(SystemExit, match="gate every group"):
        gate_student("student_x", tmp_path / "enc.pt", [], tmp_path, args, {}, "python -m train.distill")


def test_random_boxes_lie_inside_the_resized_image_and_are_seeded() -> None:
    from train.data import valid_masks
    from train.distill.frame import content_hw
    from train.distill.samples import random_boxes

    inputs = np.zeros((2, 3, 256, 256), np.uint8)
    inputs[0, 1, :100, :256] = 9  # a wide image padded below
    inputs[1, 0, :256, :60] = 3  # a tall image padded to the right
    hw = content_hw(inputs)
    assert hw.tolist() == [[100, 256], [256, 60]]
    boxes = random_boxes(hw, 50, np.random.default_rng(1))
    assert boxes.shape == (100, 4)
    h, w = np.repeat(hw, 50, axis=0).T
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w - 1).all() and (y1 <= h - 1).all()
    assert (x1 > x0).all() and (y1 > y0).all()
    assert np.ptp(x1 - x0) > 30  # sizes spread, not one box shape
    assert np.array_equal(boxes, random_boxes(hw, 50, np.random.default_rng(1)))
    valid = valid_masks(hw, 256)
    assert valid.shape == (2, 1, 256, 256) and valid[0].sum() == 100 * 256 and valid[1].sum() == 256 * 60


def test_mask_distillation_loss_is_lowest_when_the_student_agrees_with_the_teacher() -> None:
    from train.losses import mask_distillation_loss

    torch.manual_seed(0)
    teacher = torch.randn(3, 1, 32, 32) * 4
    valid = torch.ones_like(teacher)
    same = mask_distillation_loss(teacher, teacher, valid)
    other = mask_distillation_loss(-teacher, teacher, valid)
    assert same < other
    valid[:, :, 16:] = 0  # disagreement in the padding is not scored
    half = teacher.clone()
    half[:, :, 16:] *= -1
    agreeing = mask_distillation_loss(teacher, teacher, valid)
    assert torch.isclose(mask_distillation_loss(half, teacher, valid), agreeing)


def test_task_aware_distillation_starts_from_another_run_and_logs_its_term(tmp_path: Path) -> None:
    from train.distill.loop import run_name

    train, val = random_corpus()
    plain = DistillConfig(student="mobile_s", steps=2, batch=2, lr=1e-3, checkpoint_every=2, val_every=2)
    carry = tmp_path / "mobile_s.pt"
    mse_student, *_ = distill(train, val, tmp_path / "mse", plain, carry)
    kd = DistillConfig(**{**plain.__dict__, "kd_weight": 1.0, "kd_boxes": 1})
    assert run_name(plain) == "mobile_s" and run_name(kd) == "mobile_s_kd"
    objects = DistillConfig(**{**kd.__dict__, "kd_prompts": "objects", "kd_loss": "bce"})
    assert run_name(objects) == "mobile_s_kd_objects_bce"
    assert run_name(DistillConfig(**{**objects.__dict__, "kd_weight": 0.05})) == "mobile_s_kd0.05_objects_bce"
    with pytest.raises(ValueError, match="labels"):
        distill(train, val, tmp_path / "obj", objects)
    kd_student, log, _ = distill(train, val, tmp_path / "kd", kd, tmp_path / "kd.pt", start=carry)
    assert [r["step"] for r in log] == [0, 1, 2]
    assert all(r["train_kd"] > 0 for r in log[1:])
    start = torch.load(carry, weights_only=False)["encoder"]
    assert log[0]["val_mse"] == pytest.approx(
        distill(train, val, tmp_path / "mse", plain, carry)[1][-1]["val_mse"], rel=1e-2
    )  # step 0 of the new run is the MSE run's end (to within its fp16 carry)
    assert not all(torch.equal(v.float(), kd_student.state_dict()[k].float()) for k, v in start.items())
    # An older carry, written before the task-aware settings existed, still resumes.
    old = torch.load(carry, weights_only=False)
    old["config"] = {k: v for k, v in old["config"].items() if not k.startswith("kd_")}
    torch.save(old, carry)
    _, again, _ = distill(
        train, val, tmp_path / "fresh", DistillConfig(**{**plain.__dict__, "steps": 3}), carry
    )
    assert [r["step"] for r in again][-1] == 3


def test_the_student_gate_runs_the_app_on_the_models_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    import train.distill.gate as gate

    seen = {}

    def fake_gate(val_names, data, gate_dir, rule, models=None):
        seen.update(models=models, val_names=val_names)
        msg = "stop here"
        raise RuntimeError(msg)

    monkeypatch.setattr(gate, "run_gate", fake_gate)
    monkeypatch.setattr(gate, "write_candidate", lambda *a, **k: None)
    args = argparse.Namespace(
        weights=tmp_path / "w", gate_groups=None, student="mobile_s", probe=True, gate_dir=tmp_path / "g",
        models=tmp_path / "elsewhere", start_from=None, derived=[],
    )  # fmt: skip
    training = {"config": {**DistillConfig(student="mobile_s").__dict__}}
    (tmp_path / "e.pt").write_bytes(b"weights")
    with pytest.raises(RuntimeError, match="stop here"):
        case = Path("2DBox_US_a_1.npz")
        run = "python -m train.distill --student mobile_s"
        gate.gate_student("student_mobile_s", tmp_path / "e.pt", [case], tmp_path, args, training, run)
    assert seen["models"] == tmp_path / "elsewhere"
    assert seen["val_names"] == {"us_2d": ["2DBox_US_a_1.npz"]}


def test_a_student_has_seen_the_slices_cut_from_its_training_sources() -> None:
    from train.distill.gate import trained_on

    assert trained_on({"IBSISTS": {}, "HC18": {}}) == {"IBSISTS", "IBSISTS-slices", "HC18", "HC18-slices"}
    assert "MSDSpleen-slices" not in trained_on(["IBSISTS"])  # a held-out source's slices stay unseen


def test_a_rerun_of_a_finished_carry_ships_the_shipped_bytes_when_the_weights_are_the_same(
    tmp_path: Path,
) -> None:
    from modeling.checkpoint import same_weights
    from train.distill.gate import keep_shipped_bytes

    weight = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    shipped, rerun, other = tmp_path / "shipped.pt", tmp_path / "rerun.pt", tmp_path / "other.pt"
    torch.save({"conv.weight": weight, "bn.num_batches_tracked": torch.tensor(float("inf")).half()}, shipped)
    torch.save({"conv.weight": weight.clone(), "bn.num_batches_tracked": torch.tensor(-(2**63))}, rerun)
    torch.save({"conv.weight": weight + 1, "bn.num_batches_tracked": torch.tensor(0)}, other)
    assert same_weights(shipped, rerun) and not same_weights(shipped, other)
    torch.save({"conv.weight": weight.float(), "bn.num_batches_tracked": torch.tensor(0)}, other)
    assert not same_weights(shipped, other)  # same values, another dtype: another file to ship
    keep_shipped_bytes(rerun, shipped)
    assert rerun.read_bytes() == shipped.read_bytes()
    changed = other.read_bytes()
    keep_shipped_bytes(other, shipped)  # different weights: the run's own file stays
    assert other.read_bytes() == changed
    keep_shipped_bytes(other, tmp_path / "missing.pt")  # nothing shipped yet: nothing to keep
    assert other.read_bytes() == changed


def test_candidates_are_timed_at_each_batch_on_the_static_batch_ir(models_dir: Path) -> None:
    """The encoder IR is exported with a static batch of 1; `make student-candidates` times batch
    8 on the same IR reshaped (it raised before stop 46)."""
    import numpy as np
    import openvino as ov

    from evaluation.batching import encoder_inputs, reshaped_graphs

    core = ov.Core()
    xml = models_dir / "student_tinyvit_r112d" / "encoder.xml"
    assert list(core.read_model(str(xml)).input("image").get_shape()) == [1, 3, 256, 256]
    compiled = reshaped_graphs(xml, (2,), encoder_inputs, None, "encoder")[2]
    out = compiled({"image": np.zeros((2, 3, 256, 256), np.float32)})[0]
    assert out.shape == (2, 256, 64, 64)
