import math

import pytest
import torch

from avtoolkit.models.segmentation.pixel_decoder import MSDeformAttnPixelDecoder, MultiScaleDeformableAttention


def levels_input(shapes, N=2, dim=8, seed=0):
    """Value, spatial shapes and level starts for levels of the given (H, W) sizes."""
    g = torch.Generator().manual_seed(seed)
    sizes = [h * w for h, w in shapes]
    value = torch.randn(N, sum(sizes), dim, generator=g)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    starts = torch.tensor([sum(sizes[:i]) for i in range(len(shapes))], dtype=torch.long)
    return value, spatial_shapes, starts


def pixel_centres(height, width):
    """(H·W, 2) normalised (x, y) centres of the pixels, row-major."""
    y, x = torch.meshgrid((torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def fixed_offsets(attention, dx, dy):
    """Every head, level and point samples (dx, dy) pixels away from its reference point."""
    with torch.no_grad():
        attention.sampling_offsets.weight.zero_()
        pairs = attention.sampling_offsets.out_features // 2
        attention.sampling_offsets.bias.copy_(torch.tensor([dx, dy]).repeat(pairs))


def projected(attention, value):
    """What a query reading exactly one position of ``value`` returns: W_o W' x."""
    return attention.output_proj(attention.value_proj(value))


def test_zero_offset_at_a_pixel_centre_reads_that_pixel():
    torch.manual_seed(0)
    H, W = 3, 5
    attention = MultiScaleDeformableAttention(dim=8, levels=1, heads=2, points=1)
    fixed_offsets(attention, 0.0, 0.0)
    value, shapes, starts = levels_input([(H, W)])
    query = torch.randn(2, H * W, 8)  # any query: one level and one point give weight 1
    reference = pixel_centres(H, W)[None, :, None, :].expand(2, -1, 1, -1)
    out = attention(query, reference, value, shapes, starts)
    torch.testing.assert_close(out, projected(attention, value), rtol=1e-5, atol=1e-5)


def test_offsets_are_x_y_pixels_of_each_level_and_outside_reads_zero():
    torch.manual_seed(0)
    H, W = 4, 5  # non-square: swapping x and y, or H and W, would read other pixels
    attention = MultiScaleDeformableAttention(dim=8, levels=1, heads=2, points=1)
    fixed_offsets(attention, 1.0, 2.0)
    value, shapes, starts = levels_input([(H, W)], N=1)
    reference = pixel_centres(H, W)[None, :, None, :]
    out = attention(torch.randn(1, H * W, 8), reference, value, shapes, starts).view(H, W, 8)
    grid = projected(attention, value).view(H, W, 8)
    torch.testing.assert_close(out[: H - 2, : W - 1], grid[2:, 1:], rtol=1e-5, atol=1e-5)  # pixel (i + 2, j + 1)
    zero_value = attention.output_proj.bias.expand(H, W, 8)  # W_o · 0 + b: zero padding outside the map
    torch.testing.assert_close(out[H - 2 :], zero_value[H - 2 :])
    torch.testing.assert_close(out[:, W - 1 :], zero_value[:, W - 1 :])


def test_half_pixel_offset_interpolates_bilinearly():
    torch.manual_seed(0)
    H, W = 3, 4
    attention = MultiScaleDeformableAttention(dim=8, levels=1, heads=4, points=1)
    fixed_offsets(attention, 0.5, 0.25)
    value, shapes, starts = levels_input([(H, W)], N=1)
    out = attention(torch.randn(1, 1, 8), pixel_centres(H, W)[None, :1, None, :], value, shapes, starts)
    v = attention.value_proj(value)[0].view(H, W, 8)  # from pixel (0, 0): x + 0.5, y + 0.25
    mixed = 0.75 * (0.5 * v[0, 0] + 0.5 * v[0, 1]) + 0.25 * (0.5 * v[1, 0] + 0.5 * v[1, 1])
    torch.testing.assert_close(out[0, 0], attention.output_proj(mixed), rtol=1e-5, atol=1e-5)


def test_attention_weights_sum_to_one_over_levels_and_points():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(dim=16, levels=3, heads=4, points=2)
    torch.nn.init.normal_(attention.attention_weights.weight)  # away from the uniform start
    torch.nn.init.normal_(attention.attention_weights.bias)
    shapes = torch.tensor([[2, 3], [4, 6], [8, 12]])
    query = torch.randn(2, 5, 16)
    locations, weights = attention.sampling(query, torch.rand(2, 5, 3, 2), shapes)
    assert locations.shape == (2, 5, 4, 3, 2, 2) and weights.shape == (2, 5, 4, 3, 2)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=(-2, -1)), torch.ones(2, 5, 4))
    assert weights.std() > 0.01  # not the uniform start

    # Consequence in the output: a constant value map returns W_o W' v whatever the (inside-the-map) weights.
    value = torch.randn(16).expand(1, 4 * 4 + 8 * 8, 16)
    big = torch.tensor([[4, 4], [8, 8]])
    two_level = MultiScaleDeformableAttention(dim=16, levels=2, heads=4, points=1)  # ring init: 1 pixel away
    torch.nn.init.normal_(two_level.attention_weights.weight)
    centre = torch.full((1, 3, 2, 2), 0.5)
    out = two_level(torch.randn(1, 3, 16), centre, value, big, torch.tensor([0, 16]))
    torch.testing.assert_close(out, projected(two_level, value[:, :3]), rtol=1e-5, atol=1e-5)


