import pytest
import torch

from avtoolkit.models.separation.query_decoder import AVQueryDecoder


def tiny(**overrides) -> AVQueryDecoder:
    args = dict(
        audio_channels=16, visual_dim=12, mask_channels=8, dim=32, heads=2, ffn_dim=64, encoder_layers=1,
        decoder_layers=1,
    )  # fmt: skip
    args.update(overrides)
    return AVQueryDecoder(**args)


def inputs(B=2, N=3, h=4, w=6, F=16, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, 16, h, w, generator=g),
        torch.randn(B, N, 12, generator=g),
        torch.randn(B, 8, F, T, generator=g),
    )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("encoder_layers", [0, 1, 2])
def test_output_shapes(norm_first, encoder_layers):
    torch.manual_seed(0)
    dec = tiny(norm_first=norm_first, encoder_layers=encoder_layers, decoder_layers=2)
    a, v, s = inputs()
    out = dec(a, v, s)
    assert out.shape == (2, 3, 16, 12) and torch.isfinite(out).all()
    layers = dec.forward_layers(a, v, s)
    assert len(layers) == 2 and all(t.shape == (2, 3, 16, 12) for t in layers)
    torch.testing.assert_close(layers[-1], out)


def test_default_configuration_shapes():
    dec = AVQueryDecoder(audio_channels=256, visual_dim=512)
    assert len(dec.encoder) == 1 and len(dec.decoder) == 4
    out = dec(torch.randn(1, 256, 8, 8), torch.randn(1, 2, 512), torch.randn(1, 32, 64, 64))
    assert out.shape == (1, 2, 64, 64)


def test_mask_is_an_inner_product_with_pixel_features():
    torch.manual_seed(0)
    dec = tiny()
    a, v, s = inputs()
    out = dec(a, v, s)
    # Linear in the pixel features at fixed queries.
    torch.testing.assert_close(dec(a, v, 2 * s + s.flip(2)), 2 * out + out.flip(2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_permuting_sources_permutes_masks(norm_first):
    torch.manual_seed(0)
    dec = tiny(norm_first=norm_first, decoder_layers=3).eval()
    a, v, s = inputs(N=4)
    out = dec(a, v, s)
    for perm in (torch.tensor([1, 0, 2, 3]), torch.tensor([3, 2, 0, 1])):
        torch.testing.assert_close(dec(a, v[:, perm], s), out[:, perm], rtol=1e-5, atol=1e-5)


def test_each_mask_follows_its_own_visual_feature():
    torch.manual_seed(0)
    dec = tiny(decoder_layers=2)
    a, v, s = inputs(N=2)
    out = dec(a, v, s)
    # Swapping the two sources' visual features swaps their masks ...
    torch.testing.assert_close(dec(a, v.flip(1), s), out.flip(1), rtol=1e-5, atol=1e-5)
    # ... identical visual features give identical masks, different ones different masks.
    same = dec(a, v[:, :1].expand(2, 2, 12), s)
    torch.testing.assert_close(same[:, 0], same[:, 1])
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-3)
    # Changing source 1's visual feature changes source 1's mask.
    v2 = v.clone()
    v2[:, 1] = torch.randn(2, 12)
    assert not torch.allclose(dec(a, v2, s)[:, 1], out[:, 1], atol=1e-3)


def test_number_of_sources_can_change_between_calls():
    torch.manual_seed(0)
    dec = tiny(decoder_layers=2)
    a, v, s = inputs(N=3)
    assert dec(a, v[:, :2], s).shape == (2, 2, 16, 12)
    assert dec(a, v, s).shape == (2, 3, 16, 12)
    assert dec(a, v[:, :1], s).shape == (2, 1, 16, 12)


def test_batch_independence():
    torch.manual_seed(0)
    dec = tiny(decoder_layers=2)
    a, v, s = inputs(B=3)
    out = dec(a, v, s)
    torch.testing.assert_close(dec(a[1:2], v[1:2], s[1:2]), out[1:2], rtol=1e-5, atol=1e-5)


def test_audio_positions_matter():
    # The encoder and the cross-attention see where each token is: moving the audio map changes the masks.
    torch.manual_seed(0)
    dec = tiny()
    a, v, s = inputs()
    assert not torch.allclose(dec(a.flip(3), v, s), dec(a, v, s), atol=1e-4)


def test_gradients_reach_visual_audio_and_pixel_features():
    torch.manual_seed(0)
    dec = tiny(decoder_layers=2)
    a, v, s = (t.requires_grad_() for t in inputs())
    sum(out.square().mean() for out in dec.forward_layers(a, v, s)).backward()
    for t in (a, v, s):
        assert t.grad is not None and t.grad.abs().sum() > 0
    for module in (dec.visual_proj, dec.audio_proj):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is not None for p in dec.parameters())


def test_clear_errors():
    dec = tiny()
    a, v, s = inputs()
    with pytest.raises(ValueError, match="visual_dim=12"):
        dec(a, torch.randn(2, 3, 5), s)
    with pytest.raises(ValueError, match="mask_channels=8"):
        dec(a, v, torch.randn(2, 4, 16, 12))
    with pytest.raises(ValueError, match="batch sizes differ"):
        dec(a, v[:1], s)
    with pytest.raises(ValueError, match="divisible by heads"):
        tiny(dim=30, heads=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny(dim=34, heads=2)
    with pytest.raises(ValueError, match="decoder_layers ≥ 1"):
        tiny(decoder_layers=0)


def test_per_source_features_and_pixels():
    """After a per-source fusion each source has its own token map and pixel features (DGFNet)."""
    torch.manual_seed(0)
    dec = tiny()
    B, N = 2, 3
    audio = torch.randn(B, N, 16, 4, 4)
    visual = torch.randn(B, N, 12)
    pixels = torch.randn(B, N, 8, 6, 5)
    out = dec(audio, visual, pixels)
    assert out.shape == (B, N, 6, 5)
    perm = torch.tensor([2, 0, 1])
    permuted = dec(audio[:, perm], visual[:, perm], pixels[:, perm])
    torch.testing.assert_close(permuted, out[:, perm], atol=1e-5, rtol=1e-5)
    # each query reads its own source's tokens only: changing source 2's tokens or picture leaves the others' masks
    changed = audio.clone()
    changed[:, 2] += 1.0
    other_picture = visual.clone()
    other_picture[:, 2] = torch.randn(B, 12)
    for audio_in, visual_in in ((changed, visual), (audio, other_picture)):
        new = dec(audio_in, visual_in, pixels)
        torch.testing.assert_close(new[:, :2], out[:, :2])
        assert not torch.allclose(new[:, 2], out[:, 2])
    # ... and each source's mask is its own one-source decoding
    for n in range(N):
        alone = dec(audio[:, n], visual[:, n : n + 1], pixels[:, n])
        torch.testing.assert_close(alone[:, 0], out[:, n], atol=1e-5, rtol=1e-5)
