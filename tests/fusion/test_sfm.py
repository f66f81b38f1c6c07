import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from avtoolkit.fusion.sfm import ARS, MSAU, compose_grids, demodulate, identity_grid, invert_grid


def smooth_image(H: int, W: int) -> torch.Tensor:
    """A smooth (low-frequency) test map (1, 1, H, W)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    return (torch.cos(1.5 * xx + 0.3) * torch.sin(1.2 * yy + 0.5))[None, None]


def patch_saliency(H: int, W: int, rows: slice, cols: slice, floor: float) -> torch.Tensor:
    mask = torch.zeros(1, 1, H, W)
    mask[..., rows, cols] = 1.0
    return mask + floor


def warped_grid(n: int, a: float = 0.5, b: float = 0.4) -> torch.Tensor:
    """A smooth, monotone, non-separable grid: ∂x/∂u ≥ 1 − a > 0 and ∂y/∂v ≥ 1 − b > 0 for |u|, |v| ≤ 1."""
    t = identity_grid(1, n, n, dtype=torch.float64)
    u, v = t[..., 0], t[..., 1]
    x = u + a * torch.sin(math.pi * u) * (1 + 0.5 * v) / (1.5 * math.pi)
    y = v + b * torch.sin(math.pi * v) * (1 + 0.5 * u) / (1.5 * math.pi)
    return torch.stack([x, y], dim=-1).float()


def assert_monotone(grid: torch.Tensor) -> None:
    assert (grid[..., 0].diff(dim=2) >= 0).all(), "x decreases along a row"
    assert (grid[..., 1].diff(dim=1) >= 0).all(), "y decreases along a column"


# ---------------------------------------------------------------------------------------------------- grid helpers


def test_identity_grid_is_torchs_pixel_centre_convention():
    grid = identity_grid(2, 3, 5)
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    torch.testing.assert_close(grid, F.affine_grid(theta, [2, 1, 3, 5], align_corners=False))
    torch.testing.assert_close(grid[0, 0, :, 0], torch.tensor([-0.8, -0.4, 0.0, 0.4, 0.8]))
    x = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(F.grid_sample(x, grid, align_corners=False), x, atol=1e-5, rtol=0)


def test_compose_with_identity_is_exact():
    grid = warped_grid(12)
    torch.testing.assert_close(compose_grids(identity_grid(1, 12, 12), grid), grid, atol=1e-6, rtol=0)
    torch.testing.assert_close(compose_grids(grid, identity_grid(1, 12, 12)), grid, atol=1e-6, rtol=0)
    # the identity at another resolution is still the identity (linear extension past the pixel centres)
    torch.testing.assert_close(compose_grids(grid, identity_grid(1, 5, 7)), grid, atol=1e-6, rtol=0)


def test_compose_grids_equals_sampling_twice():
    # On an affine image bilinear sampling is exact inside the pixel-centre hull, so sampling with inner then outer
    # must equal one sampling with the composed grid; grids are scaled by 0.8 to stay inside that hull.
    H = W = 20
    t = identity_grid(1, H, W)
    image = (0.7 * t[..., 0] - 0.4 * t[..., 1] + 0.2)[:, None]
    inner = 0.8 * warped_grid(H)
    outer = 0.8 * warped_grid(H, a=-0.6, b=0.7)
    twice = F.grid_sample(F.grid_sample(image, inner, align_corners=False), outer, align_corners=False)
    once = F.grid_sample(image, compose_grids(outer, inner), align_corners=False)
    torch.testing.assert_close(once, twice, atol=1e-5, rtol=0)


def test_invert_identity_is_identity():
    for out_size in [(9, 9), (4, 6), (17, 13)]:
        inverse = invert_grid(identity_grid(2, 9, 9), out_size=out_size)
        torch.testing.assert_close(inverse, identity_grid(2, *out_size), atol=1e-6, rtol=0)


def test_invert_grid_of_a_smooth_non_separable_grid():
    errors = []
    for n in (32, 64):
        grid = warped_grid(n)
        inverse = invert_grid(grid)
        # G ∘ G⁻¹ = id is what the Newton iterations solve on the bilinear interpolant of G: float32 precision.
        torch.testing.assert_close(compose_grids(inverse, grid), identity_grid(1, n, n), atol=1e-5, rtol=0)
        # G⁻¹ ∘ G ≈ id up to the bilinear interpolation of G⁻¹ between its pixel centres: the error is at most
        # δ²/8 · (|∂²ᵤ| + |∂²ᵥ|) with spacing δ = 2/n; here |∂²G⁻¹| ≤ π·a/(1 − a)³ ≈ 12.6 per direction (a = 0.5).
        error = (compose_grids(grid, inverse) - identity_grid(1, n, n))[:, 2:-2, 2:-2].abs().max().item()
        bound = (2 / n) ** 2 / 8 * 2 * (math.pi * 0.5 / 0.5**3)
        assert error <= bound
        errors.append(error)
    assert errors[1] < errors[0] / 3  # second-order convergence: halving δ divides the error by about 4


def test_invert_separable_grid_is_exact():
    ars = ARS(1, alpha_init=1.0)
    grid = ars.sampling_grid(patch_saliency(24, 24, slice(5, 12), slice(10, 18), floor=0.3))
    inverse = invert_grid(grid, out_size=(48, 40))
    target = identity_grid(1, 48, 40)
    residual = (compose_grids(inverse, grid) - target).abs()
    # the zoom leaves a border band that G never reaches (beyond G(±1)); there the inverse is the nearest end, ±1
    reached = inverse.abs() < 1
    assert reached.float().mean() > 0.8
    assert residual[reached].max() < 1e-5
    assert (inverse[~reached].abs() == 1).all()
    assert ((target - compose_grids(inverse, grid))[~reached] * inverse[~reached] > 0).all()  # target is beyond


# ---------------------------------------------------------------------------------------------------- demodulation


def test_demodulating_identity_modulation_is_identity():
    x = torch.randn(2, 3, 4, 4)
    grids = [identity_grid(2, 16, 16), identity_grid(2, 8, 8), identity_grid(2, 4, 4)]  # as a backbone at 64 px
    torch.testing.assert_close(demodulate(x, grids, (4, 4)), x, atol=1e-5, rtol=0)
    upsampled = F.interpolate(x, size=(16, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(demodulate(x, grids, (16, 12)), upsampled, atol=1e-5, rtol=0)
    assert torch.equal(demodulate(x, [], (16, 12)), upsampled)


def test_demodulation_undoes_ars():
    H = W = 48
    x = smooth_image(H, W)
    ars = ARS(1, alpha_init=1.0)
    ars.saliency = lambda _: patch_saliency(H, W, slice(15, 25), slice(20, 30), floor=0.3)  # type: ignore[method-assign]
    modulated, grid = ars(x)
    restored = demodulate(modulated, [grid], (H, W))
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    plain_error = (modulated - x)[inner].abs().max()
    error = (restored - x)[inner].abs().max()
    # two bilinear resamplings of a map with |∂²x| ≤ 2.25 at spacing ≤ 2/48: error ≲ 2 · δ²/8 · 4.5 ≈ 2e-3
    assert error < 0.01
    assert error < 0.1 * plain_error


def test_demodulation_composes_grids_in_the_order_applied():
    H = W = 48
    x = smooth_image(H, W)
    first, second = ARS(1, alpha_init=1.0), ARS(1, alpha_init=1.0)
    first.saliency = lambda _: patch_saliency(H, W, slice(15, 25), slice(20, 30), 0.3)  # type: ignore[method-assign]
    second.saliency = lambda _: patch_saliency(24, 24, slice(2, 8), slice(14, 20), 0.3)  # type: ignore[method-assign]
    y1, g1 = first(x)
    y2, g2 = second(F.avg_pool2d(y1, 2))  # ARS, a stride-2 layer, ARS again
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))

    def error(grids):
        return (demodulate(y2, grids, (H, W)) - x)[inner].abs().max().item()

    assert error([g1, g2]) < 0.02
    assert error([g1, g2]) < 0.7 * error([g2, g1])
    assert error([g1, g2]) < 0.2 * error([g1])


# ---------------------------------------------------------------------------------------------------- ARS


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**16))
def test_ars_alpha_zero_is_exactly_the_identity(C, H, W, seed):
    torch.manual_seed(seed)
    ars = ARS(C, hidden=4, alpha_init=0.0)
    x = torch.randn(2, C, H, W)
    out, grid = ars(x)
    assert torch.equal(out, x)
    assert torch.equal(grid, identity_grid(2, H, W))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 14),
    st.integers(1, 14),
    st.floats(0.05, 2.0),
    st.floats(0.0, 1.0),
    st.floats(0.1, 8.0),
    st.integers(0, 2**16),
)
def test_ars_grids_are_monotone(C, H, W, sigma, alpha, scale, seed):
    torch.manual_seed(seed)
    ars = ARS(C, hidden=4, sigma=sigma, alpha_init=alpha)
    with torch.no_grad():  # a random saliency network, sharpened by `scale`
        for parameter in ars.saliency_net.parameters():
            parameter.normal_(0, scale)
    x = torch.randn(2, C, H, W) * scale
    out, grid = ars(x)
    assert out.shape == x.shape
    assert grid.shape == (2, H, W, 2)
    assert grid.abs().max() <= 1
    assert_monotone(grid)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 20), st.integers(2, 20), st.floats(0.05, 1.0), st.integers(0, 2**16))
def test_sampling_grid_is_monotone_for_extreme_saliency(H, W, sigma, seed):
    generator = torch.Generator().manual_seed(seed)
    saliency = torch.exp(6 * torch.randn(3, 1, H, W, generator=generator))  # weights over ~5 orders of magnitude
    grid = ARS(1, sigma=sigma).sampling_grid(saliency)
    assert_monotone(grid)
    assert torch.isfinite(grid).all()


def test_uniform_saliency_gives_the_identity_grid():
    # replicated saliency and linearly extended coordinates: no pull of the border samples inwards
    for H, W in [(7, 11), (16, 16), (1, 5)]:
        grid = ARS(1).sampling_grid(torch.full((2, 1, H, W), 0.7))
        torch.testing.assert_close(grid, identity_grid(2, H, W), atol=1e-6, rtol=0)


def test_ars_samples_densely_where_salient():
    H = W = 32
    ars = ARS(1, alpha_init=1.0)
    grid = ars.sampling_grid(patch_saliency(H, W, slice(10, 18), slice(12, 20), floor=0.02))
    spacing_x = grid[0, 0, :, 0].diff() * W / 2  # in input pixels per output pixel; identity = 1
    spacing_y = grid[0, :, 0, 1].diff() * H / 2
    assert spacing_x[12:19].mean() < 0.5 and spacing_y[10:17].mean() < 0.5  # zoomed in more than 2×
    assert grid[0, 0, :, 0].diff()[12:19].mean() < grid[0, 0, :, 0].diff()[:6].mean()


def test_ars_is_trainable():
    torch.manual_seed(0)
    ars = ARS(3, hidden=4)
    out, _ = ars(torch.randn(2, 3, 8, 8))
    out.square().sum().backward()
    assert ars.alpha_raw.grad is not None and ars.alpha_raw.grad != 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ars.saliency_net.parameters())


def test_ars_alpha_is_clamped_to_unit_interval():
    ars = ARS(1, alpha_init=0.3)
    with torch.no_grad():
        ars.alpha_raw.fill_(1.7)
    assert ars.alpha.item() == 1.0
    with torch.no_grad():
        ars.alpha_raw.fill_(-0.2)
    x = torch.randn(1, 1, 5, 6)
    assert torch.equal(ars(x)[0], x)


# ---------------------------------------------------------------------------------------------------- MSAU


def msau_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Predictions (2, 3, 4, 5), an image (2, 3, 16, 20) and features at strides 2 and 4 of it (5 and 6 channels)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 5, generator=generator)
    image = torch.rand(2, 3, 16, 20, generator=generator)
    features = [torch.randn(2, 5, 8, 10, generator=generator), torch.randn(2, 6, 4, 5, generator=generator)]
    return x, image, features


def test_msau_starts_as_the_plain_upsampler():
    torch.manual_seed(0)
    msau = MSAU((5, 6), hidden=8)
    x, image, features = msau_inputs()
    bilinear = F.interpolate(x, size=(16, 20), mode="bilinear", align_corners=False)
    assert torch.equal(msau(x, image, features), bilinear)
    grids = [[identity_grid(2, 16, 20)], [identity_grid(2, 16, 20), identity_grid(2, 8, 10)]]
    assert torch.equal(msau(x, image, features, grids), bilinear)  # γ = 0: whatever guides the kernels
    assert torch.equal(MSAU(hidden=8)(x, image), bilinear)  # the image alone may guide them


def test_msau_guidance_demodulates_each_feature_at_the_output_resolution():
    torch.manual_seed(0)
    msau = MSAU((5, 6), feature_dim=4, hidden=8)
    _, image, features = msau_inputs()
    ars = ARS(3, alpha_init=1.0)
    saliency = patch_saliency(16, 20, slice(4, 10), slice(6, 12), 0.2).expand(2, -1, -1, -1)
    ars.saliency = lambda _: saliency  # type: ignore[method-assign]
    _, grid = ars(image)
    grids = [[grid], [grid]]
    guidance = msau.guidance(image, features, grids)
    assert guidance.shape == (2, 3 + 2 * 4, 16, 20)
    assert torch.equal(guidance[:, :3], image)
    for i, (projection, feature) in enumerate(zip(msau.projections, features, strict=True)):
        expected = demodulate(projection(feature), [grid], (16, 20))  # at the output size, not the feature's
        torch.testing.assert_close(guidance[:, 3 + 4 * i : 3 + 4 * (i + 1)], expected)
    plain = msau.guidance(image, features, [[], []])  # no ARS: bilinear upsampling
    expected = F.interpolate(msau.projections[0](features[0]), size=(16, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(plain[:, 3:7], expected)
    assert not torch.allclose(plain, guidance)


def test_msau_refinement_is_a_convex_reassembly_shared_by_every_map():
    torch.manual_seed(0)
    msau = MSAU((5, 6), kernel_size=3, dilations=(1, 2, 4), hidden=8)
    with torch.no_grad():
        msau.mix.fill_(1.0)
        msau.kernel_heads.weight.normal_(0, 3.0)
        msau.dilation_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x, image, features = msau_inputs()
    upsampled = F.interpolate(x, size=(16, 20), mode="bilinear", align_corners=False)
    out = msau(x, image, features)
    assert not torch.allclose(out, upsampled, atol=1e-3)
    # softmax kernels and softmax dilation weights: every output is a convex combination of upsampled values
    low = upsampled.amin(dim=(-2, -1), keepdim=True)
    high = upsampled.amax(dim=(-2, -1), keepdim=True)
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()
    constant = torch.full((2, 3, 4, 5), 0.37)
    torch.testing.assert_close(msau(constant, image, features), torch.full((2, 3, 16, 20), 0.37), atol=1e-6, rtol=0)
    # the kernels come from the guidance alone: each map is refined alike, whatever the number of maps (queries)
    torch.testing.assert_close(msau(x[:, 1:2], image, features), out[:, 1:2])
    many = torch.cat([x, x.flip(1)], dim=1)
    torch.testing.assert_close(msau(many, image, features)[:, :3], out)


def test_msau_refinement_is_the_reference_unfold_reassembly():
    torch.manual_seed(1)
    msau = MSAU((5, 6), kernel_size=3, dilations=(1, 2), hidden=8)
    with torch.no_grad():
        msau.mix.fill_(0.7)
        msau.kernel_heads.weight.normal_(0, 2.0)
    x, image, features = msau_inputs(seed=1)
    U = F.interpolate(x, size=(16, 20), mode="bilinear", align_corners=False)
    kernels = msau.kernel_heads(msau.encoder(msau.guidance(image, features, [[], []]))).view(2, 2, 9, 16, 20)
    kernels = kernels.softmax(dim=2)
    weights = msau.dilation_logits.softmax(0)
    refined = torch.zeros_like(U)
    for index, d in enumerate((1, 2)):
        patches = F.unfold(F.pad(U, (d, d, d, d), mode="replicate"), 3, dilation=d).view(2, 3, 9, 16, 20)
        refined += weights[index] * (kernels[:, index, None] * patches).sum(2)  # Σ_o W_d(p, o) U(p + d·o)
    torch.testing.assert_close(msau(x, image, features), U + 0.7 * (refined - U))


def test_every_msau_parameter_learns_once_the_mix_is_open():
    torch.manual_seed(0)
    msau = MSAU((5, 6), hidden=8)
    x, image, features = msau_inputs()
    out = msau(x, image, features)
    (out * torch.randn_like(out)).sum().backward()
    assert msau.mix.grad is not None and msau.mix.grad != 0  # γ learns from the start
    msau.zero_grad()
    with torch.no_grad():
        msau.mix.fill_(0.5)
    out = msau(x, image, features)
    (out * torch.randn_like(out)).sum().backward()
    for name, parameter in msau.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: ARS(4, sigma=0.0), "sigma"),
        (lambda: ARS(4, kernel_size=2), "kernel_size"),
        (lambda: ARS(4, alpha_init=1.5), "alpha_init"),
        (lambda: ARS(0), "channels"),
        (lambda: MSAU((2, 3), kernel_size=4), "kernel_size"),
        (lambda: MSAU((2, 3), dilations=()), "dilations"),
        (lambda: MSAU((2, 3), dilations=(1, 0)), "dilations"),
        (lambda: MSAU((2, 0)), "feature_channels"),
        (lambda: identity_grid(1, 0, 3), "h"),
        (lambda: invert_grid(torch.zeros(1, 4, 4, 3)), "grid"),
        (lambda: invert_grid(identity_grid(1, 4, 4), out_size=(0, 4)), "out_size"),
        (lambda: compose_grids(identity_grid(2, 4, 4), identity_grid(1, 4, 4)), "batch size"),
        (lambda: demodulate(torch.zeros(1, 2, 4, 4), [identity_grid(1, 4, 4)], (0, 8)), "size"),
        (lambda: demodulate(torch.zeros(2, 2, 4, 4), [identity_grid(1, 4, 4)], (8, 8)), "grids"),
    ],
)
def test_bad_arguments_raise(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="ARS expects x"):
        ARS(3)(torch.zeros(1, 4, 5, 5))
    msau = MSAU((2,))
    image = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="image"):
        msau(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 8, 8), [torch.zeros(1, 2, 4, 4)])
    with pytest.raises(ValueError, match=r"channels \(2,\)"):
        msau(torch.zeros(1, 2, 4, 4), image, [torch.zeros(1, 3, 4, 4)])
    with pytest.raises(ValueError, match=r"channels \(2,\)"):
        msau(torch.zeros(1, 2, 4, 4), image)  # a feature is missing
    with pytest.raises(ValueError, match="MSAU expects x"):
        msau(torch.zeros(2, 2, 4, 4), image, [torch.zeros(1, 2, 4, 4)])
