"""Training package: groups, sample caching geometry, batches, losses, resumable decoder training."""

from pathlib import Path

import numpy as np
import pytest
import torch

from train.data import Pool, jitter_box, make_batch, object_box, objects_of
from train.groups import GROUPS, group_of
from train.losses import hard_iou, soft_dice_loss, total_loss
from train.samples import choose_slices, labels_to_model


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("3DBox_CT_IBSISTS_STS_004.npz", "ct_3d"),
        ("3DBox_PET_x.npz", "pet_3d"),
        ("2DBox_CT_SAMMed2Ddemo_1.npz", "thin_2d"),
        ("2DBox_OCT_a.npz", "thin_2d"),
        ("2DBox_X-Ray_CXR_3.npz", "thin_2d"),
        ("2DBox_US_HC18_016.npz", "us_2d"),
        ("2DBox_Mammography_DDSM.npz", "mammography_2d"),
        ("case_without_token.npz", None),
    ],
)
def test_group_of(name: str, group: str | None) -> None:
    assert group_of(name) == group


def test_groups_do_not_overlap() -> None:
    seen = [(g.dims, m) for g in GROUPS.values() for m in g.modalities]
    assert len(seen) == len(set(seen))


def test_choose_slices_takes_occupied_slices_evenly() -> None:
    gts = np.zeros((20, 4, 4), np.uint16)
    gts[5:15, 1, 1] = 1
    assert choose_slices(gts, 20) == list(range(5, 15))
    picked = choose_slices(gts, 3)
    assert picked == [5, 9, 14]  # linspace(0, 9, 3) rounds half to even
    assert choose_slices(np.zeros((3, 4, 4)), 3) == []


def test_labels_to_model_resizes_into_the_top_left_and_pads() -> None:
    labels = np.zeros((100, 200), np.uint16)
    labels[:, 100:] = 7
    out = labels_to_model(labels, 256)
    assert out.shape == (256, 256) and out.dtype == np.uint16
    assert out[:128, 200].tolist() == [7] * 128 and out[128:].max() == 0  # newh = 128
    assert set(np.unique(out)) == {0, 7}


def test_jitter_box_stays_ordered_and_inside() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = jitter_box(np.array([0, 250, 3, 255], np.float32), rng, 5, 256)
        assert 0 <= box[0] <= box[2] <= 255 and 0 <= box[1] <= box[3] <= 255


def tiny_pool(n: int = 3, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 256, 256), np.uint16)
    for i in range(n):
        labels[i, 40 + i : 90, 60:120] = 1
        labels[i, 150:200, 30 : 70 + i] = 2
    emb = rng.normal(size=(n, 256, 64, 64)).astype(np.float16)
    return Pool(emb, labels, np.full((n, 2), [220, 256]), objects_of(labels))


def test_batches_have_named_shapes_and_tight_validation_boxes() -> None:
    pool = tiny_pool()
    assert pool.objects.tolist() == [[0, 1], [0, 2], [1, 1], [1, 2], [2, 1], [2, 2]]
    emb, boxes, target, valid = make_batch(pool, np.array([0, 3]), None, 5)
    assert emb.shape == (2, 256, 64, 64) and emb.dtype == np.float32
    assert boxes.tolist() == [[60, 40, 119, 89], [30, 150, 70, 199]]
    assert target.shape == valid.shape == (2, 1, 256, 256)
    assert valid[0, 0, 219].all() and not valid[0, 0, 220].any()
    assert object_box(pool.labels[0] == 1).tolist() == boxes[0].tolist()


