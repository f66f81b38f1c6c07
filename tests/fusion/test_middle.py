import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.fusion.middle import MiddleFusion

shapes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "N": st.integers(1, 4),
        "C": st.integers(1, 6),
        "P": st.integers(1, 6),
        "D": st.integers(1, 8),
        "h": st.integers(1, 4),
        "w": st.integers(1, 4),
    }
)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_bottleneck_then_the_tiled_projection_per_source(s, seed):
    torch.manual_seed(seed)
    fusion = MiddleFusion(s["D"], s["P"])
    bottleneck = torch.randn(s["B"], s["C"], s["h"], s["w"])
    embeddings = torch.randn(s["B"], s["N"], s["D"])
    out = fusion(bottleneck, embeddings)
    assert out.shape == (s["B"], s["N"], fusion.out_channels(s["C"]), s["h"], s["w"])
    assert fusion.out_channels(s["C"]) == s["C"] + s["P"]
    # Enc(X) passes unchanged into every source's copy ...
    assert torch.equal(out[:, :, : s["C"]], bottleneck.unsqueeze(1).expand(-1, s["N"], -1, -1, -1))
    # ... followed by Proj2(e) = sigmoid(Linear(e)), the same at every grid position.
    projected = torch.sigmoid(embeddings @ fusion.projection.weight.T + fusion.projection.bias)
    tiled = out[:, :, s["C"] :]
    assert torch.allclose(tiled, projected[..., None, None].expand_as(tiled), atol=1e-6)
    assert ((tiled > 0) & (tiled < 1)).all()


def test_per_source_bottlenecks_are_accepted():
    fusion = MiddleFusion(5, 2)
    bottleneck = torch.randn(2, 3, 4, 2, 2)
    out = fusion(bottleneck, torch.randn(2, 3, 5))
    assert out.shape == (2, 3, 6, 2, 2) and torch.equal(out[:, :, :4], bottleneck)


def test_swapping_sources_swaps_their_fused_bottlenecks():
    torch.manual_seed(0)
    fusion = MiddleFusion(5, 3)
    bottleneck = torch.randn(2, 4, 2, 2)
    embeddings = torch.randn(2, 3, 5)
    out = fusion(bottleneck, embeddings)
    swapped = fusion(bottleneck, embeddings[:, [1, 0, 2]])
    assert torch.equal(swapped, out[:, [1, 0, 2]])
    assert not torch.equal(out[:, 0], out[:, 1])


def test_gradients_reach_the_projection_and_the_bottleneck():
    fusion = MiddleFusion(5, 3)
    bottleneck = torch.randn(2, 4, 2, 2, requires_grad=True)
    (fusion(bottleneck, torch.randn(2, 3, 5)) ** 2).sum().backward()
    assert fusion.projection.weight.grad is not None and fusion.projection.weight.grad.abs().sum() > 0
    assert bottleneck.grad is not None and bottleneck.grad.abs().sum() > 0


def test_shape_errors_are_explained():
    fusion = MiddleFusion(5, 3)
    with pytest.raises(ValueError, match="visual embeddings"):
        fusion(torch.randn(2, 4, 2, 2), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="bottleneck"):
        fusion(torch.randn(2, 2, 4, 2, 2), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="batch"):
        fusion(torch.randn(1, 4, 2, 2), torch.randn(2, 3, 5))
