import pytest
import torch

from avtoolkit.models.separation.unet import UNet


def test_paper_unet_shapes():
    net = UNet()
    bottleneck, skips = net.encode(torch.randn(1, 1, 256, 256))
    assert bottleneck.shape == (1, 512, 2, 2)
    assert [s.shape[1] for s in skips] == [64, 128, 256, 512, 512, 512]
    assert net.decode(bottleneck, skips).shape == (1, 32, 256, 256)


def test_output_is_a_plain_conv_and_can_be_negative():
    net = UNet(depth=3, base_channels=4, max_channels=8, out_channels=5)
    assert isinstance(net.up[0][-1], torch.nn.Conv2d)
    out = net(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 5, 16, 16) and (out < 0).any()


def test_size_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 8"):
        UNet(depth=3, base_channels=4, max_channels=8)(torch.randn(1, 1, 20, 16))


def test_gradients_reach_every_parameter():
    net = UNet(depth=3, base_channels=4, max_channels=8, out_channels=3)
    net(torch.randn(2, 1, 16, 16)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