def test_losses_reward_the_right_mask() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    valid = torch.ones_like(target)
    good, bad = (target * 2 - 1) * 20, -(target * 2 - 1) * 20
    assert soft_dice_loss(good, target, valid) < 0.01 < 0.98 < soft_dice_loss(bad, target, valid)
    assert hard_iou(good, target, valid).item() == 1.0 and hard_iou(bad, target, valid).item() == 0.0
    loss, parts = total_loss(good, torch.ones(1, 1), target, valid)
    assert loss.item() < 0.02 and set(parts) == {"loss", "dice", "bce", "iou"}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_decoder_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    from modeling.registry import get_spec, load_model
    from train.loop import TrainConfig, train_decoder, write_log

    pool = tiny_pool()
    cfg = TrainConfig(steps=2, batch=2, checkpoint_every=1, val_every=1, val_limit=2)
    model = load_model(get_spec("lite_medsam"))
    encoder_before = next(model.image_encoder.parameters()).clone()
    log = train_decoder(model, pool, pool, tmp_path, cfg)
    assert [r["step"] for r in log] == [0, 1, 2] and "val_dice" in log[0]
    assert torch.equal(next(model.image_encoder.parameters()), encoder_before)  # frozen
    resumed = load_model(get_spec("lite_medsam"))
    log = train_decoder(resumed, pool, pool, tmp_path, TrainConfig(**{**cfg.__dict__, "steps": 3}))
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="remove it to restart"):
        train_decoder(load_model(get_spec("lite_medsam")), pool, pool, tmp_path, TrainConfig(lr=1.0))
    write_log(log, tmp_path / "log.csv")
    assert (tmp_path / "log.csv").read_text().startswith("step,loss,dice,bce,iou,val_dice")


def test_app_prompts_are_the_key_box_and_the_propagation_boxes() -> None:
    from app.postprocessing import propagation_box
    from app.preprocessing import box_to_model
    from common.synthetic import sphere_3d
    from train.samples import app_prompts

    _, boxes, gts = sphere_3d(shape=(24, 128, 128))
    x0, y0, z0, x1, y1, z1 = boxes[0]
    z_key = (int(z0) + int(z1)) // 2
    slices = [int(z0), z_key, int(z1)]
    prompts = app_prompts(gts, boxes, slices, 256)
    assert prompts.shape == (3, 2, 4) and np.isnan(prompts[:, 0]).all()  # label 0: no object
    assert np.array_equal(prompts[1, 1], box_to_model(np.array([x0, y0, x1, y1]), (128, 128), 256))
    assert np.array_equal(prompts[0, 1], propagation_box(gts[int(z0) + 1] == 1, 1, 256))  # from above
    assert np.array_equal(prompts[2, 1], propagation_box(gts[int(z1) - 1] == 1, 1, 256))  # from below
    # the key slice's box spans the whole object; a slice near the end is prompted smaller
    assert (prompts[1, 1, 2:] - prompts[1, 1, :2]).prod() > (prompts[0, 1, 2:] - prompts[0, 1, :2]).prod()


def test_make_batch_uses_the_app_prompts_only_when_asked() -> None:
    labels = np.zeros((1, 64, 64), np.uint16)
    labels[0, 10:20, 10:30] = 1
    prompts = np.full((1, 2, 4), np.nan, np.float32)
    prompts[0, 1] = [2, 2, 60, 60]  # a loose box, as a key slice's 3D extent can be
    pool = Pool(
        np.zeros((1, 256, 64, 64), np.float16), labels, np.array([[64, 64]]), objects_of(labels), prompts
    )
    rows = np.zeros(50, np.int64)
    _, tight, _, _ = make_batch(pool, rows, np.random.default_rng(0), 5)
    _, same, _, _ = make_batch(pool, rows, np.random.default_rng(0), 5, app_share=0.0)
    assert np.array_equal(tight, same)  # share 0: stop 20's batches, draw for draw
    assert np.abs(tight - object_box(labels[0] == 1)).max() <= 5
    _, app, _, _ = make_batch(pool, rows, np.random.default_rng(0), 5, app_share=1.0)
    assert np.abs(app - prompts[0, 1]).max() <= 2
    no_prompts = Pool(pool.embeddings, labels, pool.hw, pool.objects)
    with pytest.raises(ValueError, match="cache has none"):
        make_batch(no_prompts, rows, np.random.default_rng(0), 5, app_share=0.5)


def test_report_command_names_the_non_default_settings() -> None:
    from train.__main__ import config_flags
    from train.loop import TrainConfig

    assert config_flags(TrainConfig()) == ""
    assert config_flags(TrainConfig(app_prompt_share=0.5, steps=50)) == " --steps 50 --app-prompt-share 0.5"
