from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from avtoolkit.fusion.hierarchical import HierarchicalFusion
from avtoolkit.fusion.late import LateFusion
from avtoolkit.fusion.middle import MiddleFusion
from avtoolkit.models.separation.unet import UNet

D, C, P, K = 6, 5, 3, 4
SETTINGS = [(True, True), (False, True), (True, False)]  # hierarchical, late only, middle only


def toy_decoder(fusion: HierarchicalFusion) -> Callable[[Tensor], Tensor]:
    """A stand-in for the U-Net decoder: (B·N, C', h, w) → (B·N, K, 2h, 2w)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(fusion.decoder_in_channels, K, 3, padding=1))


def test_both_switches_off_is_an_error():
    with pytest.raises(ValueError, match="both are off"):
        HierarchicalFusion(D, C, P, K, middle=False, late=False)


@pytest.mark.parametrize(("middle", "late", "channels"), [(True, True, C + P), (False, True, C), (True, False, C + P)])
def test_decoder_in_channels(middle, late, channels):
    fusion = HierarchicalFusion(D, C, P, K, middle=middle, late=late)
    assert fusion.decoder_in_channels == channels
    assert fusion(torch.randn(2, C, 2, 3), torch.randn(2, 3, D), toy_decoder(fusion)).shape == (2, 3, 4, 6)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**16))
def test_late_only_is_exactly_late_fusion_on_the_repeated_bottleneck(B, N, h, w, seed):
    torch.manual_seed(seed)
    fusion = HierarchicalFusion(D, C, P, K, middle=False, late=True)
    assert fusion.middle is None and fusion.conv_readout is None
    late = LateFusion(K, visual_dim=D)
    with torch.no_grad():
        late.scale.uniform_(-2, 2)
        late.bias.uniform_(-1, 1)
    fusion.load_state_dict({f"late.{name}": value for name, value in late.state_dict().items()})
    bottleneck = torch.randn(B, C, h, w)
    embeddings = torch.randn(B, N, D)
    assert torch.equal(fusion.fuse_bottleneck(bottleneck, embeddings), bottleneck.unsqueeze(1).expand(B, N, C, h, w))
    features = torch.randn(B, N, K, 2 * h, 2 * w)
    assert torch.equal(fusion.readout(features, embeddings), late(features, embeddings))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**16))
def test_middle_only_is_exactly_middle_fusion_then_the_conv_readout(B, N, h, w, seed):
    torch.manual_seed(seed)
    fusion = HierarchicalFusion(D, C, P, K, middle=True, late=False)
    assert fusion.late is None and fusion.conv_readout is not None
    middle = MiddleFusion(D, P)
    readout = nn.Conv2d(K, 1, kernel_size=1)
    fusion.load_state_dict(
        {f"middle.{name}": value for name, value in middle.state_dict().items()}
        | {f"conv_readout.{name}": value for name, value in readout.state_dict().items()}
    )
    bottleneck = torch.randn(B, C, h, w)
    embeddings = torch.randn(B, N, D)
    assert torch.equal(fusion.fuse_bottleneck(bottleneck, embeddings), middle(bottleneck, embeddings))
    features = torch.randn(B, N, K, 2 * h, 2 * w)
    out = fusion.readout(features, embeddings)
    assert out.shape == (B, N, 2 * h, 2 * w)
    expected = torch.einsum("k,bnkft->bnft", readout.weight[0, :, 0, 0], features) + readout.bias
    assert torch.allclose(out, expected, atol=1e-5)
    # The readout does not see the visual input: only the middle stage does.
    assert torch.equal(fusion.readout(features, torch.randn(B, N, D)), out)


def test_hierarchical_is_middle_fusion_and_late_fusion_with_separate_projections():
    torch.manual_seed(0)
    fusion = HierarchicalFusion(D, C, P, K)
    assert fusion.middle is not None and fusion.late is not None and fusion.conv_readout is None
    assert fusion.late.projection is not None
    middle, late = MiddleFusion(D, P), LateFusion(K, visual_dim=D)
    middle.load_state_dict(fusion.middle.state_dict())
    late.load_state_dict(fusion.late.state_dict())
    bottleneck, embeddings = torch.randn(2, C, 2, 2), torch.randn(2, 3, D)
    decoder = toy_decoder(fusion)
    expected = late(decoder(middle(bottleneck, embeddings).flatten(0, 1)).unflatten(0, (2, 3)), embeddings)
    out = fusion(bottleneck, embeddings, decoder)
    assert torch.equal(out, expected)
    # Proj1 (late) and Proj2 (middle) are two parameters: changing Proj1 leaves the middle stage alone, and back.
    assert fusion.late.projection.weight.data_ptr() != fusion.middle.projection.weight.data_ptr()
    fused = fusion.fuse_bottleneck(bottleneck, embeddings)
    features = torch.randn(2, 3, K, 4, 4)
    readout = fusion.readout(features, embeddings)
    with torch.no_grad():
        fusion.late.projection.weight.add_(1.0)
    assert torch.equal(fusion.fuse_bottleneck(bottleneck, embeddings), fused)
    assert not torch.allclose(fusion.readout(features, embeddings), readout)
    with torch.no_grad():
        fusion.late.projection.weight.sub_(1.0)
        fusion.middle.projection.weight.add_(1.0)
    assert torch.allclose(fusion.readout(features, embeddings), readout)
    assert not torch.allclose(fusion.fuse_bottleneck(bottleneck, embeddings), fused)


@pytest.mark.parametrize(("middle", "late"), SETTINGS)
def test_swapping_two_sources_embeddings_swaps_their_masks(middle, late):
    torch.manual_seed(0)
    fusion = HierarchicalFusion(D, C, P, K, middle=middle, late=late)
    decoder = toy_decoder(fusion)
    bottleneck, embeddings = torch.randn(2, C, 2, 3), torch.randn(2, 3, D)
    out = fusion(bottleneck, embeddings, decoder)
    swapped = fusion(bottleneck, embeddings[:, [2, 1, 0]], decoder)
    assert torch.allclose(swapped, out[:, [2, 1, 0]], atol=1e-6)
    assert not torch.allclose(out[:, 0], out[:, 2])


@pytest.mark.parametrize(("middle", "late"), SETTINGS)
def test_changing_source_1_never_changes_source_0(middle, late):
    """The public HFRA code computed every mask from the last source's features; here each source uses its own."""
    torch.manual_seed(0)
    fusion = HierarchicalFusion(D, C, P, K, middle=middle, late=late)
    decoder = toy_decoder(fusion)
    bottleneck, embeddings = torch.randn(2, C, 2, 3), torch.randn(2, 2, D)
    changed = embeddings.clone()
    changed[:, 1] = torch.randn(2, D)
    out, out_changed = fusion(bottleneck, embeddings, decoder), fusion(bottleneck, changed, decoder)
    assert torch.equal(out_changed[:, 0], out[:, 0])
    assert not torch.allclose(out_changed[:, 1], out[:, 1])


