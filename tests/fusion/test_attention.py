import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.fusion.attention import BidirectionalCrossAttention, CrossModalAttention, sine_positional_encoding_2d


def detr_sine(height: int, width: int, dim: int, normalize: bool) -> torch.Tensor:
    """DETR's PositionEmbeddingSine (models/position_encoding.py) on an unpadded grid, flattened to (H·W, dim)."""
    num_pos_feats, temperature, scale = dim // 2, 10000, 2 * math.pi
    not_mask = torch.ones(1, height, width)
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    if normalize:
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
    return pos.flatten(2)[0].T


sizes = st.fixed_dictionaries(
    {
        "B": st.integers(1, 3),
        "Lq": st.integers(1, 6),
        "Lc": st.integers(1, 6),
        "heads": st.sampled_from([1, 2, 4]),
        "head_dim": st.sampled_from([2, 4]),
    }
)


# ---------------------------------------------------------------------------------------------------------------------
# sine_positional_encoding_2d


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([4, 8, 16, 32, 64]), st.booleans())
def test_sine_encoding_matches_detr(height, width, dim, normalize):
    out = sine_positional_encoding_2d(height, width, dim, normalize=normalize)
    assert out.shape == (height * width, dim) and out.dtype == torch.float32
    assert torch.allclose(out, detr_sine(height, width, dim, normalize), atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 16), st.integers(1, 16), st.sampled_from([4, 8, 32, 256]))
def test_sine_encoding_is_deterministic_bounded_and_distinct_per_position(height, width, dim):
    out = sine_positional_encoding_2d(height, width, dim)
    assert torch.equal(out, sine_positional_encoding_2d(height, width, dim))
    assert out.abs().max() <= 1
    distances = torch.cdist(out.double(), out.double())
    distances.fill_diagonal_(math.inf)
    assert distances.min() > 1e-2


def test_sine_encoding_layout_dtype_and_errors():
    out = sine_positional_encoding_2d(3, 5, 8, dtype=torch.float64)
    assert out.dtype == torch.float64
    # Row h·W + w encodes (h, w): the first half depends on the row only, the second half on the column only.
    grid = out.reshape(3, 5, 8)
    assert torch.equal(grid[:, :, :4], grid[:, :1, :4].expand(3, 5, 4))
    assert torch.equal(grid[:, :, 4:], grid[:1, :, 4:].expand(3, 5, 4))
    for dim in (0, 6, 10):
        with pytest.raises(ValueError, match="multiple of 4"):
            sine_positional_encoding_2d(2, 2, dim)
    with pytest.raises(ValueError, match="grid"):
        sine_positional_encoding_2d(0, 2, 8)


# ---------------------------------------------------------------------------------------------------------------------
# CrossModalAttention


@settings(max_examples=25, deadline=None)
@given(sizes, st.integers(0, 2**16))
def test_cross_attention_shapes(s, seed):
    torch.manual_seed(seed)
    dim = s["heads"] * s["head_dim"]
    block = CrossModalAttention(dim, heads=s["heads"], ffn_dim=8)
    query, context = torch.randn(s["B"], s["Lq"], dim), torch.randn(s["B"], s["Lc"], dim)
    pos = torch.randn(s["Lc"], dim)
    assert block(query, context, context_pos=pos).shape == (s["B"], s["Lq"], dim)
    both = BidirectionalCrossAttention(dim, heads=s["heads"], ffn_dim=8)
    new_audio, new_visual = both(query, context)
    assert new_audio.shape == query.shape and new_visual.shape == context.shape


