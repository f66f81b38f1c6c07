import copy
import math

import pytest
import torch

from avtoolkit.fusion.fded import FDED, ChannelAttention, band_names, radial_frequency

# (B, T, C, H, W): odd, non-square, even, T = 1 and T > 1.
SHAPES = [(2, 1, 4, 7, 7), (3, 3, 4, 6, 4), (2, 2, 8, 5, 6), (1, 4, 4, 8, 8)]
GRIDS = [(7, 7), (6, 4), (5, 6), (8, 8), (1, 9), (9, 1), (1, 1)]


def randomise(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, scale)


def randomise_all_but_enhancement(fded: FDED) -> None:
    randomise(fded.depthwise)
    randomise(fded.pointwise)
    with torch.no_grad():
        fded.weights.uniform_(0.5, 1.5)


def enhancement(fded: FDED) -> torch.nn.Module:
    module = fded.conv3d if fded.modality == "visual" else fded.attention
    assert module is not None
    return module


def band_edges(fded: FDED) -> list[float]:
    """τ_0 = ∞, τ_1, ..., τ_N, −∞: band i holds τ_{i+1} < |ω| ≤ τ_i (the residual last)."""
    return [math.inf, *fded.tau.tolist(), -math.inf]


def split_of_ones(fded: FDED, height: int, width: int, onesided: bool) -> torch.Tensor:
    """The share of each bin that ``split_spectrum`` puts in each band: the split of an all-ones spectrum."""
    ones = torch.ones(height, width // 2 + 1 if onesided else width, dtype=torch.complex64)
    split = fded.split_spectrum(ones, width=width if onesided else None)
    assert list(split) == list(fded.names)
    return torch.stack([band.real for band in split.values()])


def checkerboard(channel: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``(-1)^(h + w)`` in one channel, 0 elsewhere: the corner bin only, |ω| = 1, all in the high band."""
    height, width = shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    x = torch.zeros(shape, dtype=torch.float64)
    x[:, :, channel] = (-1.0) ** (rows + cols)
    return x


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("onesided", [False, True])
def test_bands_sum_to_the_spectrum_and_to_the_preprocessed_input(shape, soft, onesided):
    torch.manual_seed(0)
    fded = FDED(shape[2], "visual", groups=2, soft=soft).double()
    randomise_all_but_enhancement(fded)
    x = torch.randn(*shape, dtype=torch.float64)
    width = shape[-1]
    if onesided:
        spectrum = torch.fft.rfft2(fded.preprocess(x), norm="ortho")
        spectral = fded.split_spectrum(spectrum, width=width)
    else:
        spectrum = torch.fft.fft2(fded.preprocess(x), norm="ortho")
        spectral = fded.split_spectrum(spectrum)
    assert list(spectral) == ["high", "mid", "low", "residual"]
    assert all(band.shape == spectrum.shape for band in spectral.values())
    assert torch.allclose(sum(spectral.values()), spectrum, atol=1e-10, rtol=0)
    if not soft:  # hard masks: each bin lands in one band, bit for bit
        assert torch.equal(sum(spectral.values()), spectrum)
    bands = fded.bands(x)
    assert all(b.shape == shape and b.dtype == torch.float64 for b in bands.values())
    assert torch.allclose(sum(bands.values()), fded.preprocess(x), atol=1e-10, rtol=0)
    assert not torch.allclose(fded.preprocess(x), x)  # the pre-processing did something


def test_spatial_bands_of_a_real_input_are_real():
    torch.manual_seed(0)
    fded = FDED(4, "audio", groups=1).double()
    x = torch.randn(2, 2, 4, 6, 5, dtype=torch.float64)
    for band in fded.split_spectrum(torch.fft.fft2(x, norm="ortho")).values():
        assert torch.fft.ifft2(band, norm="ortho").imag.abs().max() < 1e-12


def test_split_spectrum_checks_the_width_of_a_half_spectrum():
    fded = FDED(4, "visual")
    with pytest.raises(ValueError, match="columns"):
        fded.split_spectrum(torch.ones(6, 6, dtype=torch.complex64), width=6)  # rfft2 of width 6 has 4 columns


@pytest.mark.parametrize("hw", GRIDS)
@pytest.mark.parametrize("thresholds", [(0.5, 0.25, 0.125), (0.7,), (0.9, 0.6, 0.4, 0.2, 0.05)])
@pytest.mark.parametrize("onesided", [False, True])
def test_hard_bands_are_disjoint_cover_the_grid_and_follow_the_thresholds(hw, thresholds, onesided):
    # Through split_spectrum itself (the path bands() and forward() run): the split of an all-ones spectrum.
    fded = FDED(4, "visual", thresholds=thresholds)
    shares = split_of_ones(fded, *hw, onesided)
    assert shares.shape == (len(thresholds) + 1, hw[0], hw[1] // 2 + 1 if onesided else hw[1])
    assert ((shares == 0) | (shares == 1)).all()
    assert torch.equal(shares.sum(0), torch.ones(shares.shape[1:]))  # disjoint and covering
    r = radial_frequency(*hw, onesided=onesided)
    edges = band_edges(fded)
    for i, share in enumerate(shares):  # band i holds exactly τ_i < |ω| ≤ τ_{i−1}; the residual |ω| ≤ τ_N
        assert torch.equal(share.bool(), (r > edges[i + 1]) & (r <= edges[i]))
    assert shares[-1, 0, 0] == 1  # DC is in the residual


@pytest.mark.parametrize("hw", GRIDS)
def test_the_bands_of_a_delta_hold_the_bins_of_their_band(hw):
    # bands() end to end (rfft2, split, irfft2): a unit impulse has a flat spectrum, so each of its bands is the
    # inverse transform of the band's indicator, on the full fft2 grid (both halves of the Hermitian spectrum).
    fded = FDED(2, "visual", thresholds=(0.7, 0.4, 0.2), groups=1).double()
    delta = torch.zeros(1, 1, 2, *hw, dtype=torch.float64)
    delta[..., 0, 0] = 1
    r = radial_frequency(*hw, dtype=torch.float64)
    edges = band_edges(fded)
    bands = fded.bands(delta)
    for i, (name, band) in enumerate(bands.items()):
        indicator = ((r > edges[i + 1]) & (r <= edges[i])).to(torch.complex128)
        assert torch.allclose(torch.fft.fft2(band), indicator.expand_as(band), atol=1e-12), name
    assert torch.allclose(sum(bands.values()), delta, atol=1e-12)


def test_radial_frequency_normalisations():
    for hw in [(7, 7), (6, 5), (8, 4), (1, 9)]:
        r = radial_frequency(*hw, radius="grid")
        assert r[0, 0] == 0 and r.max() == pytest.approx(1.0) and r.min() == 0
        assert torch.equal(r, torch.roll(r.flip(0, 1), (1, 1), (0, 1)))  # |ω| = |−ω|
    even = (8, 6)
    assert torch.allclose(radial_frequency(*even, radius="grid"), radial_frequency(*even, radius="nyquist"))
    # Odd grids hold no Nyquist bin: only the grid normalisation reaches 1 there.
    assert radial_frequency(7, 7, radius="nyquist").max() == pytest.approx(3 / 7 / 0.5)
    # Nyquist along one axis of an 8×8 grid: 0.5 / sqrt(0.5)
    assert radial_frequency(8, 8, radius="nyquist")[0, 4] == pytest.approx(0.5 / math.sqrt(0.5))
    assert torch.equal(radial_frequency(1, 1), torch.zeros(1, 1))


@pytest.mark.parametrize("hw", [*GRIDS, (6, 7), (4, 2), (2, 2)])
@pytest.mark.parametrize("radius", ["grid", "nyquist"])
def test_the_half_spectrum_radial_frequency_is_the_full_one_at_the_same_bins(hw, radius):
    height, width = hw
    half = radial_frequency(height, width, radius, onesided=True)
    assert half.shape == (height, width // 2 + 1)
    assert torch.equal(half, radial_frequency(height, width, radius)[:, : width // 2 + 1])


def test_each_band_recovers_its_own_cosine():
    # On an 8×8 grid |ω| of a horizontal cosine with k cycles is (k / 8) / sqrt(0.5): k = 4 → 0.71 (high),
    # k = 2 → 0.35 (mid), k = 1 → 0.18 (low), the constant → 0 (residual).
    fded = FDED(2, "audio", groups=1).double()
    w = torch.arange(8, dtype=torch.float64)
    components = {
        name: torch.cos(2 * math.pi * k * w / 8).expand(1, 1, 2, 8, 8) * (k + 1)
        for name, k in [("high", 4), ("mid", 2), ("low", 1), ("residual", 0)]
    }
    bands = fded.bands(sum(components.values()))
    for name, component in components.items():
        assert torch.allclose(bands[name], component, atol=1e-12), name


@pytest.mark.parametrize("modality", ["visual", "audio"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fded_is_the_identity_at_initialisation(modality, shape, dtype):
    torch.manual_seed(1)
    fded = FDED(shape[2], modality).to(dtype)
    x = torch.randn(*shape, dtype=dtype)
    out = fded(x)
    assert out.shape == x.shape and out.dtype == dtype
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(out, x, atol=atol, rtol=0)
    assert torch.equal(fded.enhance(fded.bands(x)["high"]), fded.bands(x)["high"])


@pytest.mark.parametrize("modality", ["visual", "audio"])
@pytest.mark.parametrize("attention_pool", ["frame", "clip"])
def test_the_enhancement_acts_only_through_the_high_band(modality, attention_pool):
    torch.manual_seed(2)
    shape = (2, 3, 4, 7, 6)
    base = FDED(4, modality, attention_pool=attention_pool).double()
    with torch.no_grad():
        base.weights.uniform_(0.5, 1.5)
    enhanced = FDED(4, modality, attention_pool=attention_pool).double()
    enhanced.load_state_dict(base.state_dict())
    randomise(enhancement(enhanced), 0.5)

    # A constant input has only DC, so an empty high band: the enhancement cannot touch it.
    constant = torch.randn(2, 3, 4, 1, 1, dtype=torch.float64).expand(shape)
    assert base.bands(constant)["high"].abs().max() < 1e-12
    assert torch.allclose(enhanced(constant), base(constant), atol=1e-12, rtol=0)
    assert torch.allclose(enhanced(constant), base.weights[-1][:, None, None] * constant, atol=1e-12, rtol=0)

    # In general (pre-processing on too) the output differs by w_high ⊙ (F̂_h − F_h) and by nothing else.
    randomise_all_but_enhancement(base)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith(("conv3d", "attention"))}
    enhanced.load_state_dict(state, strict=False)
    x = torch.randn(*shape, dtype=torch.float64)
    high = base.bands(x)["high"]
    assert torch.equal(enhanced.bands(x)["high"], high)
    difference = enhanced(x) - base(x)
    w_high = base.weights[0][:, None, None]
    expected = w_high * (enhanced.enhance(high) - high)
    assert expected.abs().max() > 1e-3  # the perturbation is visible
    assert torch.allclose(difference, expected, atol=1e-12, rtol=0)


def test_visual_enhancement_is_a_residual_3d_convolution_over_time_and_space():
    torch.manual_seed(3)
    fded = FDED(4, "visual").double()
    randomise(enhancement(fded))
    high = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    assert fded.conv3d is not None
    expected = torch.nn.functional.conv3d(high.permute(0, 2, 1, 3, 4), fded.conv3d.weight, padding=1)
    assert torch.allclose(fded.enhance(high), expected.permute(0, 2, 1, 3, 4) + high, atol=1e-12)
    # Frames talk to each other: changing frame 0 changes the enhanced frame 1.
    other = high.clone()
    other[:, 0] += 1
    assert not torch.allclose(fded.enhance(other)[:, 1], fded.enhance(high)[:, 1])


def audio_fded_with_random_attention(attention_pool: str) -> tuple[FDED, ChannelAttention]:
    torch.manual_seed(4)
    fded = FDED(8, "audio", groups=2, reduction=1, attention_pool=attention_pool).double()
    randomise(enhancement(fded), 1.0)
    assert fded.attention is not None
    return fded, fded.attention


@pytest.mark.parametrize("attention_pool", ["frame", "clip"])
def test_audio_channel_attention_squeezes_the_high_band_by_its_energy(attention_pool):
    fded, attention = audio_fded_with_random_attention(attention_pool)
    x = torch.randn(2, 3, 8, 6, 5, dtype=torch.float64) * torch.linspace(0.2, 2, 6, dtype=torch.float64).view(
        2, 3, 1, 1, 1
    )  # frames of different loudness
    high = fded.bands(x)["high"]
    assert high.mean(dim=(-2, -1)).abs().max() < 1e-12  # no DC: the band's mean is 0, its energy is not
    ca = attention(high)
    assert ca.shape == ((2, 3, 8, 1, 1) if attention_pool == "frame" else (2, 1, 8, 1, 1))
    assert ((ca > 0) & (ca < 2)).all()
    assert torch.allclose(fded.enhance(high), ca * high)
    # One attention vector per frame (or clip), and it differs between frames (clips) of different loudness.
    assert ca.flatten(0, 1).std(dim=0).max() > 1e-2
    # CA = 2 · sigmoid(W₂ ReLU(W₁ z + b₁) + b₂) with z the RMS of each channel over the pooled axes.
    dims = (-2, -1) if attention_pool == "frame" else (1, -2, -1)
    z = torch.sqrt(high.square().mean(dim=dims, keepdim=True) + attention.eps)[..., 0, 0]
    excite, squeeze = attention.excite, attention.squeeze
    expected = 2 * torch.sigmoid(excite(torch.relu(squeeze(z))))
    assert torch.allclose(ca[..., 0, 0], expected, atol=1e-12)


@pytest.mark.parametrize("attention_pool", ["frame", "clip"])
def test_audio_channel_attention_follows_the_content_of_the_high_band(attention_pool):
    fded, attention = audio_fded_with_random_attention(attention_pool)
    # The real high band of an input and of the same input 10 times louder.
    x = torch.randn(2, 3, 8, 6, 5, dtype=torch.float64)
    quiet, loud = fded.bands(x)["high"], fded.bands(10 * x)["high"]
    assert (attention(quiet) - attention(loud)).abs().max() > 0.1
    # High bands of the same energy in different channels: the attention tells the channels apart.
    in_channel_0, in_channel_1 = checkerboard(0, (1, 2, 8, 6, 6)), checkerboard(1, (1, 2, 8, 6, 6))
    high_0, high_1 = fded.bands(in_channel_0)["high"], fded.bands(in_channel_1)["high"]
    assert torch.allclose(high_0, in_channel_0, atol=1e-12) and torch.allclose(high_1, in_channel_1, atol=1e-12)
    assert (attention(high_0) - attention(high_1)).abs().max() > 0.1


@pytest.mark.parametrize("modality", ["visual", "audio"])
@pytest.mark.parametrize("attention_pool", ["frame", "clip"])
def test_every_parameter_gets_a_gradient_with_hard_masks(modality, attention_pool):
    torch.manual_seed(5)
    fded = FDED(8, modality, groups=2, reduction=2, attention_pool=attention_pool).double()  # valid τ, hard
    randomise(fded)  # the zero-initialised layers made non-zero, as after a few optimiser steps
    assert "tau" not in dict(fded.named_parameters())
    assert torch.equal(fded.tau, torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64))
    x = torch.randn(2, 2, 8, 12, 10, dtype=torch.float64)  # a grid on which every band holds some bins
    (fded(x) * torch.randn_like(x)).sum().backward()
    names = {"weights", "depthwise.weight", "depthwise.bias", "pointwise.weight", "pointwise.bias"}
    if modality == "visual":
        names |= {"conv3d.weight"}
    else:
        names |= {f"attention.{layer}.{kind}" for layer in ("squeeze", "excite") for kind in ("weight", "bias")}
    parameters = dict(fded.named_parameters())
    assert set(parameters) == names
    for name, parameter in parameters.items():
        assert parameter.grad is not None and parameter.grad.abs().max() > 1e-4, name
    assert (fded.weights.grad.abs().sum(1) > 0).all()  # every band's weights


def test_gradients_at_initialisation_reach_the_recomposition_and_enhancement():
    for modality in ("visual", "audio"):
        torch.manual_seed(5)
        fded = FDED(8, modality, groups=2, reduction=2)
        x = torch.randn(2, 2, 8, 6, 5)
        (fded(x) * torch.randn_like(x)).sum().backward()
        trained = ["weights", "pointwise.weight", "pointwise.bias"]
        trained += ["conv3d.weight"] if modality == "visual" else ["attention.excite.weight", "attention.excite.bias"]
        parameters = dict(fded.named_parameters())
        for name in trained:
            grad = parameters[name].grad
            assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_soft_thresholds_stay_valid_under_large_optimiser_steps(direction):
    # Push every threshold down (direction 1) or up (−1) with huge steps: they stay in (0, 1), strictly ordered.
    fded = FDED(4, "visual", thresholds=(0.6, 0.3, 0.1), soft=True)
    optimiser = torch.optim.SGD(fded.parameters(), lr=10.0)
    for _ in range(200):
        optimiser.zero_grad()
        (direction * 1e3 * fded.tau.sum()).backward()
        optimiser.step()
        tau = fded.tau.detach()
        assert torch.isfinite(tau).all() and (tau > 0).all() and (tau < 1).all(), tau
        assert (tau[1:] < tau[:-1]).all(), tau
    moved = fded.tau.detach()
    assert (moved < torch.tensor([0.6, 0.3, 0.1])).all() if direction > 0 else (moved > 0.6).all()
    x = torch.randn(1, 2, 4, 7, 6)
    assert torch.allclose(sum(fded.bands(x).values()), x, atol=1e-5)  # the split still sums back


def test_soft_thresholds_get_a_gradient_once_the_band_weights_differ():
    torch.manual_seed(6)
    fded = FDED(8, "audio", groups=2, soft=True, softness=0.1).double()
    assert fded.tau_logits is not None
    x = torch.randn(2, 2, 8, 7, 6, dtype=torch.float64)
    target = torch.randn_like(x)
    # At the start out = Σ_b band_b = X whatever τ: τ's gradient is zero there.
    (fded(x) * target).sum().backward()
    assert fded.tau_logits.grad is not None and fded.tau_logits.grad.abs().max() < 1e-10
    fded.zero_grad()
    with torch.no_grad():
        fded.weights.uniform_(0.5, 1.5)
    (fded(x) * target).sum().backward()
    assert fded.tau_logits.grad is not None and (fded.tau_logits.grad.abs() > 1e-6).all()


def test_soft_masks_have_learnable_thresholds_and_hard_masks_do_not():
    soft = FDED(4, "visual", thresholds=(0.7, 0.3, 0.05), soft=True, softness=0.1)
    hard = FDED(4, "visual", thresholds=(0.7, 0.3, 0.05))
    assert isinstance(soft.tau_logits, torch.nn.Parameter) and "tau_logits" in dict(soft.named_parameters())
    assert "tau" not in dict(soft.named_buffers()) and "tau" not in soft.state_dict()
    assert hard.tau_logits is None and "tau" not in dict(hard.named_parameters())
    assert "tau" in dict(hard.named_buffers()) and "tau" in hard.state_dict()
    assert torch.allclose(soft.tau, hard.tau, atol=1e-6, rtol=0)  # starts at the given thresholds
    assert soft.tau.requires_grad and not hard.tau.requires_grad
    shares = split_of_ones(soft, 7, 6, onesided=True)
    assert torch.allclose(shares.sum(0), torch.ones(7, 4))
    assert ((shares > 0) & (shares < 1)).any()  # genuinely soft
    # A soft mask tends to the hard one as the softness goes to zero.
    sharp = FDED(4, "visual", soft=True, softness=1e-6)
    default = FDED(4, "visual")
    assert torch.equal(sharp.tau, default.tau)  # the octave thresholds are exact: sigmoid(0) = 1/2
    on_an_edge = (radial_frequency(8, 8)[None] == default.tau[:, None, None]).any(0)  # sigmoid(0) = 1/2 there
    assert on_an_edge.any()
    soft_shares, hard_shares = split_of_ones(sharp, 8, 8, False), split_of_ones(default, 8, 8, False)
    assert torch.allclose(soft_shares[:, ~on_an_edge], hard_shares[:, ~on_an_edge], atol=1e-6)


@pytest.mark.parametrize("modality", ["visual", "audio"])
def test_under_bf16_autocast_the_decomposition_runs_in_float32(modality):
    torch.manual_seed(7)
    fded = FDED(8, modality, groups=2)
    x = torch.randn(2, 3, 8, 7, 6)
    x16 = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out16 = fded(x), fded(x16)
        bands, bands16 = fded.bands(x), fded.bands(x16)
    # The output (and the bands) keep the input's dtype.
    assert out.dtype == torch.float32 and all(band.dtype == torch.float32 for band in bands.values())
    assert out16.dtype == torch.bfloat16 and all(band.dtype == torch.bfloat16 for band in bands16.values())
    # Identity at the start, to float32 rounding for a float32 input and to bf16 rounding for a bf16 one.
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(out16.float(), x16.float(), atol=2e-2, rtol=1.6e-2)
    # Each bf16 band is the exact band rounded to bf16 (within one bf16 step): the split ran in float32.
    exact = copy.deepcopy(fded).double().bands(x16.double())
    for name, band in bands16.items():
        torch.testing.assert_close(band.double(), exact[name].bfloat16().double(), atol=1e-5, rtol=2**-7)
    # With the pre-processing on (its convolutions in bf16), the float32 bands sum back to X to float32 rounding.
    randomise_all_but_enhancement(fded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preprocessed, bands = fded.preprocess(x), fded.bands(x)
    assert not torch.allclose(preprocessed, x, atol=1e-2)
    torch.testing.assert_close(sum(bands.values()), preprocessed, atol=1e-5, rtol=0)
    # A bf16 model without autocast runs too (torch.fft has no bf16) and returns bf16.
    assert fded.bfloat16()(x16).dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("modality", ["visual", "audio"])
def test_on_cuda_under_bf16_autocast_the_block_runs_in_the_input_dtype(modality):
    torch.manual_seed(8)
    fded = FDED(8, modality, groups=2).cuda()
    x = torch.randn(2, 3, 8, 7, 6, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, out16 = fded(x), fded(x.bfloat16())
        bands = fded.bands(x)
    assert out.dtype == torch.float32 and out16.dtype == torch.bfloat16
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(out16.float(), x.bfloat16().float(), atol=2e-2, rtol=1.6e-2)
    torch.testing.assert_close(sum(bands.values()), x, atol=1e-5, rtol=0)


def test_band_names():
    assert band_names(1) == ("high",)
    assert band_names(2) == ("high", "low")
    assert band_names(3) == ("high", "mid", "low")
    assert band_names(5) == ("high", "mid1", "mid2", "mid3", "low")
    fded = FDED(4, "audio", thresholds=(0.6, 0.2))
    assert set(fded.bands(torch.randn(1, 1, 4, 5, 5))) == {"high", "low", "residual"}
    assert torch.allclose(fded(torch.ones(1, 2, 4, 3, 3)), torch.ones(1, 2, 4, 3, 3), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"thresholds": (0.25, 0.5)}, "thresholds"),
        ({"thresholds": (0.5, 0.5)}, "thresholds"),
        ({"thresholds": (1.5, 0.5)}, "thresholds"),
        ({"thresholds": (0.5, 0.0)}, "thresholds"),
        ({"thresholds": ()}, "thresholds"),
        ({"soft": True, "thresholds": (1.0, 0.5)}, "thresholds"),  # a learnable τ stays below 1
        ({"soft": True, "thresholds": (0.5, 1e-9)}, "thresholds"),  # a ratio sigmoid(a) cannot reach
        ({"groups": 3}, "groups"),
        ({"groups": 0}, "groups"),
        ({"channels": 0}, "channels"),
        ({"modality": "video"}, "modality"),
        ({"reduction": 0}, "reduction"),
        ({"soft": True, "softness": 0.0}, "softness"),
        ({"radius": "max"}, "radius"),
        ({"attention_pool": "time"}, "attention_pool"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_the_argument(kwargs, argument):
    arguments = {"channels": 4, "modality": "visual"} | kwargs
    with pytest.raises(ValueError, match=argument):
        FDED(**arguments)


def test_hard_thresholds_may_reach_1():
    fded = FDED(4, "visual", thresholds=(1.0, 0.5))  # an empty high band: nothing lies above the corner bin
    x = torch.randn(1, 1, 4, 6, 6)
    assert torch.equal(fded.bands(x)["high"], torch.zeros_like(x))


def test_wrong_input_shape_is_a_clear_error():
    fded = FDED(4, "visual")
    with pytest.raises(ValueError, match=r"\(B, T, 4, H, W\)"):
        fded(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, T, 4, H, W\)"):
        fded(torch.randn(2, 1, 3, 5, 5))
