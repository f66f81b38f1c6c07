import math

import pytest
import torch

from avtoolkit.analysis.aliasing import aliasing_ratio, backbone_aliasing
from avtoolkit.fusion.sfm import ARS
from avtoolkit.models.encoders.multiscale import MultiScaleBackbone


def checkerboard(H: int, W: int) -> torch.Tensor:
    i, j = torch.arange(H)[:, None], torch.arange(W)[None, :]
    return ((i + j) % 2 * 2 - 1).float()


def cosine(H: int, W: int, fy: float, fx: float) -> torch.Tensor:
    """cos(2π (fy·i + fx·j)), frequencies in cycles per sample."""
    i, j = torch.arange(H)[:, None].double(), torch.arange(W)[None, :].double()
    return torch.cos(2 * math.pi * (fy * i + fx * j)).float()


def test_constant_and_zero_maps_do_not_alias():
    constant = torch.full((2, 3, 8, 8), 0.1)
    assert torch.equal(aliasing_ratio(constant, 2), torch.zeros(2))
    assert torch.equal(aliasing_ratio(constant, 2, exclude_dc=False), torch.zeros(2))
    assert torch.equal(aliasing_ratio(torch.zeros(1, 2, 8, 8), 4), torch.zeros(1))


def test_checkerboard_aliases_entirely():
    board = checkerboard(8, 10)[None, None]
    torch.testing.assert_close(aliasing_ratio(board, 2), torch.ones(1))
    shifted = 0.5 * board + 0.5  # half of its power is the mean
    torch.testing.assert_close(aliasing_ratio(shifted, 2), torch.ones(1))
    torch.testing.assert_close(aliasing_ratio(shifted, 2, exclude_dc=False), torch.tensor([0.5]))


def test_ratio_is_the_power_fraction_outside_the_band():
    H = W = 16
    low = cosine(H, W, 1 / 8, 0)  # inside [−0.25, 0.25]² (stride 2) and on the edge of [−0.125, 0.125]² (stride 4)
    high = cosine(H, W, 0, 3 / 8)  # outside both
    torch.testing.assert_close(aliasing_ratio(low[None, None], 2), torch.zeros(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(aliasing_ratio(low[None, None], 4), torch.zeros(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(aliasing_ratio(high[None, None], 2), torch.ones(1))
    mix = (2 * low + high)[None, None]  # powers 4 : 1
    torch.testing.assert_close(aliasing_ratio(mix, 2), torch.tensor([0.2]))
    # stride 8 keeps |f| ≤ 1/16 only: both components alias
    torch.testing.assert_close(aliasing_ratio(mix, 8), torch.ones(1))


def test_ratio_per_sample_mean_over_channels_with_power():
    H = W = 8
    board, flat = checkerboard(H, W), torch.ones(H, W)
    smooth = cosine(H, W, 1 / 8, 1 / 8)
    x = torch.stack([torch.stack([board, smooth, flat]), torch.stack([smooth, smooth, smooth])])
    # sample 0: ratios 1 and 0; the constant channel carries no power and is left out
    torch.testing.assert_close(aliasing_ratio(x, 2), torch.tensor([0.5, 0.0]), atol=1e-6, rtol=0)


def test_ars_on_a_high_frequency_patch_lowers_aliasing():
    H = W = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    background = 0.5 * torch.cos(math.pi * xx / 2) * torch.cos(math.pi * yy / 2)
    patch = torch.zeros(H, W)
    patch[10:18, 12:20] = 1.0
    x = (background + 0.5 * patch * checkerboard(H, W))[None, None].repeat(1, 2, 1, 1)
    ars = ARS(2, alpha_init=1.0)
    ars.saliency = lambda _: (0.02 + patch)[None, None]  # type: ignore[method-assign]
    resampled, _ = ars(x)
    identity = ARS(2, alpha_init=0.0)(x)[0]
    before = aliasing_ratio(identity, 2).item()
    after = aliasing_ratio(resampled, 2).item()
    assert before > 0.3
    assert after < 0.5 * before


def test_backbone_aliasing_measures_each_transition():
    torch.manual_seed(0)
    backbone = MultiScaleBackbone("test_resnet", ars_stages=(8, 32), ars_alpha_init=1.0).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    after = backbone_aliasing(backbone, images)
    before = backbone_aliasing(backbone, images, where="before_ars")
    assert list(after) == list(before) == [8, 16, 32]
    assert all(0.0 <= value <= 1.0 for value in [*after.values(), *before.values()])
    assert after[16] == before[16]  # no ARS at 8 → 16: the same map
    assert after[8] != before[8] and after[32] != before[32]
    transitions = backbone.transitions()
    assert all(not module._forward_pre_hooks for module in transitions.values())  # hooks removed
    assert all(not module.stage._forward_pre_hooks for module in backbone.ars_modules())
    with torch.no_grad():
        for stage in backbone.ars_modules():
            stage.ars.alpha_raw.zero_()
    assert backbone_aliasing(backbone, images) == backbone_aliasing(backbone, images, where="before_ars")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="stride"):
        aliasing_ratio(torch.zeros(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match="x must be"):
        aliasing_ratio(torch.zeros(4, 4), 2)
    backbone = MultiScaleBackbone("test_resnet", strides=(4, 8))
    with pytest.raises(ValueError, match="where"):
        backbone_aliasing(backbone, torch.rand(1, 3, 32, 32), where="inside")  # type: ignore[arg-type]
