import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.fusion.gating import GatedFusion

shapes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "N": st.integers(1, 3),
        "C": st.integers(1, 6),
        "D": st.integers(1, 6),
        "H": st.integers(1, 5),
        "W": st.integers(1, 5),
        "gate": st.sampled_from(["element", "channel"]),
        "shared": st.booleans(),
    }
)


def randomise_gate(fusion: GatedFusion, scale: float = 1.0) -> None:
    with torch.no_grad():
        fusion.gate_conv.weight.normal_(0, scale)
        fusion.gate_conv.bias.normal_(0, scale)


def inputs(B=2, N=3, C=4, D=5, H=3, W=4, shared=False):
    features = torch.randn(B, C, H, W) if shared else torch.randn(B, N, C, H, W)
    return features, torch.randn(B, N, D)


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_shapes_and_gate_range(s, seed):
    torch.manual_seed(seed)
    fusion = GatedFusion(s["C"], s["D"], gate=s["gate"])
    randomise_gate(fusion, 3.0)
    features, visual = inputs(s["B"], s["N"], s["C"], s["D"], s["H"], s["W"], s["shared"])
    out, sigma = fusion(features, visual)
    assert out.shape == sigma.shape == (s["B"], s["N"], s["C"], s["H"], s["W"])
    assert ((sigma >= 0) & (sigma <= 1)).all()
    # out = σ ⊙ F_av + (1 − σ) ⊙ F_mid, with F_mid expanded per source when shared.
    f_mid = features.unsqueeze(1).expand_as(out) if s["shared"] else features
    f_av = fusion.visual_audio(features, visual)
    assert torch.allclose(out, sigma * f_av + (1 - sigma) * f_mid, atol=1e-6)


def test_the_gate_starts_half_open():
    fusion = GatedFusion(4, 5)
    _, sigma = fusion(*inputs())
    assert torch.equal(sigma, torch.full_like(sigma, 0.5))
    assert torch.equal(fusion.gate_conv.bias, torch.zeros(4))


def test_visual_audio_features_are_the_1x1_conv_over_the_concatenation():
    torch.manual_seed(0)
    fusion = GatedFusion(4, 5)
    features, visual = inputs()
    projected = visual @ fusion.visual_projection.weight.T + fusion.visual_projection.bias  # W_o · o
    tiled = projected[..., None, None].expand(-1, -1, -1, *features.shape[-2:])
    literal = torch.nn.functional.conv2d(
        torch.cat([features, tiled], dim=2).flatten(0, 1), fusion.fuse.weight, fusion.fuse.bias
    ).unflatten(0, (2, 3))
    assert torch.allclose(fusion.visual_audio(features, visual), literal, atol=1e-5)


@pytest.mark.parametrize("gate", ["element", "channel"])
@pytest.mark.parametrize("shared", [False, True])
def test_a_closed_gate_returns_the_audio_features_and_an_open_gate_the_audio_visual_ones(gate, shared):
    torch.manual_seed(0)
    fusion = GatedFusion(4, 5, gate=gate)
    randomise_gate(fusion)
    features, visual = inputs(shared=shared)
    f_mid = features.unsqueeze(1).expand(-1, 3, -1, -1, -1) if shared else features
    with torch.no_grad():
        fusion.gate_conv.bias.fill_(-1e4)
    out, sigma = fusion(features, visual)
    assert sigma.max() < 1e-6
    assert torch.allclose(out, f_mid, atol=1e-6, rtol=0)
    with torch.no_grad():
        fusion.gate_conv.bias.fill_(1e4)
    out, sigma = fusion(features, visual)
    assert sigma.min() > 1 - 1e-6
    assert torch.allclose(out, fusion.visual_audio(features, visual), atol=1e-6, rtol=0)


@pytest.mark.parametrize("gate", ["element", "channel"])
def test_the_gate_changes_the_output(gate):
    """The public DGFNet fork overwrote the gated output with F_av (a no-op gate); here σ is used."""
    torch.manual_seed(0)
    fusion = GatedFusion(4, 5, gate=gate)
    randomise_gate(fusion, 0.1)
    features, visual = inputs()
    out, sigma = fusion(features, visual)
    f_av = fusion.visual_audio(features, visual)
    assert sigma.min() > 0.05 and sigma.max() < 0.95  # a non-trivial gate ...
    assert not sigma.allclose(sigma.mean().expand_as(sigma))  # ... that is not a constant ...
    assert not torch.allclose(out, f_av, atol=1e-3)  # ... gives neither F_av ...
    assert not torch.allclose(out, features, atol=1e-3)  # ... nor F_mid
    with torch.no_grad():
        fusion.gate_conv.bias.add_(1.0)  # opening the gate moves the output towards F_av
    out_open, _ = fusion(features, visual)
    assert (out_open - f_av).abs().mean() < (out - f_av).abs().mean()


def test_channel_gates_are_constant_over_space_and_element_gates_are_not():
    torch.manual_seed(0)
    features, visual = inputs(H=5, W=6)
    channel = GatedFusion(4, 5, gate="channel")
    randomise_gate(channel)
    _, sigma = channel(features, visual)
    assert torch.equal(sigma, sigma[..., :1, :1].expand_as(sigma))
    element = GatedFusion(4, 5, gate="element")
    randomise_gate(element)
    _, sigma = element(features, visual)
    assert not torch.allclose(sigma, sigma[..., :1, :1].expand_as(sigma))


@pytest.mark.parametrize("gate", ["element", "channel"])
def test_gradients_reach_the_gate_and_the_visual_projection(gate):
    torch.manual_seed(0)
    fusion = GatedFusion(4, 5, gate=gate)  # from the half-open initialisation (zero gate weights)
    features, visual = inputs()
    features.requires_grad_(True)
    visual.requires_grad_(True)
    out, _ = fusion(features, visual)
    ((out - torch.randn_like(out)) ** 2).mean().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert visual.grad is not None and visual.grad.abs().sum() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_shared_features_equal_the_same_features_given_per_source():
    torch.manual_seed(0)
    fusion = GatedFusion(4, 5)
    randomise_gate(fusion)
    features, visual = inputs(shared=True)
    out, sigma = fusion(features, visual)
    out_per_source, sigma_per_source = fusion(features.unsqueeze(1).expand(-1, 3, -1, -1, -1), visual)
    assert torch.allclose(out, out_per_source, atol=1e-6) and torch.allclose(sigma, sigma_per_source, atol=1e-6)


def test_each_source_uses_its_own_visual_feature():
    torch.manual_seed(0)
    fusion = GatedFusion(4, 5)
    randomise_gate(fusion)
    features, visual = inputs(shared=True)
    out, sigma = fusion(features, visual)
    changed = visual.clone()
    changed[:, 1] = torch.randn(2, 5)
    out_changed, sigma_changed = fusion(features, changed)
    assert torch.equal(out_changed[:, 0], out[:, 0]) and torch.equal(sigma_changed[:, 0], sigma[:, 0])
    assert not torch.allclose(out_changed[:, 1], out[:, 1])
    assert not torch.allclose(sigma_changed[:, 1], sigma[:, 1])


def test_errors_are_explained():
    with pytest.raises(ValueError, match="gate"):
        GatedFusion(4, 5, gate="spatial")  # type: ignore[arg-type]
    fusion = GatedFusion(4, 5)
    with pytest.raises(ValueError, match="visual features"):
        fusion(torch.randn(2, 4, 3, 3), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="audio features"):
        fusion(torch.randn(2, 2, 4, 3, 3), torch.randn(2, 3, 5))
