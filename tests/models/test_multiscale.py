import pytest
import torch
from timm.layers import Format
from torch import nn

from avtoolkit.fusion.sfm import ARS, identity_grid
from avtoolkit.models.encoders.multiscale import ARSStage, MultiScaleBackbone, is_channels_last


def build(name: str, seed: int = 0, **kwargs) -> MultiScaleBackbone:
    torch.manual_seed(seed)
    return MultiScaleBackbone(name, **kwargs).eval()


def set_alpha(backbone: MultiScaleBackbone, value: float) -> None:
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, ARS):
                module.alpha_raw.fill_(value)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_features_at_the_requested_strides(images):
    backbone = build("test_resnet")
    features, grids = backbone(images)
    assert grids == []
    assert backbone.channels == [32, 48, 192, 96]
    assert [f.shape for f in features] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(backbone.channels, (4, 8, 16, 32), strict=True)
    ]
    coarse = build("test_resnet", strides=(8, 32))
    assert coarse.channels == [48, 96]
    assert [f.shape[-1] for f in coarse(images)[0]] == [8, 2]


def test_images_are_normalised_with_the_pretrained_statistics(images):
    backbone = build("test_resnet")
    assert backbone.mean.flatten().tolist() == list(backbone.backbone.pretrained_cfg["mean"])
    expected = backbone.backbone((images - backbone.mean) / backbone.std)
    for a, b in zip(backbone(images)[0], expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["test_resnet", "pvt_v2_b0", "test_mambaout"])
def test_alpha_zero_reproduces_the_plain_backbone(name, images):
    plain = build(name)
    with_ars = build(name, ars_stages=(8, 16, 32), ars_alpha_init=0.0)
    plain_features, _ = plain(images)
    features, grids = with_ars(images)
    assert all(torch.equal(a, b) for a, b in zip(plain_features, features, strict=True))
    # grids in the order applied, at the resolution of each transition's input (strides 4, 8, 16)
    assert [g.shape for g in grids] == [(2, 16, 16, 2), (2, 8, 8, 2), (2, 4, 4, 2)]
    assert all(torch.equal(g, identity_grid(2, g.shape[1], g.shape[2])) for g in grids)
    # switched on, ARS changes every feature after its first transition, and only those
    set_alpha(with_ars, 0.5)
    modulated, _ = with_ars(images)
    assert torch.equal(modulated[0], plain_features[0])
    assert all(not torch.allclose(a, b, atol=1e-4) for a, b in zip(plain_features[1:], modulated[1:], strict=True))


def test_ars_only_at_chosen_transitions(images):
    plain = build("test_resnet")
    backbone = build("test_resnet", ars_stages=(16,))
    assert backbone.ars_stages == (16,) and backbone.ars_capable == (8, 16, 32) and backbone.strides == (4, 8, 16, 32)
    assert [type(m).__name__ for m in backbone.transitions().values()] == ["Sequential", "ARSStage", "Sequential"]
    features, grids = backbone(images)
    assert [g.shape for g in grids] == [(2, 8, 8, 2)]
    reference, _ = plain(images)
    assert torch.equal(features[1], reference[1])  # stride 8 comes before the ARS at 8 → 16
    assert not torch.allclose(features[2], reference[2], atol=1e-4)


def test_backbone_with_ars_trains(images):
    backbone = build("test_resnet", ars_stages=(8,)).train()
    features, grids = backbone(images)
    assert len(grids) == 1 and grids[0].requires_grad  # the grid depends on the learned saliency and α
    sum(f.square().mean() for f in features).backward()
    ars = backbone.ars_modules()[0].ars
    assert ars.alpha_raw.grad is not None and ars.alpha_raw.grad != 0
    assert backbone.ars_modules()[0].grid is None  # grids are handed out, not kept on the module


def test_channels_last_detection():
    class Fake(nn.Module):
        def __init__(self, fmt):
            super().__init__()
            if fmt is not None:
                self.output_fmt = fmt

    assert is_channels_last(Fake("NHWC"))
    assert is_channels_last(Fake(Format.NHWC))
    assert not is_channels_last(Fake("NCHW"))
    assert not is_channels_last(Fake(Format.NCHW))
    assert not is_channels_last(Fake(None))


def test_channels_last_backbone_returns_nchw(images):
    backbone = build("test_mambaout", ars_stages=(16,))
    assert backbone.channels_last
    features, grids = backbone(images)
    assert [f.shape for f in features] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(backbone.channels, (4, 8, 16, 32), strict=True)
    ]
    assert [g.shape for g in grids] == [(2, 8, 8, 2)]


def test_ars_stage_refuses_a_module_that_does_not_downsample():
    stage = ARSStage(nn.Identity(), ARS(3), channels_last=False)
    with pytest.raises(RuntimeError, match="does not downsample"):
        stage(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "pvt_v2_b0", "strides": (2, 4)}, "strides"),  # PVT-v2 starts at stride 4
        ({"name": "test_resnet", "strides": (8, 4)}, "strides"),
        ({"name": "test_resnet", "strides": ()}, "strides"),
        ({"name": "test_resnet", "ars_stages": (4,)}, "ars_stages"),
        ({"name": "test_resnet", "ars_stages": (8, 8)}, "ars_stages"),
        ({"name": "test_resnet", "strides": (4, 8, 16), "ars_stages": (32,)}, "ars_stages"),
        ({"name": "no_such_model_xyz"}, "name"),
    ],
)
def test_bad_arguments_raise(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MultiScaleBackbone(**kwargs)


def test_bad_images_raise():
    with pytest.raises(ValueError, match="images"):
        build("test_resnet")(torch.rand(1, 1, 32, 32))
