"""FDED, the frequency-domain decomposition, enhancement and recomposition block of FAVS (Eqs. 2–6).

FAVS: "Frequency-Domain Decomposition and Recomposition for Robust Audio-Visual Segmentation". One instance per
modality. For the features ``x`` ``(B, T, C, H, W)`` of the T frames of a clip on an H × W grid (an audio feature
map is reshaped to a 2-D grid by the caller):

    X       = x + G₁ₓ₁(DW₃ₓ₃(x))                                  (Eq. 2, pre-processing, per frame)
    F       = FFT2(X)                                             (Eq. 3, over H × W, norm "ortho")
    R₀      = F;  band_i = M_i ⊙ R_{i−1};  R_i = R_{i−1} − band_i  (Eq. 3, residual iterative split, i = 1..N)
    resid   = F − Σ_i band_i = R_N
    F̂_h     = Conv3D(F_h) + F_h                   (visual)        (Eq. 4, F_h = iFFT2(band_1), the high band)
    F̂_h     = CA(F_h) ⊙ F_h                       (audio)
    F_b     = iFFT2(band_b)                                       (Eq. 5, every other band and the residual)
    out     = Σ_b w_b ⊙ F̂_b                                      (Eq. 6, learned per-band, per-channel weights)

Radial frequency. ``|ω| = sqrt(f_y² + f_x²)`` with ``f`` from ``torch.fft.fftfreq`` (cycles per sample), normalised
so that 0 is DC and 1 the highest frequency: with ``radius="grid"`` (default) divided by the largest ``|ω|`` on the
grid at hand, so the corner bin of every grid, odd ones included, has ``|ω| = 1``; with ``radius="nyquist"`` divided
by ``sqrt(0.5² + 0.5²)``, Nyquist on both axes, so that a threshold means the same cycles per sample on every grid
(odd grids then never reach 1). The two agree on grids whose sides are both even.

Real FFT. ``X`` is real, so its spectrum is Hermitian, and ``|ω|`` is symmetric under ``ω → −ω``: every band keeps
that symmetry and is the spectrum of a real map. The block therefore computes the half-spectrum
``torch.fft.rfft2`` (columns ``0..W // 2``, with ``torch.fft.rfftfreq`` along x; the normalisation is that of the
full grid, so ``|ω|`` is the same at the same bins) and returns to the spatial domain with ``torch.fft.irfft2``
(``s = (H, W)``): half the work of ``fft2``/``ifft2`` and real bands by construction. :meth:`FDED.split_spectrum`
accepts a full ``fft2`` spectrum as well.

Precision. ``torch.fft`` has no bfloat16 (and half only for some sizes on GPU), and a spectrum in 16-bit floats
would drown the small bands in rounding noise. The FFT, the band split and the inverse FFT therefore run with
autocast off, in float32 (float64 stays float64); the spatial bands are cast back to the input's dtype, so the
enhancement runs in the autocast dtype, and the output has the input's dtype.

Masks. Hard (the paper, default): ``M_i = 1[|ω| > τ_i]``. Because ``R_{i−1}`` is already zero above ``τ_{i−1}``,
band i holds exactly the bins with ``τ_i < |ω| ≤ τ_{i−1}`` (``τ_0 = ∞``): the hard bands are disjoint, cover the grid
with the residual (``|ω| ≤ τ_N``, DC included), and ``Σ_i band_i + resid = F`` bin by bin, exactly. Soft (optional):
``M_i = sigmoid((|ω| − τ_i) / softness)`` with learnable τ; the residual recursion still telescopes, so the bands
still sum back to ``F``. Learnable thresholds must stay valid (``1 > τ_1 > … > τ_N > 0``) whatever the optimiser
does, so they are parametrised by unconstrained logits ``a``: ``τ_1 = sigmoid(a_1)``, ``τ_i = τ_{i−1} · sigmoid(a_i)``
(each ``a_i`` clamped to ``[−15, 15]`` so that no ratio rounds to 0 or 1 in float32). Defaults τ = (0.5, 0.25,
0.125): octave bands named high, mid, low.

Audio channel attention. Squeeze-excitation, ``CA = 2 · sigmoid(W₂ ReLU(W₁ z + b₁) + b₂)``, where ``z`` is the
per-channel energy of the high band, ``z_c = sqrt(mean(F_h,c²) + ε)`` (per frame over H × W, or per clip over
T × H × W). It is not the usual average pooling: the high band holds no DC bin, so its spatial mean is exactly 0 and
a mean-squeezed attention would be a constant gain, blind to the band's content and giving ``W₁`` no gradient.

Identity at initialisation (so that adding FDED to a network changes nothing at the start):

- Eq. 2 is residual and its grouped 1×1 convolution starts at zero (weight and bias), so ``X = x``.
- Visual: the 3×3×3 convolution (time × space, zero padding, no bias: the enhancement of a zero high band is zero)
  starts at zero, so ``F̂_h = F_h``.
- Audio: ``W₂`` and ``b₂`` start at zero, so ``CA = 1``; the range (0, 2) lets a channel be suppressed or amplified.
- Every ``w_b`` starts at 1, so ``out = Σ_b F_b = X = x`` (up to FFT rounding).
"""

