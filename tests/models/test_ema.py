import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.models.separation.ema import EMAttention, ResidualEMA


@pytest.mark.parametrize(
    ("channels", "groups", "h", "w"),
    [(32, 8, 16, 16), (64, 8, 8, 4), (16, 4, 5, 7), (8, 1, 3, 3), (12, 12, 6, 2), (512, 8, 4, 4), (32, 8, 1, 1)],
)
def test_shapes_and_weight_range(channels, groups, h, w):
    torch.manual_seed(0)
    block = EMAttention(channels, groups)
    x = torch.randn(2, channels, h, w)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    a = block.attention_weights(x)
    assert a.shape == (2, groups, h, w)
    # A = σ(Y1 + Y2): strictly inside (0, 1) ...
    assert (a > 0).all() and (a < 1).all()
    # ... so the block only shrinks its input, keeping the sign: |EMA(x)| ≤ |x|.
    assert (y.abs() <= x.abs()).all() and (y * x >= 0).all()
    # Every channel of a group is multiplied by the group's one spatial map.
    assert torch.allclose(y, x * a.repeat_interleave(channels // groups, dim=1))


def test_channels_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by groups"):
        EMAttention(30, 8)
    with pytest.raises(ValueError, match="built for 16 channels"):
        EMAttention(16, 4)(torch.randn(1, 8, 4, 4))


@settings(max_examples=15, deadline=None)
@given(group=st.integers(0, 3), other=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_groups_are_processed_independently(group, other, seed):
    torch.manual_seed(seed)
    block = EMAttention(16, 4)
    x = torch.randn(2, 16, 6, 5)
    x2 = x.clone()
    x2[:, other * 4 : (other + 1) * 4] = torch.randn(2, 4, 6, 5) * 3
    y, y2 = block(x), block(x2)
    sl = slice(group * 4, (group + 1) * 4)
    if group != other:
        torch.testing.assert_close(y[:, sl], y2[:, sl], rtol=0, atol=0)
    else:
        assert not torch.allclose(y[:, sl], y2[:, sl])


def test_permuting_groups_permutes_outputs():
    # The convs and GroupNorm are shared by all groups, so the block is equivariant to a permutation of groups.
    torch.manual_seed(0)
    block = EMAttention(24, 6)
    x = torch.randn(3, 24, 7, 9)
    perm = torch.randperm(6)
    channel_perm = (perm[:, None] * 4 + torch.arange(4)).flatten()
    torch.testing.assert_close(block(x[:, channel_perm]), block(x)[:, channel_perm])


def test_batch_independence_and_train_eval_agree():
    torch.manual_seed(0)
    block = EMAttention(32, 8)
    x = torch.randn(4, 32, 8, 12)
    y = block(x)
    x2 = x.clone()
    x2[1:] = torch.randn(3, 32, 8, 12) * 5
    torch.testing.assert_close(block(x2)[0], y[0], rtol=0, atol=0)
    torch.testing.assert_close(block(x[2:3]), y[2:3], rtol=1e-5, atol=1e-6)
    # No batch statistics: eval mode gives the same output.
    torch.testing.assert_close(block.eval()(x), y)


def test_non_square_maps_use_h_and_w_separately():
    # H ≠ W: the H- and W-pooled descriptors have different lengths; transposing the input is not a symmetry.
    torch.manual_seed(0)
    block = EMAttention(16, 4)
    x = torch.randn(1, 16, 4, 10)
    assert block(x).shape == (1, 16, 4, 10)
    assert block(x.transpose(2, 3)).shape == (1, 16, 10, 4)
    assert not torch.allclose(block(x.transpose(2, 3)).transpose(2, 3), block(x))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    block = EMAttention(16, 4)
    x = torch.randn(2, 16, 6, 10, requires_grad=True)
    (block(x) * torch.randn(2, 16, 6, 10)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_residual_block_is_identity_at_init_and_learns():
    torch.manual_seed(0)
    block = ResidualEMA(16, 4)
    x = torch.randn(2, 16, 6, 10)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    block(x).square().sum().backward()
    assert block.scale.grad is not None and block.scale.grad.abs().sum() > 0
    # Once γ ≠ 0 (after a step), the attention's parameters receive gradients too.
    block.zero_grad()
    with torch.no_grad():
        block.scale.fill_(0.5)
    (block(x) * torch.randn_like(x)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    plain = ResidualEMA(16, 4, init_scale=1.0)
    torch.testing.assert_close(plain(x), x + plain.attention(x))
