import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.fusion.late import LateFusion


def test_late_fusion_is_the_per_channel_inner_product():
    fusion = LateFusion(3)
    with torch.no_grad():
        fusion.scale.copy_(torch.tensor([1.0, 2.0, 0.5]))
        fusion.bias.fill_(0.25)
    audio = torch.randn(2, 3, 4, 5)
    visual = torch.rand(2, 4, 3)
    out = fusion(audio, visual)
    assert out.shape == (2, 4, 4, 5)
    b, n = 1, 2
    expected = sum(fusion.scale[k] * visual[b, n, k] * audio[b, k] for k in range(3)) + 0.25
    assert torch.allclose(out[b, n], expected, atol=1e-6)


def test_each_source_uses_its_own_visual_vector():
    fusion = LateFusion(2)
    audio = torch.randn(1, 2, 3, 3)
    visual = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    out = fusion(audio, visual)
    assert torch.allclose(out[0, 0], audio[0, 0]) and torch.allclose(out[0, 1], audio[0, 1])


# ---------------------------------------------------------------------------------------------------------------------
# Projected visual input (CLIPSep), per-source features (HFRA), checkpoint compatibility.

shapes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "N": st.integers(1, 4),
        "K": st.integers(1, 6),
        "D": st.integers(1, 8),
        "F": st.integers(1, 5),
        "T": st.integers(1, 5),
    }
)


def test_initialisation_and_state_dict_keys_are_unchanged():
    fusion = LateFusion(4)
    assert torch.equal(fusion.scale, torch.ones(4)) and torch.equal(fusion.bias, torch.zeros(1))
    assert set(fusion.state_dict()) == {"scale", "bias"}  # Sound-of-Pixels checkpoints still load
    projected = LateFusion(4, visual_dim=6)
    assert set(projected.state_dict()) == {"scale", "bias", "projection.weight", "projection.bias"}


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_projected_visual_is_sigmoid_linear_then_the_inner_product(s, seed):
    torch.manual_seed(seed)
    fusion = LateFusion(s["K"], visual_dim=s["D"])
    with torch.no_grad():
        fusion.scale.uniform_(-2, 2)
        fusion.bias.uniform_(-1, 1)
    plain = LateFusion(s["K"])
    plain.load_state_dict({"scale": fusion.scale, "bias": fusion.bias})
    audio = torch.randn(s["B"], s["K"], s["F"], s["T"])
    embeddings = torch.randn(s["B"], s["N"], s["D"])
    assert fusion.projection is not None
    v = torch.sigmoid(embeddings @ fusion.projection.weight.T + fusion.projection.bias)
    assert torch.allclose(fusion.project(embeddings), v, atol=1e-6)
    out = fusion(audio, embeddings)
    assert out.shape == (s["B"], s["N"], s["F"], s["T"])
    assert torch.allclose(out, plain(audio, v), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_per_source_features_that_are_all_equal_give_the_shared_result(s, seed):
    torch.manual_seed(seed)
    fusion = LateFusion(s["K"], visual_dim=s["D"])
    audio = torch.randn(s["B"], s["K"], s["F"], s["T"])
    embeddings = torch.randn(s["B"], s["N"], s["D"])
    per_source = audio.unsqueeze(1).expand(-1, s["N"], -1, -1, -1)
    assert torch.allclose(fusion(per_source, embeddings), fusion(audio, embeddings), atol=1e-5)


def test_each_source_reads_only_its_own_per_source_features():
    torch.manual_seed(0)
    fusion = LateFusion(3, visual_dim=5)
    features = torch.randn(2, 3, 3, 4, 4)
    embeddings = torch.randn(2, 3, 5)
    out = fusion(features, embeddings)
    changed = features.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    out_changed = fusion(changed, embeddings)
    assert torch.equal(out_changed[:, 0], out[:, 0]) and torch.equal(out_changed[:, 2], out[:, 2])
    assert not torch.allclose(out_changed[:, 1], out[:, 1])
    expected = sum(fusion.scale[k] * fusion.project(embeddings)[1, 2, k] * features[1, 2, k] for k in range(3))
    assert torch.allclose(out[1, 2], expected + fusion.bias, atol=1e-5)


def test_shape_errors_are_explained():
    fusion = LateFusion(3, visual_dim=5)
    with pytest.raises(ValueError, match="visual input"):
        fusion(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="audio features"):
        fusion(torch.randn(1, 4, 4, 4), torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="sources"):
        fusion(torch.randn(1, 3, 3, 4, 4), torch.randn(1, 2, 5))