def test_deformable_detr_initialisation():
    M, L, P = 8, 3, 4
    attention = MultiScaleDeformableAttention(dim=32, levels=L, heads=M, points=P)
    ring = attention.sampling_offsets.bias.detach().view(M, L, P, 2)
    radius = ring.abs().amax(dim=-1)  # points lie on squares of radius k + 1 pixels
    torch.testing.assert_close(radius, torch.arange(1.0, P + 1).expand(M, L, P))
    angles = torch.atan2(ring[:, 0, 0, 1], ring[:, 0, 0, 0]) % (2 * math.pi)
    torch.testing.assert_close(angles, torch.arange(M) * (2 * math.pi / M))
    assert torch.equal(ring, ring[:, :1].expand_as(ring))  # same ring on every level
    _, weights = attention.sampling(torch.randn(1, 2, 32), torch.rand(1, 2, L, 2), torch.tensor([[2, 2]] * L))
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / (L * P)))  # uniform at start


def test_gradients_reach_offsets_and_attention_weights():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(dim=16, levels=2, heads=2, points=3)
    value, shapes, starts = levels_input([(3, 5), (6, 10)], dim=16)
    out = attention(torch.randn(2, 4, 16), torch.rand(2, 4, 2, 2), value, shapes, starts)
    (out * torch.randn_like(out)).sum().backward()
    for layer in (attention.sampling_offsets, attention.attention_weights):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        assert layer.bias.grad is not None and layer.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("shapes", [[(2, 3), (4, 6), (8, 12)], [(3, 2), (6, 4), (12, 8)], [(1, 7), (2, 13), (5, 3)]])
def test_output_shape_does_not_depend_on_the_level_shapes(shapes):
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(dim=16, levels=3, heads=4, points=2)
    value, spatial_shapes, starts = levels_input(shapes, dim=16)
    out = attention(torch.randn(2, 7, 16), torch.rand(2, 7, 3, 2), value, spatial_shapes, starts)
    assert out.shape == (2, 7, 16) and torch.isfinite(out).all()


def test_padded_values_are_not_read():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(dim=8, levels=2, heads=2, points=2)
    value, shapes, starts = levels_input([(3, 4), (6, 8)])
    mask = torch.zeros(2, value.shape[1], dtype=torch.bool)
    mask[:, 5:9] = True
    mask[1, 20:40] = True
    query, reference = torch.randn(2, 6, 8), torch.rand(2, 6, 2, 2)
    out = attention(query, reference, value, shapes, starts, mask)
    changed = attention(query, reference, value + 100.0 * mask[..., None], shapes, starts, mask)
    torch.testing.assert_close(changed, out)
    assert not torch.allclose(attention(query, reference, value, shapes, starts), out)


def test_deformable_attention_bad_arguments():
    for args in (dict(dim=10, heads=4), dict(levels=0), dict(points=0), dict(heads=0)):
        with pytest.raises(ValueError):
            MultiScaleDeformableAttention(**args)
    attention = MultiScaleDeformableAttention(dim=8, levels=2, heads=2, points=1)
    value, shapes, starts = levels_input([(2, 2), (4, 4)])
    query, reference = torch.randn(2, 3, 8), torch.rand(2, 3, 2, 2)
    with pytest.raises(ValueError, match="level_start_index"):
        attention(query, reference, value, shapes, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="value"):
        attention(query, reference, value[:, :-1], shapes, starts)
    with pytest.raises(ValueError, match="reference_points"):
        attention(query, reference[:, :, :1], value, shapes, starts)
    with pytest.raises(ValueError, match="query"):
        attention(query[..., :4], reference, value, shapes, starts)
    with pytest.raises(ValueError, match="value_padding_mask"):
        attention(query, reference, value, shapes, starts, torch.zeros(2, 20))


IN_CHANNELS = [4, 6, 8, 10]


