import math

import pytest
import torch

from avtoolkit.fusion.fded import FDED, band_names, radial_frequency

# (B, T, C, H, W): odd, non-square, even, T = 1 and T > 1.
SHAPES = [(2, 1, 4, 7, 7), (3, 3, 4, 6, 4), (2, 2, 8, 5, 6), (1, 4, 4, 8, 8)]


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


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("soft", [False, True])
def test_bands_sum_to_the_spectrum_and_to_the_preprocessed_input(shape, soft):
    torch.manual_seed(0)
    fded = FDED(shape[2], "visual", groups=2, soft=soft).double()
    randomise_all_but_enhancement(fded)
    x = torch.randn(*shape, dtype=torch.float64)
    spectrum = torch.fft.fft2(fded.preprocess(x), norm="ortho")
    spectral = fded.split_spectrum(spectrum)
    assert list(spectral) == ["high", "mid", "low", "residual"]
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


@pytest.mark.parametrize("hw", [(7, 7), (6, 4), (5, 6), (8, 8), (1, 9), (1, 1)])
@pytest.mark.parametrize("thresholds", [(0.5, 0.25, 0.125), (0.7,), (0.9, 0.6, 0.4, 0.2, 0.05)])
def test_hard_band_masks_are_disjoint_cover_the_grid_and_follow_the_thresholds(hw, thresholds):
    fded = FDED(4, "visual", thresholds=thresholds)
    shares = fded.band_masks(*hw)
    assert shares.shape == (len(thresholds) + 1, *hw)
    assert ((shares == 0) | (shares == 1)).all()
    assert torch.equal(shares.sum(0), torch.ones(hw))  # disjoint and covering
    r = radial_frequency(*hw)
    edges = (math.inf, *thresholds, -math.inf)
    for i, share in enumerate(shares):  # band i holds exactly τ_i < |ω| ≤ τ_{i−1}; the residual |ω| ≤ τ_N
        assert torch.equal(share.bool(), (r > edges[i + 1]) & (r <= edges[i]))
    assert shares[-1, 0, 0] == 1  # DC is in the residual


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


@pytest.mark.parametrize("attention_pool", ["frame", "clip"])
def test_audio_channel_attention_scales_whole_channels_within_0_and_2(attention_pool):
    torch.manual_seed(4)
    fded = FDED(8, "audio", groups=2, reduction=2, attention_pool=attention_pool).double()
    randomise(enhancement(fded), 3.0)
    high = torch.randn(2, 3, 8, 4, 5, dtype=torch.float64)
    assert fded.attention is not None
    ca = fded.attention(high)
    assert ca.shape == ((2, 3, 8, 1, 1) if attention_pool == "frame" else (2, 1, 8, 1, 1))
    assert ((ca > 0) & (ca < 2)).all()
    assert torch.allclose(fded.enhance(high), ca * high)


@pytest.mark.parametrize("modality", ["visual", "audio"])
@pytest.mark.parametrize("at_init", [True, False])
def test_gradients_reach_recomposition_enhancement_and_threshold_parameters(modality, at_init):
    torch.manual_seed(5)
    fded = FDED(8, modality, groups=2, reduction=2, soft=True)
    if not at_init:
        randomise(fded)
    x = torch.randn(2, 2, 8, 6, 5)
    (fded(x) * torch.randn_like(x)).sum().backward()
    trained = ["weights", "pointwise.weight", "pointwise.bias"]
    trained += ["conv3d.weight"] if modality == "visual" else ["attention.excite.weight", "attention.excite.bias"]
    if not at_init:  # behind the zero-initialised convolutions, gradients flow once those are non-zero
        trained += ["depthwise.weight"] + (["attention.squeeze.weight"] if modality == "audio" else [])
        trained += ["tau"]  # at the start out = Σ_b band_b whatever τ, so τ's gradient is exactly zero there
    parameters = dict(fded.named_parameters())
    for name in trained:
        grad = parameters[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert fded.weights.grad is not None and (fded.weights.grad.abs().sum(1) > 0).all()  # every band's weights


def test_soft_masks_have_learnable_thresholds_and_hard_masks_do_not():
    soft = FDED(4, "visual", soft=True, softness=0.1)
    hard = FDED(4, "visual")
    assert isinstance(soft.tau, torch.nn.Parameter)
    assert "tau" not in dict(hard.named_parameters()) and "tau" in dict(hard.named_buffers())
    shares = soft.band_masks(7, 6)
    assert torch.allclose(shares.sum(0), torch.ones(7, 6))
    assert ((shares > 0) & (shares < 1)).any()  # genuinely soft
    # A soft mask tends to the hard one as the softness goes to zero.
    sharp = FDED(4, "visual", soft=True, softness=1e-6)
    on_an_edge = (radial_frequency(8, 8)[None] == hard.tau[:, None, None]).any(0)  # sigmoid(0) = 1/2 there
    assert on_an_edge.any()
    assert torch.allclose(sharp.band_masks(8, 8)[:, ~on_an_edge], hard.band_masks(8, 8)[:, ~on_an_edge], atol=1e-6)


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


def test_wrong_input_shape_is_a_clear_error():
    fded = FDED(4, "visual")
    with pytest.raises(ValueError, match=r"\(B, T, 4, H, W\)"):
        fded(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, T, 4, H, W\)"):
        fded(torch.randn(2, 1, 3, 5, 5))
