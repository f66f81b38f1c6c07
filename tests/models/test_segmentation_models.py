"""FAVS, its baseline and the TPAVI-style light network: shapes, gradients, ablation switches, SFM."""

import pytest
import torch

from avtoolkit.data.batch import AUDIO, FRAMES
from avtoolkit.losses.segmentation import MaskClassificationCriterion, PixelCriterion
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.segmentation.tpavi import TPAVI, TPAVINet

TINY = {
    "backbone": "test_resnet",
    "audio_width": 0.0625,
    "dim": 32,
    "num_queries": 4,
    "decoder_layers": 2,
    "decoder_ffn_dim": 64,
    "encoder_layers": 1,
    "encoder_ffn_dim": 64,
    "heads": 4,
    "num_experts": 3,
}


def batch(b: int = 2, t: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {FRAMES: torch.rand(b, t, 3, size, size), AUDIO: torch.randn(b, t, 1, 96, 64)}


def masks(b: int = 2, t: int = 2, size: int = 64, classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(b, t, size, size, dtype=torch.long)
    target[..., 10:30, 20:40] = classes - 1
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[0, 1] = False
    return target, valid


@pytest.mark.parametrize("num_classes", [1, 5])
def test_favs_shapes_losses_and_gradients(num_classes):
    torch.manual_seed(0)
    model = FAVS(num_classes=num_classes, **TINY)
    x = batch()
    output = model(x)
    assert output.logits.shape == (2, 2, num_classes, 16, 16)
    assert len(output.predictions) == TINY["decoder_layers"] + 1
    assert output.predictions[-1].class_logits.shape == (4, 4, num_classes + 1)
    assert set(output.losses) == {f"stage{i}/balance_loss" for i in (1, 2, 3)}
    k = output.stats["stage1/mean_k_visual"]
    assert 0 <= float(k) <= TINY["num_experts"]
    target, valid = masks(classes=max(num_classes, 2))
    losses = MaskClassificationCriterion(num_points=None)(output, target, valid)
    (losses["loss"] + sum(output.losses.values())).backward()
    for name in ("backbone", "pixel_decoder", "audio", "stages.0.scmc", "stages.2.fded_visual", "decoder"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and any(bool(g.abs().sum() > 0) for g in grads), name
    assert {id(p) for p in model.backbone_parameters()} == {id(p) for p in model.backbone.parameters()}


def test_fded_is_an_identity_at_init_so_favs_equals_its_baseline():
    torch.manual_seed(0)
    with_fded = FAVS(use_fded=True, use_scmc=False, **TINY).eval()
    baseline = FAVS(use_fded=False, use_scmc=False, **TINY).eval()
    missing, unexpected = baseline.load_state_dict(with_fded.state_dict(), strict=False)
    assert not missing and all(".fded_" in key for key in unexpected) and unexpected
    x = batch()
    torch.testing.assert_close(with_fded(x).logits, baseline(x).logits, atol=1e-4, rtol=1e-4)
    assert baseline(x).losses == {} and baseline(x).stats == {}


def test_favs_audio_changes_the_masks_through_scmc():
    torch.manual_seed(0)
    model = FAVS(**TINY).eval()
    x = batch()
    swapped = {**x, AUDIO: x[AUDIO].flip(0)}
    assert not torch.allclose(model(x).logits, model(swapped).logits)


def test_fixed_top_k_and_sfm_variants():
    torch.manual_seed(0)
    fixed = FAVS(top_k=2, **TINY)
    stats = fixed(batch()).stats
    assert all(float(v) == 2 for name, v in stats.items() if "mean_k" in name)
    sfm = FAVS(ars_stages=(8, 16, 32), msau=True, **TINY)
    output = sfm(batch())
    assert output.logits.shape == (2, 2, 1, 64, 64)  # MSAU upsamples to the frames
    assert torch.isfinite(output.logits).all()


def test_favs_rejects_a_bad_number_of_classes():
    with pytest.raises(ValueError, match="num_classes"):
        FAVS(num_classes=0, **TINY)


def test_tpavi_block_starts_as_the_identity_and_reads_the_audio():
    torch.manual_seed(0)
    block = TPAVI(8)
    visual, audio = torch.randn(2, 3, 8, 4, 5), torch.randn(2, 3, 8)
    torch.testing.assert_close(block(visual, audio), visual)
    torch.nn.init.normal_(block.out[1].weight)
    assert not torch.allclose(block(visual, audio), block(visual, audio.flip(0)))


@pytest.mark.parametrize("num_classes", [1, 4])
def test_tpavi_net_shapes_and_pixel_loss(num_classes):
    torch.manual_seed(0)
    model = TPAVINet(num_classes=num_classes, backbone="test_resnet", audio_width=0.0625, dim=16)
    output = model(batch())
    assert output.logits.shape == (2, 2, num_classes, 16, 16) and output.predictions == []
    target, valid = masks(classes=max(num_classes, 2))
    losses = PixelCriterion()(output, target, valid)
    assert set(losses) == ({"loss", "loss_bce", "loss_dice"} if num_classes == 1 else {"loss", "loss_ce"})
    losses["loss"].backward()
    with pytest.raises(ValueError, match="PixelCriterion"):
        MaskClassificationCriterion()(output, target, valid)


def test_binary_prediction_logits_are_a_noisy_or_of_the_queries():
    from avtoolkit.models.segmentation.base import MaskPrediction
    from avtoolkit.models.segmentation.favs import prediction_logits

    # Two queries: p(fg) = 0.5 and 0.25 (no-object takes the rest), masks σ = 0.8 and 1 at one pixel.
    class_logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]]]))
    mask_logits = torch.stack([torch.logit(torch.tensor(0.8)), torch.tensor(40.0)]).view(1, 2, 1, 1)
    logits = prediction_logits(MaskPrediction(class_logits, mask_logits))
    expected = 1 - (1 - 0.5 * 0.8) * (1 - 0.25)
    torch.testing.assert_close(torch.sigmoid(logits), torch.tensor(expected).view(1, 1, 1, 1))