import math
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Soft thresholds: each ratio τ_i / τ_{i−1} = sigmoid(a_i) with a_i clamped to ±MAX_TAU_LOGIT, so that it stays
# strictly inside (0, 1) in float32 (sigmoid(±15) = 3.1e-7 and 1 − 3.1e-7) and the thresholds strictly ordered.
MAX_TAU_LOGIT = 15.0


def band_names(num_bands: int) -> tuple[str, ...]:
    """Names of the ``num_bands`` bands, highest frequency first (the residual, ``"residual"``, is extra).

    ``"high"``; ``"high", "low"``; ``"high", "mid", "low"``; for more bands ``"high", "mid1", ..., "low"``.

    Args:
        num_bands: N ≥ 1, the number of thresholds.

    Returns:
        N names.
    """
    if num_bands < 1:
        raise ValueError(f"band_names needs num_bands ≥ 1, got {num_bands}")
    if num_bands == 1:
        return ("high",)
    if num_bands == 2:
        return ("high", "low")
    if num_bands == 3:
        return ("high", "mid", "low")
    return ("high", *(f"mid{i}" for i in range(1, num_bands - 1)), "low")


def radial_frequency(
    height: int,
    width: int,
    radius: Literal["grid", "nyquist"] = "grid",
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    onesided: bool = False,
) -> Tensor:
    """Normalised radial frequency ``|ω|`` of each bin of an unshifted ``fft2`` (or ``rfft2``) of an H × W grid.

    Args:
        height: H, rows of the grid.
        width: W, columns of the grid (of the signal, also when ``onesided``).
        radius: ``"grid"``: divide by the largest radius on the full grid (its corner bin is 1); ``"nyquist"``:
            divide by ``sqrt(0.5² + 0.5²)`` (Nyquist on both axes is 1, whatever the grid).
        device: Device of the result.
        dtype: Real floating-point type of the result (default: torch's default dtype).
        onesided: The bins of ``torch.fft.rfft2``, columns ``0..W // 2`` (``torch.fft.rfftfreq`` along x); the
            values equal those of the full grid at the same bins.

    Returns:
        ``(H, W)``, or ``(H, W // 2 + 1)`` when ``onesided``; 0 at DC (``[0, 0]``), values in ``[0, 1]``,
        symmetric under ``ω → −ω``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"radial_frequency needs a non-empty grid, got {height}×{width}")
    if radius not in ("grid", "nyquist"):
        raise ValueError(f"radial_frequency radius must be 'grid' or 'nyquist', got {radius!r}")
    fy = torch.fft.fftfreq(height, device=device, dtype=torch.float64)  # cycles per sample, in [−0.5, 0.5)
    if onesided:
        fx = torch.fft.rfftfreq(width, device=device, dtype=torch.float64)  # in [0, 0.5]
    else:
        fx = torch.fft.fftfreq(width, device=device, dtype=torch.float64)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    if radius == "grid":
        # The full grid's corner, |f| = (H // 2) / H and (W // 2) / W; rfftfreq holds the same largest |f_x|.
        largest = torch.sqrt(fy.square().max() + fx.square().max())
        r = r / largest if largest > 0 else r  # a 1×1 grid holds DC only
    else:
        r = r / math.sqrt(0.5**2 + 0.5**2)
    return r.to(dtype if dtype is not None else torch.get_default_dtype())


class ChannelAttention(nn.Module):
    """Squeeze-excitation channel attention on the channels' energy, 1 at initialisation.

    ``CA(x) = 2 · sigmoid(W₂ ReLU(W₁ z + b₁) + b₂)`` with the squeeze ``z_c = sqrt(mean(x_c²) + eps)``, the RMS of
    channel c per frame (over H × W) or per clip (over T × H × W). FDED applies it to the high band, which has no DC
    bin: its mean is exactly 0, so an average-pooling squeeze would make CA a constant; its energy is not. ``W₂`` and
    ``b₂`` start at zero, so CA starts at 1; the range (0, 2) lets a channel be suppressed or amplified.

    Args:
        channels: C.
        reduction: The hidden width is ``max(1, C // reduction)``.
        pool: ``"frame"``: one attention vector per frame (energy over H × W); ``"clip"``: one per clip
            (energy over T × H × W).
        eps: Added to the mean square before the square root, so that the gradient is finite at 0.
    """

    def __init__(
        self, channels: int, reduction: int = 4, pool: Literal["frame", "clip"] = "frame", eps: float = 1e-6
    ) -> None:
        super().__init__()
        if pool not in ("frame", "clip"):
            raise ValueError(f"ChannelAttention pool must be 'frame' or 'clip', got {pool!r}")
        if not eps > 0:
            raise ValueError(f"ChannelAttention eps must be > 0, got {eps}")
        hidden = max(1, channels // reduction)
        self.pool = pool
        self.eps = eps
        self.squeeze = nn.Linear(channels, hidden)  # W₁, b₁
        self.excite = nn.Linear(hidden, channels)  # W₂, b₂
        nn.init.zeros_(self.excite.weight)  # CA = 2 · sigmoid(0) = 1 at the start
        nn.init.zeros_(self.excite.bias)

    def energy(self, x: Tensor) -> Tensor:
        """The squeeze ``z``: each channel's RMS, ``sqrt(mean(x²) + eps)``.

        Args:
            x: ``(B, T, C, H, W)``.

        Returns:
            ``(B, T, C)`` for ``pool="frame"``, ``(B, 1, C)`` for ``"clip"``.
        """
        dims = (-2, -1) if self.pool == "frame" else (1, -2, -1)
        return torch.sqrt(x.square().mean(dim=dims, keepdim=True) + self.eps)[..., 0, 0]

    def forward(self, x: Tensor) -> Tensor:
        """The channel weights of ``x``.

        Args:
            x: ``(B, T, C, H, W)``.

        Returns:
            ``(B, T, C, 1, 1)`` for ``pool="frame"``, ``(B, 1, C, 1, 1)`` for ``"clip"``; values in (0, 2).
        """
        z = self.energy(x)  # squeeze: (B, T, C) or (B, 1, C)
        return (2 * torch.sigmoid(self.excite(F.relu(self.squeeze(z)))))[..., None, None]


class FDED(nn.Module):
    """FAVS's frequency-domain decomposition, enhancement and recomposition of one modality's features.

    Args:
        channels: C, the channels of the features.
        modality: Which high-band enhancement (Eq. 4): ``"visual"``, a residual 3×3×3 convolution over
            time × space; ``"audio"``, channel attention on the high band's per-channel energy.
        thresholds: τ_1 > τ_2 > ... > τ_N in (0, 1], the band edges on the normalised radial frequency; N ≥ 1.
            With soft masks τ_1 < 1, and each ratio τ_i / τ_{i−1} (τ_0 = 1) must lie within
            ``[sigmoid(−15), sigmoid(15)]`` ≈ ``[3.1e-7, 1 − 3.1e-7]``. The default gives the high, mid and low
            octave bands.
        groups: Groups of the pre-processing 1×1 convolution (Eq. 2); must divide ``channels``.
        reduction: Channel reduction of the audio channel attention (hidden width ``max(1, C // reduction)``);
            unused for ``"visual"``.
        soft: Sigmoid masks with learnable thresholds (parameter :attr:`tau_logits`) instead of the paper's hard
            masks (buffer ``tau``).
        softness: Temperature of the soft masks, in units of normalised frequency; unused for hard masks.
        radius: Normalisation of ``|ω|``: ``"grid"`` (1 = the highest frequency of the grid at hand) or
            ``"nyquist"`` (1 = Nyquist on both axes); see the module docstring.
        attention_pool: Audio channel attention per ``"frame"`` (each frame's own channel weights) or per
            ``"clip"``; unused for ``"visual"``.
    """

    def __init__(
        self,
        channels: int,
        modality: Literal["visual", "audio"],
        thresholds: tuple[float, ...] = (0.5, 0.25, 0.125),
        groups: int = 4,
        reduction: int = 4,
        soft: bool = False,
        softness: float = 0.05,
        radius: Literal["grid", "nyquist"] = "grid",
        attention_pool: Literal["frame", "clip"] = "frame",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"FDED channels must be ≥ 1, got {channels}")
        if modality not in ("visual", "audio"):
            raise ValueError(f"FDED modality must be 'visual' or 'audio', got {modality!r}")
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) < 1:
            raise ValueError("FDED thresholds must hold at least one band edge, e.g. (0.5, 0.25, 0.125)")
        if not all(0 < t <= 1 for t in thresholds):
            raise ValueError(f"FDED thresholds must lie in (0, 1] (normalised radial frequency), got {thresholds}")
        if not all(a > b for a, b in pairwise(thresholds)):
            raise ValueError(f"FDED thresholds must be strictly decreasing (high band first), got {thresholds}")
        if groups < 1 or channels % groups != 0:
            raise ValueError(f"FDED groups ({groups}) must be ≥ 1 and divide channels ({channels})")
        if reduction < 1:
            raise ValueError(f"FDED reduction must be ≥ 1, got {reduction}")
        if soft and not softness > 0:
            raise ValueError(f"FDED softness must be > 0 for soft masks, got {softness}")
        if radius not in ("grid", "nyquist"):
            raise ValueError(f"FDED radius must be 'grid' or 'nyquist', got {radius!r}")
        if attention_pool not in ("frame", "clip"):
            raise ValueError(f"FDED attention_pool must be 'frame' or 'clip', got {attention_pool!r}")
        self.channels = channels
        self.modality = modality
        self.soft = soft
        self.softness = softness
        self.radius = radius
        self.names = (*band_names(len(thresholds)), "residual")

        # Eq. 2: depthwise 3×3 then grouped 1×1, residual; the 1×1 starts at zero so X = x.
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, kernel_size=1, groups=groups)
        for parameter in self.pointwise.parameters():  # weight and bias
            nn.init.zeros_(parameter)

        # Eq. 3: τ_1..τ_N, learnable only with soft masks (a hard mask has no gradient in τ). Soft: logits of the
        # ratios τ_i / τ_{i−1} (τ_0 = 1), so that any value of the parameter gives valid thresholds (see `tau`).
        self.tau_logits: nn.Parameter | None = None
        if soft:
            ratios = [t / previous for previous, t in pairwise((1.0, *thresholds))]
            logits = [math.log(q / (1 - q)) if q < 1 else math.inf for q in ratios]
            if not all(abs(a) <= MAX_TAU_LOGIT for a in logits):
                raise ValueError(
                    "soft FDED thresholds need τ_1 < 1 and each ratio τ_i / τ_{i−1} (τ_0 = 1) within "
                    f"[sigmoid(−{MAX_TAU_LOGIT:g}), sigmoid({MAX_TAU_LOGIT:g})] ≈ [3.1e-7, 1 − 3.1e-7], "
                    f"got {thresholds}"
                )
            self.tau_logits = nn.Parameter(torch.tensor(logits, dtype=torch.get_default_dtype()))
        else:
            self.register_buffer("tau", torch.tensor(thresholds, dtype=torch.get_default_dtype()))

        # Eq. 4: high-band enhancement, starting as the identity.
        self.conv3d: nn.Conv3d | None = None
        self.attention: ChannelAttention | None = None
        if modality == "visual":
            self.conv3d = nn.Conv3d(channels, channels, kernel_size=3, padding=1, bias=False)
            nn.init.zeros_(self.conv3d.weight)
        else:
            self.attention = ChannelAttention(channels, reduction, attention_pool)

        # Eq. 6: one weight per band (residual included) and channel, all ones.
        self.weights = nn.Parameter(torch.ones(len(self.names), channels))

    @property
    def tau(self) -> Tensor:
        """The thresholds ``(τ_1, ..., τ_N)``, ``1 ≥ τ_1 > ... > τ_N > 0`` (Eq. 3).

        Hard masks: the buffer ``tau``. Soft masks: ``τ_1 = sigmoid(a_1)``, ``τ_i = τ_{i−1} · sigmoid(a_i)`` from
        :attr:`tau_logits` ``a`` (each clamped to ``±15``), differentiable in ``a``.
        """
        if self.tau_logits is not None:
            ratios = torch.sigmoid(self.tau_logits.clamp(-MAX_TAU_LOGIT, MAX_TAU_LOGIT))
            return torch.cumprod(ratios, dim=0)
        # nn.Module.register_buffer asks hasattr(self, "tau") before registering: a missing buffer must read as
        # an AttributeError, not as a KeyError.
        buffer = self._buffers.get("tau")
        if buffer is None:
            raise AttributeError("FDED has no buffer 'tau' yet")
        return buffer

    def no_weight_decay(self) -> set[str]:
        """The band weights (the identity at 1, Eq. 6) and the soft thresholds: weight decay must not pull them to 0."""
        return {"weights", "tau_logits"}

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != self.channels:
            raise ValueError(f"FDED expects features (B, T, {self.channels}, H, W), got {tuple(x.shape)}")

    def preprocess(self, x: Tensor) -> Tensor:
        """Eq. 2: ``X = x + G₁ₓ₁(DW₃ₓ₃(x))``, frame by frame.

        Args:
            x: ``(B, T, C, H, W)``.

        Returns:
            ``(B, T, C, H, W)``.
        """
        self._check(x)
        frames = x.flatten(0, 1)
        return x + self.pointwise(self.depthwise(frames)).unflatten(0, x.shape[:2])

    def masks(
        self,
        height: int,
        width: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        onesided: bool = False,
    ) -> Tensor:
        """The masks ``M_i`` (``1[|ω| > τ_i]``, or the sigmoid for soft masks) applied to ``R_{i−1}``.

        Args:
            height: H.
            width: W (of the signal, also when ``onesided``).
            device: Device of the result.
            dtype: Real floating-point type of the result (default: that of the thresholds).
            onesided: Masks of the ``rfft2`` half-spectrum, ``(N, H, W // 2 + 1)``.

        Returns:
            ``(N, H, W)`` or ``(N, H, W // 2 + 1)``.
        """
        tau = self.tau
        dtype = dtype if dtype is not None else tau.dtype
        r = radial_frequency(height, width, self.radius, device=device, dtype=dtype, onesided=onesided)
        above = r[None] - tau.to(dtype)[:, None, None]  # |ω| − τ_i
        if self.soft:
            return torch.sigmoid(above / self.softness)
        return (above > 0).to(dtype)

    def split_spectrum(self, spectrum: Tensor, width: int | None = None) -> dict[str, Tensor]:
        """Eq. 3, the residual iterative band split of a spectrum.

        Args:
            spectrum: ``F``, complex and unshifted: ``(..., H, W)`` as ``torch.fft.fft2`` gives it, or the
                half-spectrum ``(..., H, W // 2 + 1)`` of ``torch.fft.rfft2`` when ``width`` is given.
            width: W of the real signal whose ``rfft2`` is ``spectrum``; None for a full ``fft2`` spectrum.

        Returns:
            ``{name: band}`` for every name in :attr:`names` (highest band first, ``"residual"`` last), each shaped
            like ``spectrum``; they sum back to ``spectrum`` (bin by bin exactly, for hard masks).
        """
        height = spectrum.shape[-2]
        if width is not None and spectrum.shape[-1] != width // 2 + 1:
            raise ValueError(
                f"split_spectrum: an rfft2 spectrum of width {width} has {width // 2 + 1} columns, "
                f"got {spectrum.shape[-1]}"
            )
        masks = self.masks(
            height,
            width if width is not None else spectrum.shape[-1],
            spectrum.device,
            dtype=spectrum.real.dtype,
            onesided=width is not None,
        )
        remainder = spectrum  # R_0 = F
        bands: dict[str, Tensor] = {}
        for name, mask in zip(self.names[:-1], masks, strict=True):
            band = mask * remainder  # band_i = M_i ⊙ R_{i−1}
            remainder = remainder - band  # R_i = R_{i−1} − band_i
            bands[name] = band
        bands["residual"] = remainder  # F − Σ_i band_i = R_N
        return bands

    def bands(self, x: Tensor) -> dict[str, Tensor]:
        """The spatial-domain bands of the pre-processed input, before enhancement (Eqs. 2, 3 and 5).

        The FFT, the split and the inverse FFT run with autocast off, in float32 or float64 (see the module
        docstring); the bands come back in ``x``'s dtype.

        Args:
            x: ``(B, T, C, H, W)``.

        Returns:
            ``{name: band}`` for every name in :attr:`names` (``"high", "mid", "low", "residual"`` by default), each
            ``(B, T, C, H, W)`` in ``x``'s dtype; they sum to :meth:`preprocess` ``(x)``.
        """
        preprocessed = self.preprocess(x)  # Eq. 2
        height, width = preprocessed.shape[-2:]
        with torch.autocast(preprocessed.device.type, enabled=False):
            signal = preprocessed.to(torch.promote_types(preprocessed.dtype, torch.float32))
            spectrum = torch.fft.rfft2(signal, norm="ortho")  # Eq. 3, half of the Hermitian spectrum
            return {
                name: torch.fft.irfft2(band, s=(height, width), norm="ortho").to(x.dtype)  # Eq. 5
                for name, band in self.split_spectrum(spectrum, width=width).items()
            }

    def enhance(self, high: Tensor) -> Tensor:
        """Eq. 4, the modality's enhancement of the spatial-domain high band.

        Args:
            high: ``F_h``, ``(B, T, C, H, W)``.

        Returns:
            ``F̂_h``, ``(B, T, C, H, W)``: ``Conv3D(F_h) + F_h`` (visual) or ``CA(F_h) ⊙ F_h`` (audio).
        """
        if self.conv3d is not None:
            return self.conv3d(high.transpose(1, 2)).transpose(1, 2) + high  # Conv3D over (T, H, W)
        assert self.attention is not None
        return self.attention(high) * high

    def forward(self, x: Tensor) -> Tensor:
        """Decompose, enhance the high band, recompose (Eqs. 2–6).

        Args:
            x: ``(B, T, C, H, W)``: T frames of a clip on an H × W feature grid.

        Returns:
            ``(B, T, C, H, W)`` in ``x``'s dtype; equal to ``x`` (up to FFT rounding) at initialisation.
        """
        bands = self.bands(x)
        bands["high"] = self.enhance(bands["high"])  # Eq. 4
        out = torch.zeros_like(bands["high"])
        for name, weight in zip(self.names, self.weights, strict=True):
            out = out + weight[:, None, None] * bands[name]  # Eq. 6: Σ_b w_b ⊙ F̂_b
        return out.to(x.dtype)
