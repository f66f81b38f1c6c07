"""FAVS, its baseline and the TPAVI-style light network: shapes, gradients, ablation switches, SFM, inference."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avtoolkit.data.batch import AUDIO, FRAMES
from avtoolkit.fusion.sfm import ARS, MSAU
from avtoolkit.losses.segmentation import MaskClassificationCriterion, PixelCriterion
from avtoolkit.models.segmentation.base import MaskPrediction
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.segmentation.mask_decoder import prediction_logits
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
    # binary maps are two classes (background, foreground) for the mask-classification head, plus "no object"
    assert output.predictions[-1].class_logits.shape == (4, 4, (2 if num_classes == 1 else num_classes) + 1)
    assert set(output.losses) == {f"stage{i}/{loss}" for i in (1, 2, 3) for loss in ("balance_loss", "entropy_loss")}
    k = output.stats["stage1/mean_k_visual"]
    assert 0 <= float(k) <= TINY["num_experts"]
    usage = torch.stack([output.stats[f"stage1/usage_visual/expert{e}"] for e in range(TINY["num_experts"])])
    torch.testing.assert_close(usage.sum(), k)  # each expert's share of the frames; they add up to the mean k
    target, valid = masks(classes=max(num_classes, 2))
    losses = MaskClassificationCriterion(num_points=None)(output, target, valid)
    (losses["loss"] + sum(output.losses.values())).backward()
    for name in ("backbone", "pixel_decoder", "audio", "stages.0.scmc", "stages.2.fded_visual", "decoder"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and any(bool(g.abs().sum() > 0) for g in grads), name
    assert {id(p) for p in model.backbone_parameters()} == {id(p) for p in model.backbone.parameters()}


def test_ars_modules_are_new_layers_not_backbone_parameters():
    model = TPAVINet(backbone="test_resnet", audio_width=0.0625, dim=16, ars_stages=(8, 16))
    ars = {id(p) for stage in model.backbone.ars_modules() for p in stage.ars.parameters()}
    backbone = {id(p) for p in model.backbone_parameters()}
    assert ars and not ars & backbone  # trained at the base rate, not the pre-trained backbone's × 0.1
    assert backbone | ars == {id(p) for p in model.backbone.parameters()}


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


def test_fixed_top_k():
    torch.manual_seed(0)
    stats = FAVS(top_k=2, **TINY)(batch()).stats
    assert all(float(v) == 2 for name, v in stats.items() if "mean_k" in name)


def train_loss(model: FAVS) -> torch.Tensor:
    output = model(batch())
    target, valid = masks()
    return MaskClassificationCriterion(num_points=None)(output, target, valid)["loss"] + sum(output.losses.values())


def test_msau_refines_the_query_masks_the_set_loss_matches():
    torch.manual_seed(0)
    model = FAVS(ars_stages=(8, 16, 32), msau=True, **TINY)
    output = model(batch())
    assert output.predictions[-1].mask_logits.shape == (4, TINY["num_queries"], 64, 64)  # at the frames' size
    assert output.logits.shape == (2, 2, 1, 64, 64)
    torch.testing.assert_close(  # the scores are read from the refined masks
        output.logits.flatten(0, 1), prediction_logits(output.predictions[-1], binary=True)
    )
    assert model.msau is not None
    with torch.no_grad():
        model.msau.mix.fill_(0.5)  # γ ≠ 0, as after some training: the kernel network is on the path too
    loss = train_loss(model)
    loss.backward()
    for name, parameter in model.msau.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"msau.{name} is not trained"
    with torch.no_grad():
        model.msau.mix.fill_(0.0)
    assert not torch.allclose(train_loss(model), loss)  # the loss sees MSAU's refinement


class TransparentNetwork(nn.Module):
    """A stand-in for a timm feature network: stride 4 is the image itself, each transition a 2× average pool."""

    def __init__(self, transition_to_8: nn.Module) -> None:
        super().__init__()
        self.layer2 = transition_to_8  # where the ARS-wrapped stride-8 transition of test_resnet lives

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f8 = self.layer2(x)
        f16 = F.avg_pool2d(f8, 2)
        return [x, f8, f16, F.avg_pool2d(f16, 2)]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


def test_a_zoomed_detail_reaches_the_output_through_the_models_sfm_path():
    # A 0.35 cycles/px grating in a patch: a 2× pool aliases it (Nyquist 0.25); ARS zooms into the patch (> 2×), so
    # the pooled map keeps it, and demodulating at the output resolution gives it back. Demodulating at the pooled
    # map's own resolution (then upsampling) cannot: that is the plain network's result.
    torch.manual_seed(0)
    model = TPAVINet(backbone="test_resnet", audio_width=0.0625, dim=16, ars_stages=(8,), msau=True)
    stage = model.backbone.ars_modules()[0]
    stage.stage = nn.AvgPool2d(2)
    stage.ars = ARS(3, alpha_init=1.0, sigma=0.25)
    size, patch = 64, slice(24, 40)
    saliency = torch.full((1, 1, size, size), 0.02)
    saliency[..., patch, patch] = 1.0
    stage.ars.saliency = lambda x: saliency.expand(x.shape[0], -1, -1, -1)  # type: ignore[method-assign]
    model.backbone.backbone = TransparentNetwork(stage)
    model.backbone.mean.zero_()
    model.backbone.std.fill_(1.0)
    model.msau = MSAU((3, 3, 3, 3), feature_dim=3)
    with torch.no_grad():
        for projection in model.msau.projections:
            projection.weight.copy_(torch.eye(3)[:, :, None, None])
            projection.bias.zero_()
    grating = torch.cos(2 * math.pi * 0.35 * torch.arange(size).float()).expand(size, size)
    frames = torch.zeros(1, 3, size, size)
    frames[..., patch, patch] = grating[patch, patch]

    def stride8_views() -> tuple[torch.Tensor, torch.Tensor]:
        pyramid = model.frame_pyramid(frames)
        assert model.msau is not None
        guidance = model.msau.guidance(pyramid.frames, pyramid.modulated, pyramid.grids)  # what MSAU's kernels see
        at_output = guidance[:, 3 + 3 : 3 + 6]  # image, stride 4, *stride 8*, ...
        at_own = F.interpolate(pyramid.features[1], size=(size, size), mode="bilinear", align_corners=False)
        return at_output, at_own

    inner = (slice(None), 0, slice(27, 37), slice(27, 37))
    zoomed, own_resolution = stride8_views()
    with torch.no_grad():
        stage.ars.alpha_raw.fill_(0.0)  # α = 0: the plain network
    plain, _ = stride8_views()
    truth = frames[inner]
    assert correlation(zoomed[inner], truth) > 0.9
    assert correlation(plain[inner], truth) < 0.4
    assert correlation(own_resolution[inner], truth) < 0.4


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


def two_class_prediction(unmatched: int) -> MaskPrediction:
    """One frame of 2 × 2 pixels, pixel (0, 0) foreground: a background query, a foreground query and ``unmatched``
    queries with untrained masks (σ = 0.5) and p(fg) = p(bg) = 0.01 (no object takes the rest)."""
    probabilities = torch.tensor([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01]] + [[0.01, 0.01, 0.98]] * unmatched)
    mask_logits = torch.zeros(2 + unmatched, 2, 2)
    mask_logits[0] = 20.0
    mask_logits[0, 0, 0] = -20.0  # background query: every pixel but the object
    mask_logits[1] = -20.0
    mask_logits[1, 0, 0] = 20.0  # foreground query: the object
    return MaskPrediction(probabilities.log()[None], mask_logits[None])


@pytest.mark.parametrize("unmatched", [0, 98, 998])
def test_binary_scores_do_not_pile_up_false_positives_with_the_number_of_queries(unmatched):
    probability = prediction_logits(two_class_prediction(unmatched), binary=True).sigmoid()[0, 0]
    assert probability[0, 0] > 0.5  # the object
    assert (probability.flatten()[1:] < 0.5).all()  # the background stays background
    # the two-class score: S_fg / (S_bg + S_fg), S_c = Σ_q p_q(c) σ(m_q)
    s_fg, s_bg = 0.01 * 0.5 * unmatched + 0.01, 0.98 + 0.01 * 0.5 * unmatched
    assert probability[1, 1].item() == pytest.approx(s_fg / (s_fg + s_bg), rel=1e-4)
    # a noisy-OR of the foreground claims, 1 − Π_q (1 − p_q(fg) σ(m_q)), would call 1 − 0.995^98 = 0.39 and
    # 1 − 0.995^998 = 0.99 of that background foreground


def test_binary_inference_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        prediction_logits(MaskPrediction(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3, 3)), binary=True)