def backbone_maps(height, width, N=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    strides = (4, 8, 16, 32)
    return [torch.randn(N, c, height // s, width // s, generator=g) for c, s in zip(IN_CHANNELS, strides, strict=True)]


def tiny_decoder(encoder_layers=1, dim=32, **overrides):
    torch.manual_seed(0)
    args = dict(in_channels=IN_CHANNELS, dim=dim, mask_dim=16, encoder_layers=encoder_layers, heads=4, points=2,
                ffn_dim=64)  # fmt: skip
    args.update(overrides)
    return MSDeformAttnPixelDecoder(**args)


@pytest.mark.parametrize("encoder_layers", [1, 2])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 96)])
def test_pixel_decoder_shapes(height, width, encoder_layers):
    decoder = tiny_decoder(encoder_layers)
    mask_features, multi_scale = decoder(backbone_maps(height, width))
    assert mask_features.shape == (2, 16, height // 4, width // 4)
    assert [tuple(x.shape) for x in multi_scale] == [(2, 32, height // s, width // s) for s in (32, 16, 8)]
    assert all(torch.isfinite(x).all() for x in [mask_features, *multi_scale])


def test_without_encoder_layers_the_outputs_are_the_projections_and_the_fpn():
    decoder = tiny_decoder(encoder_layers=0)
    maps = backbone_maps(64, 96)
    mask_features, multi_scale = decoder(maps)
    for projection, level, out in zip(decoder.input_proj, maps[:0:-1], multi_scale, strict=True):
        torch.testing.assert_close(out, projection(level))  # strides 32, 16, 8
    lateral = decoder.lateral_conv(maps[0])
    up = torch.nn.functional.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(mask_features, decoder.mask_features(decoder.output_conv(lateral + up)))


def test_pixel_decoder_treats_samples_independently():
    decoder = tiny_decoder(encoder_layers=2).eval()
    for layer in decoder.encoder:  # leave the zero-offset start, so that queries move their sampling points
        torch.nn.init.normal_(layer.self_attention.sampling_offsets.weight, std=0.1)
        torch.nn.init.normal_(layer.self_attention.attention_weights.weight, std=0.1)
    maps = backbone_maps(64, 96, N=3)
    mask_features, multi_scale = decoder(maps)
    single_mask, single_scales = decoder([x[1:2] for x in maps])
    torch.testing.assert_close(single_mask, mask_features[1:2], rtol=1e-4, atol=1e-5)
    for single, batched in zip(single_scales, multi_scale, strict=True):
        torch.testing.assert_close(single, batched[1:2], rtol=1e-4, atol=1e-5)


def test_pixel_decoder_gradients_reach_the_inputs_and_parameters():
    decoder = tiny_decoder(encoder_layers=1)
    maps = [x.requires_grad_() for x in backbone_maps(64, 64)]
    mask_features, multi_scale = decoder(maps)
    loss = (mask_features * torch.randn_like(mask_features)).sum()
    loss = loss + sum((x * torch.randn_like(x)).sum() for x in multi_scale)
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in maps)
    for name, parameter in decoder.named_parameters():
        if name == "level_embed":
            continue  # enters only through the zero-initialised offset and weight projections: no gradient at start
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_positions_steer_the_sampling_once_offsets_depend_on_the_query():
    decoder = tiny_decoder(encoder_layers=1)
    attention = decoder.encoder[0].self_attention
    torch.nn.init.normal_(attention.sampling_offsets.weight, std=0.1)
    maps = backbone_maps(64, 96)
    mask_features, _ = decoder(maps)
    (mask_features * torch.randn_like(mask_features)).sum().backward()
    assert decoder.level_embed.grad is not None and decoder.level_embed.grad.abs().sum() > 0
    with torch.no_grad():
        decoder.level_embed.add_(1.0)
    assert not torch.allclose(decoder(maps)[0], mask_features)


@pytest.mark.parametrize(("dim", "groups"), [(32, 32), (24, 8), (64, 32), (12, 4)])
def test_group_norm_groups_are_gcd_with_32(dim, groups):
    decoder = tiny_decoder(encoder_layers=0, dim=dim)
    norms = [m for m in decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 5 and all(norm.num_groups == groups for norm in norms)


def test_reference_points_are_pixel_centres_on_every_level():
    points = MSDeformAttnPixelDecoder.reference_points([(2, 3), (1, 2)])
    assert points.shape == (8, 2, 2)
    torch.testing.assert_close(points[:, 0], points[:, 1])
    expected = torch.tensor([[1 / 6, 1 / 4], [3 / 6, 1 / 4], [5 / 6, 1 / 4], [1 / 6, 3 / 4], [3 / 6, 3 / 4],
                             [5 / 6, 3 / 4], [1 / 4, 1 / 2], [3 / 4, 1 / 2]])  # fmt: skip
    torch.testing.assert_close(points[:, 0], expected)


def test_pixel_decoder_bad_arguments():
    bad = [
        dict(in_channels=[4, 6, 8]),
        dict(in_channels=[4, 6, 8, 0]),
        dict(dim=30, heads=3),  # not a multiple of 4
        dict(dim=32, heads=3),  # heads do not divide dim
        dict(encoder_layers=-1),
        dict(dropout=1.0),
        dict(mask_dim=0),
    ]
    for overrides in bad:
        with pytest.raises(ValueError):
            tiny_decoder(**overrides)
    decoder = tiny_decoder()
    maps = backbone_maps(64, 64)
    with pytest.raises(ValueError, match="four maps"):
        decoder(maps[:3])
    with pytest.raises(ValueError, match="in_channels"):
        decoder([maps[0][:, :3], *maps[1:]])
    with pytest.raises(ValueError, match="same N"):
        decoder([maps[0][:1], *maps[1:]])
