"""SFM plug-ins: adaptive resampling (ARS), grid inversion and demodulation, multi-scale adaptive upsampling (MSAU).

"Spatial Frequency Modulation for Semantic Segmentation" (Chen et al., TPAMI 2025), whose public code is a README
only: the equations below are our concrete reading of it, every choice a constructor argument. High
frequencies alias when a stride-2 layer downsamples them. ARS resamples a feature map densely where its content is
salient (a local zoom), so the stride-2 layer that follows sees those frequencies lowered; MSAU maps the backbone's
features back to the regular geometry at the output resolution (demodulation) and upsamples the low-resolution
prediction with content-aware reassembly kernels predicted from them.

Grids follow ``torch.nn.functional.grid_sample``: ``(N, H, W, 2)``, x (column) then y (row), normalised to
``[-1, 1]`` with ``align_corners=False`` (pixel ``j`` of a width-``W`` map sits at ``(2j + 1) / W − 1``).

ARS, on ``X ∈ R^{N×C×H×W}``:

    A      = sigmoid(g(X)),   Â = A / mean_{H,W}(A)                          (1)  g = conv k×k → ReLU → conv 1×1
    a_x(j) = mean_i Â(i, j),  a_y(i) = mean_j Â(i, j)                        (2)  column / row marginals
    x(j)   = Σ_j' a_x(j') κ(j − j') c(j') / Σ_j' a_x(j') κ(j − j')           (3)  saliency-weighted mean coordinate
    y(i)   = Σ_i' a_y(i') κ(i − i') c(i') / Σ_i' a_y(i') κ(i − i')           (3)
    G      = (1 − α) G_id + α clamp(G_s, −1, 1),  G_s(i, j) = (x(j), y(i))   (4)  α ∈ [0, 1]
    X̃      = grid_sample(X, G)                                               (5)

``κ(d) = exp(−d² / 2σ_p²)`` for ``|d| ≤ ⌈3σ_p⌉`` (0 beyond) is a Gaussian whose width ``σ`` is given in normalised
units (``σ_p = σ · W / 2`` pixels along x, ``σ · H / 2`` along y), so one ``σ`` zooms alike at every stage.
``c(j') = (2j' + 1) / W − 1`` are the pixel coordinates, extended linearly past the border where the marginal is
replicated: a uniform saliency gives exactly the identity grid, with no pull of the border samples inwards.

Order preservation: for output positions inside one window, (3) is the mean of ``c`` under the weights
``a(j') e^{−j'²/2σ_p²} e^{j j'/σ_p²}``, an exponential family in ``j``, so ``dx/dj = Cov(c(j'), j') / σ_p² ≥ 0``
(``c`` increases with ``j'``); moving the window right only drops the smallest and adds the largest coordinates.
Hence ``x`` is non-decreasing along a row and ``y`` along a column; clamping and the convex blend (4) keep that.
The separable construction (x from the column marginal, y from the row marginal) makes each axis a 1-D problem.

Demodulation: ARS grids ``G_1, …, G_n`` applied in that order (finest first) make a map of the last modulated
geometry sample the regular geometry at the composed grid, and the regular map is recovered with its inverse:

    C     = G_1 ∘ G_2 ∘ … ∘ G_n                                               (6)
    Y_reg = grid_sample(Y, C⁻¹)                                               (7)

MSAU, on low-resolution predictions ``Y ∈ R^{N×K×h×w}`` (any number of maps: class scores or per-query masks), the
image ``I ∈ R^{N×3×H×W}`` and the backbone's multi-scale features ``X_1, …, X_n`` as the backbone returns them
(``X_i`` computed after the ARS grids ``G_i = (G_i1, …)``, in the modulated geometry):

    D_i    = demodulate(P_i X_i, G_i, (H, W))     (bilinear upsampling where G_i is empty)   (8)
    U      = Up(Y)                                (bilinear, to H × W)                       (8)
    h      = ReLU(conv3×3([I; D_1; …; D_n]))                                                 (9)
    W_d    = softmax_{k²}(conv1×1_d(h))                     per dilation d                   (10)
    R_d(p) = Σ_o W_d(p, o) U(p + d·o),   o ∈ {−⌊k/2⌋, …, ⌊k/2⌋}²                             (11)
    R      = Σ_d softmax(β)_d R_d                                                            (12)
    out    = U + γ (R − U),   γ = 0 at initialisation                                        (13)

``P_i`` is a 1×1 projection to a few channels (linear, so it commutes with the resampling and makes (8) cheap).
Resolutions: the features are demodulated *at the output resolution* (8), where the zoom pays off: the densely
sampled regions of ``X_i`` cover many output pixels. Demodulating at ``X_i``'s own resolution and then upsampling
throws the gain away (the regular low-resolution grid cannot hold what the zoom kept). The kernels are predicted
from the guidance only (image and demodulated features, as CARAFE predicts them from content features) and applied
to every map of ``Y`` alike, so MSAU can refine each query mask of a mask-classification network on the path its
training loss sees.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_TRUNCATE = 3.0  # the Gaussian κ of (3) is cut at this many σ_p


def identity_grid(
    n: int, h: int, w: int, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """The grid of no resampling: the pixel centres in ``grid_sample``'s convention (``align_corners=False``).

    Args:
        n: Batch size.
        h: Rows of the grid.
        w: Columns of the grid.
        device: Device of the result.
        dtype: Floating-point type of the result (default: torch's default dtype).

    Returns:
        ``(n, h, w, 2)``: ``[..., 0] = (2j + 1) / w − 1`` (x, column ``j``), ``[..., 1] = (2i + 1) / h − 1`` (y).
    """
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"identity_grid needs n, h and w to be positive, got n={n}, h={h}, w={w}")
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    x = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    y = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
    return grid[None].expand(n, h, w, 2).contiguous()


def _check_grid(grid: Tensor, argument: str) -> None:
    if grid.dim() != 4 or grid.shape[-1] != 2:
        raise ValueError(f"{argument} must be a grid (N, H, W, 2), got shape {tuple(grid.shape)}")
    if not grid.is_floating_point():
        raise ValueError(f"{argument} must be a floating-point grid, got dtype {grid.dtype}")


def _sample_field(field: Tensor, points: Tensor, jacobian: bool = False) -> tuple[Tensor, Tensor | None]:
    """Bilinear interpolation of a 2-vector field at normalised points, extrapolated linearly past the border.

    ``field`` ``(N, h, w, 2)`` holds values at the pixel centres of an ``h × w`` map; ``points`` ``(N, H, W, 2)``.
    Outside the centres the edge cells are extended linearly (``grid_sample`` would clamp instead), so an affine
    field, the identity grid among them, is reproduced exactly everywhere. A single row or column is extended with
    the identity's spacing. Returns the values ``(N, H, W, 2)`` and, if asked, the Jacobian
    ``∂value_a / ∂point_b`` ``(N, H, W, 2, 2)`` of the interpolant.
    """
    N, h, w, _ = field.shape
    if w == 1:
        field = torch.cat([field, field + field.new_tensor([2.0 / w, 0.0])], dim=2)
    if h == 1:
        field = torch.cat([field, field + field.new_tensor([0.0, 2.0 / h])], dim=1)
    we = field.shape[2]
    u = ((points[..., 0] + 1) * w - 1) / 2  # pixel coordinates (column, row)
    v = ((points[..., 1] + 1) * h - 1) / 2
    j0 = u.floor().clamp(0, we - 2)
    i0 = v.floor().clamp(0, field.shape[1] - 2)
    fu = (u - j0)[..., None]  # not clamped: linear extrapolation past the edge cells
    fv = (v - i0)[..., None]
    base = (i0.long() * we + j0.long()).reshape(N, -1, 1)
    index = torch.cat([base, base + 1, base + we, base + we + 1], dim=-1).reshape(N, -1, 1).expand(-1, -1, 2)
    corners = field.reshape(N, -1, 2).gather(1, index).reshape(*points.shape[:-1], 4, 2)
    c00, c01, c10, c11 = corners.unbind(dim=-2)
    top = c00 + fu * (c01 - c00)
    bottom = c10 + fu * (c11 - c10)
    value = top + fv * (bottom - top)
    if not jacobian:
        return value, None
    d_u = (1 - fv) * (c01 - c00) + fv * (c11 - c10)  # ∂value/∂u
    d_v = bottom - top  # ∂value/∂v
    jac = torch.stack([d_u * (w / 2), d_v * (h / 2)], dim=-1)  # u = ((x + 1)w − 1)/2 ⇒ ∂u/∂x = w/2
    return value, jac


def _invert_profile(profile: Tensor, targets: Tensor) -> Tensor:
    """Invert a non-decreasing 1-D coordinate profile by linear interpolation (linear extrapolation at the ends).

    ``profile`` ``(N, L)`` holds normalised coordinates at the ``L`` pixel centres, ``targets`` ``(N, M)``; returns
    the normalised positions ``(N, M)`` where the piecewise-linear profile reaches the targets, clamped to [−1, 1].
    """
    L = profile.shape[-1]
    if L == 1:
        profile = torch.cat([profile, profile + 2.0 / L], dim=-1)
    upper = profile.shape[-1] - 2
    index = torch.searchsorted(profile.contiguous(), targets.contiguous())
    j0 = (index - 1).clamp(0, upper)
    a0 = profile.gather(-1, j0)
    a1 = profile.gather(-1, j0 + 1)
    fraction = (targets - a0) / (a1 - a0).clamp_min(torch.finfo(profile.dtype).eps)
    u = j0.to(profile.dtype) + fraction
    return ((2 * u + 1) / L - 1).clamp(-1, 1)


def invert_grid(grid: Tensor, out_size: tuple[int, int] | None = None, iterations: int = 10) -> Tensor:
    """Approximate inverse of a monotone sampling grid, sampled at the pixel centres of ``out_size``.

    ``grid`` ``G`` maps an output position ``q`` (its pixel centres, interpolated bilinearly in between) to the
    input position ``G(q)``. The inverse maps each regular position ``p`` to the ``q`` with ``G(q) = p``. The start
    is exact for separable grids (x depending on the column only, y on the row only, as ARS builds them): each axis
    inverts the row- or column-averaged profile by linear interpolation. Damped Newton steps on the bilinear
    interpolant then refine non-separable grids (a step is kept only where it reduces the residual, and halved and
    retried elsewhere) until every residual is below about 3e-6 (normalised units; 1e-6 in float64) or stuck.

    Args:
        grid: ``(N, h, w, 2)``, x non-decreasing along rows and y along columns.
        out_size: ``(H, W)`` of the inverse grid (default: the grid's own size).
        iterations: Most Newton refinement steps (0: the separable inversion only).

    Returns:
        ``(N, H, W, 2)``, in ``[-1, 1]``; where ``G`` does not reach ``p`` (near the border of a zoom) the nearest
        reachable position, so ``grid_sample`` with ``padding_mode="border"`` reads the edge there.
    """
    _check_grid(grid, "invert_grid grid")
    if iterations < 0:
        raise ValueError(f"invert_grid iterations must be >= 0, got {iterations}")
    N, h, w, _ = grid.shape
    H, W = (h, w) if out_size is None else out_size
    if H < 1 or W < 1:
        raise ValueError(f"invert_grid out_size must be two positive sizes, got {out_size}")
    field = grid if grid.dtype in (torch.float32, torch.float64) else grid.float()
    target = identity_grid(N, H, W, device=field.device, dtype=field.dtype)
    qx = _invert_profile(field[..., 0].mean(dim=1), target[:, 0, :, 0])  # (N, W) from the mean column profile
    qy = _invert_profile(field[..., 1].mean(dim=2), target[:, :, 0, 1])  # (N, H) from the mean row profile
    q = torch.stack([qx[:, None, :].expand(N, H, W), qy[:, :, None].expand(N, H, W)], dim=-1)
    spread_x = (field[..., 0] - field[..., 0].mean(dim=1, keepdim=True)).abs().amax()
    spread_y = (field[..., 1] - field[..., 1].mean(dim=2, keepdim=True)).abs().amax()
    if iterations == 0 or bool(torch.maximum(spread_x, spread_y) <= 1e-6):  # separable: the start is the inverse
        return q.to(grid.dtype)
    value, jac = _sample_field(field, q, jacobian=True)
    error = (target - value).square().sum(-1, keepdim=True)
    scale = torch.ones_like(error)
    tolerance = 1e-12 if field.dtype == torch.float64 else 1e-11  # squared residual, normalised units
    eye = torch.eye(2, device=field.device, dtype=field.dtype)
    for _ in range(iterations):
        if not bool(((error > tolerance) & (scale > 1 / 32)).any()):  # converged, or stuck (p out of G's reach)
            break
        assert jac is not None
        # Levenberg–Marquardt-damped Newton step on the bilinear interpolant: (JᵀJ + λI) δ = Jᵀ r, 2×2 per point.
        jt = jac.transpose(-1, -2)
        step = torch.linalg.solve(jt @ jac + 1e-9 * eye, jt @ (target - value)[..., None])[..., 0].clamp(-1, 1)
        candidate = (q + scale * step).clamp(-1, 1)
        candidate_value, candidate_jac = _sample_field(field, candidate, jacobian=True)
        assert candidate_jac is not None
        candidate_error = (target - candidate_value).square().sum(-1, keepdim=True)
        better = candidate_error < error  # keep a step only where it helps; halve it elsewhere and retry
        q = torch.where(better, candidate, q)
        value = torch.where(better, candidate_value, value)
        jac = torch.where(better[..., None], candidate_jac, jac)
        error = torch.where(better, candidate_error, error)
        scale = torch.where(better, torch.ones_like(scale), scale / 2)
    return q.to(grid.dtype)


def compose_grids(outer: Tensor, inner: Tensor) -> Tensor:
    """The grid of sampling with ``inner`` first and then with ``outer``: ``inner`` read at ``outer``'s positions.

    ``y = grid_sample(x, inner)`` then ``z = grid_sample(y, outer)`` gives ``z(q) = x(inner(outer(q)))``, so
    ``z ≈ grid_sample(x, compose_grids(outer, inner))``. ``inner`` is interpolated bilinearly between its pixel
    centres and extended linearly past them (so compositions with identity grids are exact).

    Args:
        outer: ``(N, H, W, 2)``, positions in ``inner``'s normalised coordinates.
        inner: ``(N, h, w, 2)``.

    Returns:
        ``(N, H, W, 2)``.
    """
    _check_grid(outer, "compose_grids outer")
    _check_grid(inner, "compose_grids inner")
    if outer.shape[0] != inner.shape[0]:
        raise ValueError(
            f"compose_grids needs outer and inner with the same batch size, got {outer.shape[0]} and {inner.shape[0]}"
        )
    value, _ = _sample_field(inner, outer.to(inner.dtype))
    return value


def demodulate(x: Tensor, grids: list[Tensor], size: tuple[int, int]) -> Tensor:
    """Map a map in the modulated geometry back to the regular geometry, at ``size``.

    ``grids`` are the ARS grids in the order they were applied (finest first); a map computed after all of them
    sees the regular geometry through ``C = G_1 ∘ … ∘ G_n`` (6) and is resampled with ``C⁻¹`` (7). ``C`` is built at
    the resolution of the largest grid. Without grids this is bilinear upsampling (``align_corners=False``).

    Args:
        x: ``(N, K, h, w)``, e.g. low-resolution predictions.
        grids: ``[(N, h_i, w_i, 2)]`` in the order applied.
        size: ``(H, W)`` of the output.

    Returns:
        ``(N, K, H, W)``.
    """
    if x.dim() != 4:
        raise ValueError(f"demodulate x must be (N, K, h, w), got shape {tuple(x.shape)}")
    if len(size) != 2 or size[0] < 1 or size[1] < 1:
        raise ValueError(f"demodulate size must be two positive sizes (H, W), got {size}")
    if not grids:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    for grid in grids:
        _check_grid(grid, "demodulate grids")
        if grid.shape[0] != x.shape[0]:
            raise ValueError(f"demodulate grids must have x's batch size {x.shape[0]}, got {tuple(grid.shape)}")
    finest = max(grids, key=lambda grid: grid.shape[1] * grid.shape[2])
    dtype = torch.promote_types(finest.dtype, torch.float32)
    composed = identity_grid(x.shape[0], finest.shape[1], finest.shape[2], device=x.device, dtype=dtype)
    for grid in reversed(grids):  # C(q) = G_1(G_2(…G_n(q))): the last grid is applied to q first   (6)
        composed = compose_grids(composed, grid.to(dtype))
    inverse = invert_grid(composed, out_size=(size[0], size[1]))
    return F.grid_sample(x, inverse.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)  # (7)


def _axis_coordinates(marginal: Tensor, sigma: float) -> Tensor:
    """Saliency-weighted mean coordinates (3) along one axis: ``(N, L)`` marginal → ``(N, L)`` normalised coords."""
    L = marginal.shape[-1]
    sigma_px = sigma * L / 2
    radius = max(1, math.ceil(_TRUNCATE * sigma_px))
    weights = F.pad(marginal[:, None], (radius, radius), mode="replicate")[:, 0]  # (N, L + 2R), replicated edges
    positions = torch.arange(-radius, L + radius, device=marginal.device, dtype=marginal.dtype)
    coordinates = (2 * positions + 1) / L - 1  # c(j'), extended linearly past the border
    offsets = torch.arange(L, device=marginal.device, dtype=marginal.dtype)[:, None] - positions[None, :]
    kernel = torch.exp(-offsets.square() / (2 * sigma_px**2)) * (offsets.abs() <= radius)  # κ(j − j'), (L, L + 2R)
    numerator = (weights * coordinates) @ kernel.T
    denominator = weights @ kernel.T
    return numerator / denominator


class ARS(nn.Module):
    """Adaptive resampling: zoom into salient regions before a stride-2 layer, order preserved (eqs. 1–5).

    Args:
        channels: C, channels of the input map.
        hidden: Channels of the saliency network's hidden layer.
        sigma: Width of the Gaussian κ in normalised units (the image spans 2), e.g. 0.5 = a quarter of the map;
            larger is a smoother, broader zoom.
        kernel_size: Kernel size of the saliency network's first convolution (odd).
        alpha_init: Initial blend α with the identity grid, in [0, 1]. α is ``clamp(α_raw, 0, 1)`` of a learnable
            parameter, so ``alpha_init=0`` is exactly the identity; at α = 0 the input is returned unchanged (and
            no gradient reaches α, so 0 switches ARS off).
    """

    def __init__(
        self, channels: int, hidden: int = 16, sigma: float = 0.5, kernel_size: int = 3, alpha_init: float = 0.5
    ) -> None:
        super().__init__()
        if channels < 1 or hidden < 1:
            raise ValueError(f"ARS channels and hidden must be positive, got channels={channels}, hidden={hidden}")
        if not sigma > 0:
            raise ValueError(f"ARS sigma must be > 0 (normalised units; the map spans 2), got {sigma}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ARS kernel_size must be a positive odd number, got {kernel_size}")
        if not 0.0 <= alpha_init <= 1.0:
            raise ValueError(f"ARS alpha_init must lie in [0, 1], got {alpha_init}")
        self.channels = channels
        self.sigma = sigma
        self.saliency_net = nn.Sequential(  # g of (1)
            nn.Conv2d(channels, hidden, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )
        self.alpha_raw = nn.Parameter(torch.tensor(float(alpha_init)))

    def no_weight_decay(self) -> set[str]:
        """The blend α, an identity-at-initialisation scalar that weight decay must not pull towards 0."""
        return {"alpha_raw"}

    @property
    def alpha(self) -> Tensor:
        """The blend α ∈ [0, 1] with the identity grid (a 0-d tensor)."""
        return self.alpha_raw.clamp(0.0, 1.0)

    def saliency(self, x: Tensor) -> Tensor:
        """The normalised saliency ``Â = A / mean(A)``, ``A = sigmoid(g(X))`` (1): ``(N, C, H, W)`` → ``(N, 1, H, W)``.

        ``Â`` has mean 1 over each map; ARS reads it through :meth:`sampling_grid`.
        """
        a = torch.sigmoid(self.saliency_net(x))
        return a / a.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)

    def sampling_grid(self, saliency: Tensor) -> Tensor:
        """The saliency sampler's grid ``G_s`` (2–3), before the blend with the identity.

        Args:
            saliency: ``(N, 1, H, W)`` non-negative weights (need not be normalised).

        Returns:
            ``(N, H, W, 2)`` in ``[-1, 1]``, x non-decreasing along rows, y along columns.
        """
        if saliency.dim() != 4 or saliency.shape[1] != 1:
            raise ValueError(f"ARS saliency must be (N, 1, H, W), got shape {tuple(saliency.shape)}")
        N, _, H, W = saliency.shape
        a = saliency[:, 0].double().clamp_min(1e-12)  # float64: (3) is monotone exactly, rounding must not break it
        x = _axis_coordinates(a.mean(dim=1), self.sigma)  # column marginal → x(j), (N, W)    (2, 3)
        y = _axis_coordinates(a.mean(dim=2), self.sigma)  # row marginal → y(i), (N, H)
        grid = torch.stack([x[:, None, :].expand(N, H, W), y[:, :, None].expand(N, H, W)], dim=-1)
        return grid.clamp(-1, 1).to(saliency.dtype)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Resample ``x`` on the blended grid (4–5).

        Args:
            x: ``(N, C, H, W)``.

        Returns:
            ``(x̃, G)``: ``x̃`` ``(N, C, H, W)`` and the grid ``G`` ``(N, H, W, 2)`` (``grid_sample`` convention, x
            then y, ``align_corners=False``), kept for demodulation.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"ARS expects x (N, {self.channels}, H, W), got shape {tuple(x.shape)}")
        N, _, H, W = x.shape
        alpha = self.alpha.to(x.dtype)
        sampled = self.sampling_grid(self.saliency(x)).to(x.dtype)
        grid = (1 - alpha) * identity_grid(N, H, W, device=x.device, dtype=x.dtype) + alpha * sampled  # (4)
        resampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (5)
        return torch.where(alpha == 0, x, resampled), grid  # α = 0: exactly the input


class MSAU(nn.Module):
    """Multi-scale adaptive upsampling: demodulate the features at the output resolution, refine the upsampling (8–13).

    The refinement enters through a zero-initialised mix γ, so at initialisation the output is exactly the bilinearly
    upsampled prediction.

    Args:
        feature_channels: Channels of the multi-scale features that guide the kernels, in the order they are passed
            (e.g. a backbone's strides 4 to 32); empty: the image alone guides them.
        image_channels: Channels of the image.
        feature_dim: Channels each feature is projected to before it is demodulated (``P_i`` of (8)).
        kernel_size: k, size of the per-pixel reassembly kernels (odd).
        dilations: Dilations of the reassembly kernels; their outputs are combined with learned softmax weights.
        hidden: Channels of the kernel-prediction network.
    """

    def __init__(
        self,
        feature_channels: tuple[int, ...] = (),
        image_channels: int = 3,
        feature_dim: int = 8,
        kernel_size: int = 3,
        dilations: tuple[int, ...] = (1, 2, 4),
        hidden: int = 32,
    ) -> None:
        super().__init__()
        if image_channels < 1 or feature_dim < 1 or hidden < 1 or any(c < 1 for c in feature_channels):
            raise ValueError(
                "MSAU feature_channels, image_channels, feature_dim and hidden must be positive, got "
                f"{feature_channels}, {image_channels}, {feature_dim}, {hidden}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"MSAU kernel_size must be a positive odd number, got {kernel_size}")
        if len(dilations) == 0 or any(d < 1 for d in dilations):
            raise ValueError(f"MSAU dilations must be a non-empty tuple of positive integers, got {dilations}")
        self.feature_channels = tuple(feature_channels)
        self.image_channels = image_channels
        self.kernel_size = kernel_size
        self.dilations = tuple(dilations)
        self.projections = nn.ModuleList(nn.Conv2d(c, feature_dim, 1) for c in self.feature_channels)  # P_i of (8)
        guidance = image_channels + feature_dim * len(self.feature_channels)
        self.encoder = nn.Sequential(nn.Conv2d(guidance, hidden, 3, padding=1), nn.ReLU(inplace=True))  # (9)
        self.kernel_heads = nn.Conv2d(hidden, len(dilations) * kernel_size**2, kernel_size=1)  # (10), all d at once
        self.dilation_logits = nn.Parameter(torch.zeros(len(dilations)))  # β of (12): uniform at start
        self.mix = nn.Parameter(torch.zeros(()))  # γ of (13): plain upsampling at start

    def no_weight_decay(self) -> set[str]:
        """The identity-at-initialisation scalars, which weight decay must not pull towards 0: γ and β."""
        return {"mix", "dilation_logits"}

    def guidance(self, image: Tensor, features: list[Tensor], grids: list[list[Tensor]]) -> Tensor:
        """``[I; D_1; …; D_n]`` of (8–9): the image and every feature demodulated at the image's resolution.

        Args:
            image: ``(N, C_img, H, W)``.
            features: ``n`` maps ``(N, C_i, h_i, w_i)`` with the channels of ``feature_channels``.
            grids: For each feature, the ARS grids applied before it, in the order applied (empty: none).

        Returns:
            ``(N, C_img + n · feature_dim, H, W)``.
        """
        if image.dim() != 4 or image.shape[1] != self.image_channels:
            raise ValueError(f"MSAU expects an image (N, {self.image_channels}, H, W), got {tuple(image.shape)}")
        channels = tuple(feature.shape[1] if feature.dim() == 4 else -1 for feature in features)
        if channels != self.feature_channels or len(grids) != len(features):
            raise ValueError(
                f"MSAU expects {len(self.feature_channels)} features (N, C, h, w) with channels "
                f"{self.feature_channels} and one list of grids each, got channels {channels} and "
                f"{len(grids)} grid lists"
            )
        size = (image.shape[-2], image.shape[-1])
        demodulated = [
            demodulate(projection(feature), list(applied), size)  # (8), at the output resolution
            for projection, feature, applied in zip(self.projections, features, grids, strict=True)
        ]
        return torch.cat([image, *(d.to(image.dtype) for d in demodulated)], dim=1)

    def forward(
        self, x: Tensor, image: Tensor, features: list[Tensor] | None = None, grids: list[list[Tensor]] | None = None
    ) -> Tensor:
        """Upsample ``x`` to the image's resolution.

        Args:
            x: ``(N, K, h, w)`` low-resolution predictions in the regular geometry (any K: each map is refined with
                the same kernels).
            image: ``(N, C_img, H, W)``.
            features: The guiding features (see :meth:`guidance`); ``None``: none (``feature_channels`` must be empty).
            grids: The ARS grids applied before each feature; ``None``: none for any.

        Returns:
            ``(N, K, H, W)``.
        """
        if x.dim() != 4 or x.shape[0] != image.shape[0]:
            raise ValueError(f"MSAU expects x (N, K, h, w) with the image's N {image.shape[0]}, got {tuple(x.shape)}")
        features = [] if features is None else list(features)
        grids = [[] for _ in features] if grids is None else [list(g) for g in grids]
        guidance = self.guidance(image, features, grids)
        N = x.shape[0]
        H, W = guidance.shape[-2:]
        upsampled = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)  # U of (8)
        hidden = self.encoder(guidance.to(upsampled.dtype))  # (9)
        k = self.kernel_size
        kernels = self.kernel_heads(hidden).view(N, len(self.dilations), k * k, H, W).softmax(dim=2)  # (10)
        weights = self.dilation_logits.softmax(dim=0)  # (12)
        refined = torch.zeros_like(upsampled)
        for index, dilation in enumerate(self.dilations):
            pad = dilation * (k // 2)
            padded = F.pad(upsampled, (pad, pad, pad, pad), mode="replicate")
            for offset in range(k * k):  # (11), one shifted copy at a time: no k²-fold unfolded tensor
                row, column = divmod(offset, k)
                shifted = padded[..., row * dilation : row * dilation + H, column * dilation : column * dilation + W]
                refined = refined + (weights[index] * kernels[:, index, offset, None]) * shifted  # (11, 12)
        return upsampled + self.mix * (refined - upsampled)  # (13)
