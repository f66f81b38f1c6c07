import torch

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