def test_each_stage_uses_the_sources_own_embedding():
    torch.manual_seed(0)
    fusion = HierarchicalFusion(D, C, P, K)
    decoder = toy_decoder(fusion)
    bottleneck, embeddings = torch.randn(2, C, 2, 3), torch.randn(2, 2, D)
    changed = embeddings.clone()
    changed[:, 1] = torch.randn(2, D)

    def masks(middle_embeddings: Tensor, late_embeddings: Tensor) -> Tensor:
        fused = fusion.fuse_bottleneck(bottleneck, middle_embeddings)
        return fusion.readout(decoder(fused.flatten(0, 1)).unflatten(0, fused.shape[:2]), late_embeddings)

    reference = masks(embeddings, embeddings)
    for out in (masks(changed, embeddings), masks(embeddings, changed)):  # change only the middle / only the late input
        assert torch.equal(out[:, 0], reference[:, 0])
        assert not torch.allclose(out[:, 1], reference[:, 1])


def test_late_only_around_the_unet_is_the_shared_feature_late_fusion_baseline():
    """Late only: each source decodes the same bottleneck, which is Sound of Pixels / CLIPSep late fusion."""
    torch.manual_seed(0)
    unet = UNet(depth=2, base_channels=4, max_channels=8, out_channels=K).eval()
    fusion = HierarchicalFusion(D, unet.bottleneck_channels, P, K, middle=False)
    late = LateFusion(K, visual_dim=D)
    late.load_state_dict({name.removeprefix("late."): v for name, v in fusion.state_dict().items()})
    spectrogram, embeddings = torch.randn(2, 1, 8, 8), torch.randn(2, 3, D)
    with torch.no_grad():
        bottleneck, skips = unet.encode(spectrogram)
        out = fusion(bottleneck, embeddings, lambda z: unet.decode(z, [s.repeat_interleave(3, 0) for s in skips]))
        expected = late(unet(spectrogram), embeddings)
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(out, expected, atol=1e-5)


def test_gradients_reach_both_projections():
    fusion = HierarchicalFusion(D, C, P, K)
    decoder = toy_decoder(fusion)
    (fusion(torch.randn(2, C, 2, 2), torch.randn(2, 3, D), decoder) ** 2).sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_shape_errors_are_explained():
    fusion = HierarchicalFusion(D, C, P, K, middle=False)
    with pytest.raises(ValueError, match="bottleneck"):
        fusion.fuse_bottleneck(torch.randn(2, C + 1, 2, 2), torch.randn(2, 3, D))
    with pytest.raises(ValueError, match="visual embeddings"):
        fusion.fuse_bottleneck(torch.randn(2, C, 2, 2), torch.randn(2, 3, D + 1))
    with pytest.raises(ValueError, match="per-source features"):
        fusion.readout(torch.randn(2, K, 4, 4), torch.randn(2, 3, D))
    conv = HierarchicalFusion(D, C, P, K, late=False)
    with pytest.raises(ValueError, match="per-source features"):
        conv.readout(torch.randn(2, 3, K + 1, 4, 4), torch.randn(2, 3, D))
