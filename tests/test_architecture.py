"""Our model definitions load LiteMedSAM strictly and equal the package's own code."""

import pytest
import torch

from modeling.architectures.sam import ARCHITECTURES, build_architecture
from modeling.checkpoint import LITE_MEDSAM_SHA256, lite_medsam_checkpoint, load_state_strict, verify_sha256


@pytest.fixture(scope="module")
def ours():
    model = build_architecture("lite_medsam")
    path = lite_medsam_checkpoint()
    verify_sha256(path, LITE_MEDSAM_SHA256)
    load_state_strict(model, path)
    return model


def test_checkpoint_loads_strictly_with_the_expected_size(ours) -> None:
    sizes = {
        n: sum(p.numel() for p in getattr(ours, n).parameters())
        for n in ("image_encoder", "prompt_encoder", "mask_decoder")
    }
    assert sizes == {"image_encoder": 5_726_740, "prompt_encoder": 6_220, "mask_decoder": 4_058_340}
    assert len(ours.state_dict()) == 435


def test_strict_loading_names_the_bad_keys(tmp_path) -> None:
    model = build_architecture("lite_medsam")
    state = model.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"mask_decoder.iou_token.weight.*extra.weight"):
        load_state_strict(model, path)


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="lite_medsam"):
        build_architecture("nope")
    assert "lite_medsam" in ARCHITECTURES


def test_numerically_equal_to_the_packaged_reference(ours) -> None:
    from tests.vendored_reference import build_vendored_lite_medsam

    path = lite_medsam_checkpoint()
    ref = build_vendored_lite_medsam(path.parent.parent)
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 256, 256)
    box = torch.tensor([[30.0, 40.0, 200.0, 180.0], [10.0, 10.0, 100.0, 90.0]])
    with torch.no_grad():
        e_ref, e_ours = ref.image_encoder(x), ours.image_encoder(x)
        sparse, dense = ref.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        l_ref, _ = ref.mask_decoder(
            image_embeddings=e_ref,
            image_pe=ref.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        l_ours = ours.decode(e_ref, box)
    assert torch.allclose(e_ref, e_ours, atol=1e-5)
    assert torch.allclose(l_ref, l_ours, atol=1e-3)


def test_exported_decoder_forward_equals_the_reference(ours) -> None:
    """The projection-folded decoder the export traces computes the reference's logits, on
    LiteMedSAM's weights and on perturbed ones (a specialist's decoder, any bias), for one box
    on an image and for several boxes sharing one."""
    from export.wrappers import DecoderForExport

    torch.manual_seed(1)
    emb = torch.randn(3, 256, 64, 64) * 0.5
    box = torch.tensor([[30.0, 40.0, 200.0, 180.0], [10.0, 10.0, 100.0, 90.0], [0.0, 0.0, 255.0, 255.0]])
    perturbed = build_architecture("lite_medsam")
    perturbed.load_state_dict(ours.state_dict())
    with torch.no_grad():
        for p in perturbed.mask_decoder.parameters():
            p.add_(0.02 * torch.randn_like(p))
        for model in (ours, perturbed):
            exported = DecoderForExport(model)  # one image, its boxes
            one_each = torch.cat([exported(emb[i : i + 1], box[i : i + 1]) for i in range(3)])
            three_on_one = exported(emb[:1], box)  # the three boxes on the first image, one call
            for ref, folded in (
                (model.decode(emb, box), one_each),
                (model.decode(emb[:1].expand(3, -1, -1, -1), box), three_on_one),
            ):
                assert ref.shape == folded.shape == (3, 1, 256, 256)
                assert torch.allclose(ref, folded, atol=2e-4, rtol=0), (ref - folded).abs().max()
                assert ((ref > 0) == (folded > 0)).float().mean() > 0.9999


def test_exported_encoder_forward_equals_the_reference(ours) -> None:
    """TinyViT with its qkv projections split (the exported form) computes the same embedding,
    and the model it was made from keeps its fused modules."""
    from modeling.architectures.tiny_vit import SplitQKVAttention, WindowAttention, with_split_qkv

    split = with_split_qkv(ours.image_encoder)
    kinds = lambda m: {type(x) for x in m.modules()} & {SplitQKVAttention, WindowAttention}  # noqa: E731
    assert kinds(split) == {SplitQKVAttention} and kinds(ours.image_encoder) == {WindowAttention}
    torch.manual_seed(2)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(ours.image_encoder(x), split(x), atol=1e-5, rtol=0)