def test_identical_keys_give_a_query_independent_update():
    torch.manual_seed(0)
    block = CrossModalAttention(16, heads=4)
    context = torch.randn(2, 1, 16).expand(2, 7, 16)  # every key (and value) the same
    u1 = block.attention_update(torch.randn(2, 5, 16), context, query_pos=torch.randn(5, 16))
    u2 = block.attention_update(torch.randn(2, 5, 16) * 3, context)
    assert torch.allclose(u1, u1[:, :1].expand_as(u1), atol=1e-5)  # the same for every query position ...
    assert torch.allclose(u1, u2, atol=1e-5)  # ... and for any query
    assert not torch.allclose(u1[0], u1[1])  # (but it does depend on the context)
    # The block's residual stream: forward = query + update, then the FFN.
    query = torch.randn(2, 5, 16)
    x = query + block.attention_update(query, context)
    assert torch.allclose(block(query, context), x + block.ffn(block.norm_ffn(x)), atol=1e-6)


def test_the_key_padding_mask_excludes_masked_positions():
    torch.manual_seed(0)
    block = CrossModalAttention(16, heads=4)
    query, context = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    context_pos = torch.randn(6, 16)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 1] = True
    out = block(query, context, context_pos=context_pos, context_padding_mask=mask)
    changed = context.clone()
    changed[mask] = torch.randn(int(mask.sum()), 16) * 10
    assert torch.allclose(block(query, changed, context_pos=context_pos, context_padding_mask=mask), out, atol=1e-6)
    # Without the mask the same change does change the output; an unmasked change does too.
    assert not torch.allclose(
        block(query, changed, context_pos=context_pos), block(query, context, context_pos=context_pos)
    )
    changed[0, 0] = torch.randn(16)  # (not a constant shift: the context LayerNorm removes those)
    assert not torch.allclose(block(query, changed, context_pos=context_pos, context_padding_mask=mask), out)


def test_positional_encodings_are_added_to_queries_and_keys():
    torch.manual_seed(0)
    block = CrossModalAttention(8, heads=2)
    query, context = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    query_pos, context_pos = torch.randn(3, 8), torch.randn(4, 8)
    out = block(query, context, query_pos, context_pos)
    batched = block(query, context, query_pos.expand(2, 3, 8), context_pos.expand(2, 4, 8))
    assert torch.allclose(out, batched, atol=1e-6)
    assert not torch.allclose(out, block(query, context))
    assert not torch.allclose(out, block(query, context, query_pos))


def test_cross_attention_errors():
    with pytest.raises(ValueError, match="divide"):
        CrossModalAttention(10, heads=4)
    block = CrossModalAttention(8, heads=2)
    with pytest.raises(TypeError, match="boolean"):
        block(torch.randn(1, 2, 8), torch.randn(1, 3, 8), context_padding_mask=torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------------------------------
# BidirectionalCrossAttention


def test_bidirectional_updates_both_streams_from_the_inputs():
    torch.manual_seed(0)
    both = BidirectionalCrossAttention(8, heads=2, dropout=0.0)
    audio, visual = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    audio_pos, visual_pos = torch.randn(5, 8), torch.randn(3, 8)
    visual_mask = torch.tensor([[False, False, True], [False, False, False]])
    new_audio, new_visual = both(audio, visual, audio_pos, visual_pos, visual_padding_mask=visual_mask)
    assert torch.equal(new_audio, both.audio_to_visual(audio, visual, audio_pos, visual_pos, visual_mask))
    assert torch.equal(new_visual, both.visual_to_audio(visual, audio, visual_pos, audio_pos))


def test_gradients_flow_to_both_streams_and_both_directions():
    torch.manual_seed(0)
    both = BidirectionalCrossAttention(8, heads=2)
    audio = torch.randn(2, 5, 8, requires_grad=True)
    visual = torch.randn(2, 3, 8, requires_grad=True)
    new_audio, _ = both(audio, visual)
    (new_audio**2).sum().backward()
    assert visual.grad is not None and visual.grad.abs().sum() > 0  # audio read from the visual stream
    audio.grad, visual.grad = None, None
    _, new_visual = both(audio, visual)
    (new_visual**2).sum().backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0  # visual read from the audio stream
    both.zero_grad()
    new_audio, new_visual = both(audio, visual)
    ((new_audio**2).sum() + (new_visual**2).sum()).backward()
    for name, parameter in both.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
