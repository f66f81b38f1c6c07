"""Acoustic descriptors of instrument recordings (HFRA's analysis of what makes an instrument hard to separate).

Spec: ``specs/separation.md`` (HFRA, "the acoustic characteristics (amplitude ratio max|x|/rms; harmonic
complexity 1 − HCR from the first 8 harmonics)"). The paper gives the two names and the formula above only;
the estimation procedure below is ours and is written out in full so that numbers can be reproduced.

* :func:`amplitude_ratio`: the crest factor ``max|x| / rms(x)`` of the whole waveform. A steady tone has a low
  ratio (a sine: √2); an impulsive, decaying sound (plucked or struck instruments) a high one.
* :func:`harmonic_complexity`: ``1 − HCR``, where the harmonic concentration ratio HCR is the fraction of the
  energy of the first ``n_harmonics`` harmonics that sits in the fundamental. A pure tone has complexity 0;
  equal-energy harmonics ``1 − 1/K``. See :func:`harmonic_analysis` for the exact procedure.
* :func:`descriptor_table` / :func:`format_table`: mean ± std of both descriptors per class, as markdown.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DescriptorRow",
    "HarmonicAnalysis",
    "amplitude_ratio",
    "descriptor_table",
    "format_table",
    "harmonic_analysis",
    "harmonic_complexity",
]


def _check_waveform(waveform: Tensor, name: str = "waveform") -> Tensor:
    """``waveform`` as float64 ``(..., L)``, rejecting empty, non-floating/complex and non-finite input."""
    if not isinstance(waveform, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (..., L), got {type(waveform).__name__}")
    if waveform.dim() == 0 or waveform.shape[-1] == 0:
        raise ValueError(f"{name} must be (..., L) with L > 0 samples, got shape {tuple(waveform.shape)}")
    if waveform.is_complex():
        raise ValueError(f"{name} must be real-valued, got {waveform.dtype}")
    x = waveform.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return x


def _silent_error(silent: Tensor, what: str) -> ValueError:
    """A ValueError naming the silent signals (by index into the leading dims)."""
    if silent.dim() == 0:
        return ValueError(f"{what} is undefined for a silent (all-zero) waveform")
    where = [tuple(i.tolist()) for i in silent.nonzero()[:5]]
    return ValueError(f"{what} is undefined for silent (all-zero) input: signals at leading indices {where}")


def amplitude_ratio(waveform: Tensor) -> float | Tensor:
    """Amplitude ratio (crest factor) ``max|x| / rms(x)``, ``rms(x) = sqrt(mean(x²))``, over the last dim.

    It is invariant to gain, at least 1 (equality for a constant-magnitude signal such as a square wave) and at
    most ``sqrt(L)`` (a single impulse); a sine over whole periods gives √2.

    Args:
        waveform: ``(L,)`` or ``(..., L)`` real samples.

    Returns:
        A float for a 1-D waveform, else a float64 tensor of shape ``waveform.shape[:-1]``.

    Raises:
        ValueError: a waveform is silent (all zeros: the ratio would be 0/0), empty or not finite.
    """
    x = _check_waveform(waveform)
    peak = x.abs().amax(-1)
    rms = x.square().mean(-1).sqrt()
    silent = rms == 0
    if silent.any():
        raise _silent_error(silent, "amplitude_ratio")
    ratio = peak / rms
    return float(ratio) if waveform.dim() == 1 else ratio


@dataclass(frozen=True)
class HarmonicAnalysis:
    """Frame-level result of :func:`harmonic_analysis` for ``B`` signals (the flattened leading dims).

    Attributes:
        f0: ``(B, T)`` fundamental frequency per frame in Hz (YIN estimate; meaningful where ``used``).
        aperiodicity: ``(B, T)`` YIN's cumulative-mean-normalised difference at the chosen period (0 =
            perfectly periodic).
        energies: ``(B, T, K)`` spectral energy in the band around each harmonic ``k·f0``, ``k = 1..K``
            (0 where the band does not fit below Nyquist).
        available: ``(B, T, K)`` whether harmonic ``k``'s band fits below Nyquist.
        used: ``(B, T)`` the frames that enter the HCR: energetic, voiced, with enough harmonics available.
        hcr: ``(B,)`` the aggregated harmonic concentration ratio (NaN where no frame is used).
        frame_times: ``(T,)`` centre of each frame in seconds.
    """

    f0: Tensor
    aperiodicity: Tensor
    energies: Tensor
    available: Tensor
    used: Tensor
    hcr: Tensor
    frame_times: Tensor


_LAG_OVERSAMPLING = 4  # YIN lags on a grid of 1/4 sample (see _yin)


def _yin(frames: Tensor, tau_min: int, tau_max: int, trough_threshold: float) -> tuple[Tensor, Tensor]:
    """YIN (de Cheveigné & Kawahara 2002) on ``(T, W)`` frames: sub-sample period (samples) and aperiodicity.

    Difference function ``d(τ) = Σ_{j<Wi} (x_j − x_{j+τ})²`` over an integration window of
    ``Wi = W − tau_max − 1`` samples, cumulative-mean normalisation ``d'(τ) = d(τ) / mean_{0<u≤τ} d(u)``, the
    first local minimum below ``trough_threshold`` in ``[tau_min, tau_max]`` (else the deepest one there),
    parabolic interpolation around it.

    Lags run on a grid of ``1/_LAG_OVERSAMPLING`` samples: at integer lags alone, a period that falls between
    samples leaves high harmonics (near Nyquist) out of phase and ``d'`` at the true period well above the
    threshold (equal harmonics of 600 Hz at 11025 Hz: 0.19), so YIN jumps an octave down. The cross term is
    band-limited in τ and interpolated exactly (zero-padded spectrum); the energy term, a moving sum, linearly.
    """
    U = _LAG_OVERSAMPLING
    W = frames.shape[1]
    Wi = W - tau_max - 1
    n = 1 << (W + Wi - 1).bit_length()
    n_lags = U * (tau_max + 1) + 2  # fine lags 0 .. U·(tau_max + 1) + 1
    spectrum = torch.fft.rfft(frames[:, :Wi], n).conj() * torch.fft.rfft(frames, n)
    corr = torch.fft.irfft(spectrum, U * n)[:, :n_lags] * U  # Σ_{j<Wi} x_j x_{j+τ} at τ = i/U
    c = torch.nn.functional.pad(frames.square().cumsum(-1), (1, 0))  # c[j] = Σ_{i<j} x_i²
    lags = torch.arange(n_lags, dtype=frames.dtype, device=frames.device) / U
    whole = lags.floor().long()
    frac = lags - whole

    def c_at(index: Tensor) -> Tensor:  # c linearly interpolated at whole + frac
        return c[:, index] * (1 - frac) + c[:, (index + 1).clamp(max=W)] * frac

    energy_tau = c_at(whole + Wi) - c_at(whole)  # Σ_{j<Wi} x_{j+τ}²
    d = (energy_tau[:, :1] + energy_tau - 2 * corr).clamp_min(0)
    cum = d[:, 1:].cumsum(-1)
    steps = torch.arange(1, n_lags, dtype=frames.dtype, device=frames.device)
    dn = torch.ones_like(d)
    dn[:, 1:] = torch.where(cum > 0, d[:, 1:] * steps / cum.clamp_min(1e-300), torch.ones_like(cum))
    # candidates τ in [tau_min, tau_max]: local minima below the threshold; the first one wins
    inner = torch.arange(U * tau_min, U * tau_max + 1, device=frames.device)
    dv = dn[:, inner]
    local_min = (dv <= dn[:, inner - 1]) & (dv <= dn[:, inner + 1]) & (dv < trough_threshold)
    first = torch.where(local_min.any(-1), local_min.int().argmax(-1), dv.argmin(-1))
    index = inner[first]
    y0, y1, y2 = (dn.gather(1, (index + o)[:, None])[:, 0] for o in (-1, 0, 1))
    denom = y0 - 2 * y1 + y2
    shift = torch.where(denom > 0, 0.5 * (y0 - y2) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return (index + shift.clamp(-0.5, 0.5)) / U, y1.clamp(0, 1)


def harmonic_analysis(
    waveform: Tensor,
    sample_rate: int,
    n_harmonics: int = 8,
    fmin: float = 40.0,
    fmax: float = 2100.0,
    win_seconds: float = 0.1,
    hop_seconds: float = 0.025,
    band_fraction: float = 0.25,
    trough_threshold: float = 0.1,
    voicing_threshold: float = 0.25,
    energy_floor_db: float = -40.0,
    min_harmonics: int | None = None,
    min_frames: int = 5,
) -> HarmonicAnalysis:
    """Per-frame f0 and harmonic energies, and the aggregated harmonic concentration ratio (HCR).

    Procedure (every choice is an argument):

    1. Frames of ``win_seconds`` (default 0.1 s) every ``hop_seconds`` (0.025 s), fully inside the signal (no
       padding); the clip must be at least one frame long.
    2. f0 per frame by YIN on the raw frame: difference function over ``win − 1/fmin`` seconds on a lag grid of
       1/4 sample, cumulative-mean normalisation, the first local minimum below ``trough_threshold`` = 0.1 among
       the periods of ``fmin..fmax`` = 40..2100 Hz (else the deepest one), parabolic interpolation. The value of
       the normalised difference there is the frame's aperiodicity (0 = perfectly periodic).
    3. A frame is *used* when it is energetic (energy ≥ ``energy_floor_db`` = −40 dB relative to the clip's
       loudest frame), voiced (aperiodicity ≤ ``voicing_threshold`` = 0.25) and has at least ``min_harmonics``
       harmonic bands below Nyquist (default: all ``n_harmonics``; at 11025 Hz 8 harmonics fit for
       f0 ≲ 650 Hz, so compute the descriptor on full-rate audio where possible).
    4. Power spectrum of the Hann-windowed frame (zero-padded to a power of two ≥ 4× the window). Harmonic k's
       energy ``E_k`` is the sum of the power over the bins within ``k·f0 ± h`` (the partial and whatever noise
       lies in the band), with half-width
       ``h = clamp(max(band_fraction·f0, 2/win_seconds), max=f0/2)``: a quarter of the harmonic spacing by
       default, never narrower than the Hann main lobe (±2 bins of the unpadded window, so a steady partial is
       captured whole) and never wider than half the spacing (bands never overlap).
    5. ``HCR = Σ_t E_1(t) / Σ_t Σ_k E_k(t)`` over used frames and available harmonics, which is the mean of the
       per-frame ratios ``E_1 / Σ_k E_k`` weighted by each frame's harmonic energy ``Σ_k E_k``. Gain invariant.
       Undefined (NaN) when fewer than ``min_frames`` frames are used: a handful of frames would not describe
       the clip (e.g. a flute at 11025 Hz, whose notes above ~650 Hz have fewer than 8 harmonics below Nyquist).

    Args:
        waveform: ``(L,)`` or ``(..., L)`` real samples.
        sample_rate: Hz.
        n_harmonics: K, the number of harmonics (the paper: 8).
        fmin: Lowest f0 searched (Hz); ``win_seconds`` must cover at least two of its periods.
        fmax: Highest f0 searched (Hz).
        win_seconds: Frame length.
        hop_seconds: Frame hop.
        band_fraction: Band half-width as a fraction of f0 (see step 4), in (0, 0.5].
        trough_threshold: YIN's absolute threshold for choosing the period.
        voicing_threshold: Frames whose aperiodicity exceeds this are unvoiced (not used).
        energy_floor_db: Frames quieter than this relative to the loudest frame are not used.
        min_harmonics: Fewest harmonic bands that must fit below Nyquist for a frame to be used (``None``: all
            ``n_harmonics``).
        min_frames: Fewest used frames for the HCR to be defined.

    Returns:
        A :class:`HarmonicAnalysis` with the leading dims of ``waveform`` flattened to ``B``.

    Raises:
        ValueError: bad arguments, a clip shorter than one frame, or a silent clip.
    """
    x = _check_waveform(waveform)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if n_harmonics < 1:
        raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
    if min_harmonics is None:
        min_harmonics = n_harmonics
    if not 1 <= min_harmonics <= n_harmonics:
        raise ValueError(f"min_harmonics must be in [1, n_harmonics={n_harmonics}], got {min_harmonics}")
    if not 0 < fmin < fmax < sample_rate / 2:
        raise ValueError(f"need 0 < fmin < fmax < sample_rate/2, got fmin={fmin}, fmax={fmax}, sr={sample_rate}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    if not 0 < band_fraction <= 0.5:
        raise ValueError(f"band_fraction must be in (0, 0.5], got {band_fraction}")
    W = round(win_seconds * sample_rate)
    hop = max(1, round(hop_seconds * sample_rate))
    tau_min, tau_max = max(2, math.floor(sample_rate / fmax)), math.ceil(sample_rate / fmin)
    if 2 * tau_max > W:
        raise ValueError(f"win_seconds={win_seconds} must cover two periods of fmin={fmin} Hz ({2 / fmin:.4f} s)")
    L = x.shape[-1]
    if L < W:
        raise ValueError(f"clip too short: {L} samples, need at least one frame of {W} ({win_seconds} s)")
    lead = x.shape[:-1]
    flat = x.reshape(-1, L)
    silent = (flat == 0).all(-1)
    if silent.any():
        raise _silent_error(silent.reshape(lead), "harmonic_complexity")

    n_fft = 1 << (4 * W - 1).bit_length()
    window = torch.hann_window(W, periodic=False, dtype=torch.float64, device=x.device)
    freq_step = sample_rate / n_fft
    n_bins = n_fft // 2 + 1
    k = torch.arange(1, n_harmonics + 1, dtype=torch.float64, device=x.device)
    main_lobe = 2.0 / win_seconds
    out: dict[str, list[Tensor]] = {name: [] for name in ("f0", "ap", "energies", "available", "used", "hcr")}
    for signal in flat:
        frames = signal.unfold(-1, W, hop)  # (T, W)
        period, aperiodicity = _yin(frames, tau_min, tau_max, trough_threshold)
        f0 = sample_rate / period
        power = torch.fft.rfft(frames * window, n_fft).abs().square()  # (T, F)
        cum = torch.nn.functional.pad(power.cumsum(-1), (1, 0))  # cum[j] = Σ_{bins < j}
        half = torch.clamp(torch.maximum(band_fraction * f0, torch.full_like(f0, main_lobe)), max=f0 / 2)[:, None]
        centre = f0[:, None] * k  # (T, K)
        lo = torch.ceil((centre - half) / freq_step).clamp(0, n_bins).long()
        hi = torch.floor((centre + half) / freq_step).clamp(-1, n_bins - 1).long()
        energies = (cum.gather(1, hi + 1) - cum.gather(1, lo)).clamp_min(0)
        available = centre + half <= sample_rate / 2
        energies = torch.where(available, energies, torch.zeros_like(energies))
        frame_energy = frames.square().sum(-1)
        energetic = frame_energy >= frame_energy.max() * 10 ** (energy_floor_db / 10)
        used = energetic & (aperiodicity <= voicing_threshold) & (available.sum(-1) >= min_harmonics)
        used = used & (energies.sum(-1) > 0)
        total = energies[used].sum()
        defined = int(used.sum()) >= min_frames and total > 0
        hcr = energies[used][:, 0].sum() / total if defined else torch.tensor(math.nan, dtype=torch.float64)
        for name, value in zip(out, (f0, aperiodicity, energies, available, used, hcr.to(x.device)), strict=True):
            out[name].append(value)
    T = out["f0"][0].shape[0]
    times = (torch.arange(T, dtype=torch.float64) * hop + W / 2) / sample_rate
    return HarmonicAnalysis(
        f0=torch.stack(out["f0"]),
        aperiodicity=torch.stack(out["ap"]),
        energies=torch.stack(out["energies"]),
        available=torch.stack(out["available"]),
        used=torch.stack(out["used"]),
        hcr=torch.stack(out["hcr"]),
        frame_times=times,
    )


def harmonic_complexity(
    waveform: Tensor,
    sample_rate: int,
    n_harmonics: int = 8,
    fmin: float = 40.0,
    fmax: float = 2100.0,
    win_seconds: float = 0.1,
    hop_seconds: float = 0.025,
    band_fraction: float = 0.25,
    trough_threshold: float = 0.1,
    voicing_threshold: float = 0.25,
    energy_floor_db: float = -40.0,
    min_harmonics: int | None = None,
    min_frames: int = 5,
) -> Tensor:
    """Harmonic complexity ``1 − HCR`` over the first ``n_harmonics`` harmonics, per signal.

    ``HCR = Σ_t E_1(t) / Σ_t Σ_{k=1..K} E_k(t)``: the share of the harmonic energy that sits in the fundamental,
    over the voiced, energetic frames (the energy-weighted mean of the per-frame ratios). A pure tone gives 0,
    ``K`` equal-amplitude harmonics ``1 − 1/K`` (7/8 for K = 8), amplitudes ``a_k`` in general
    ``1 − a_1² / Σ_k a_k²``. The f0 tracker, bands and frame selection are described in
    :func:`harmonic_analysis`, which takes the same arguments and also returns the frame-level values.

    Args:
        waveform: ``(L,)`` or ``(..., L)`` real samples.
        sample_rate: Hz.
        n_harmonics: K (the paper: 8).
        fmin: See :func:`harmonic_analysis`.
        fmax: See :func:`harmonic_analysis`.
        win_seconds: See :func:`harmonic_analysis`.
        hop_seconds: See :func:`harmonic_analysis`.
        band_fraction: See :func:`harmonic_analysis`.
        trough_threshold: See :func:`harmonic_analysis`.
        voicing_threshold: See :func:`harmonic_analysis`.
        energy_floor_db: See :func:`harmonic_analysis`.
        min_harmonics: See :func:`harmonic_analysis`.
        min_frames: See :func:`harmonic_analysis`.

    Returns:
        float64 tensor of shape ``waveform.shape[:-1]`` (0-d for one clip), values in [0, 1]; NaN for a clip
        with fewer than ``min_frames`` usable (energetic, voiced, K harmonics below Nyquist) frames, e.g. noise,
        most drums, or high notes at a low sample rate.

    Raises:
        ValueError: a silent clip, a clip shorter than one frame, or bad arguments.
    """
    analysis = harmonic_analysis(
        waveform,
        sample_rate,
        n_harmonics=n_harmonics,
        fmin=fmin,
        fmax=fmax,
        win_seconds=win_seconds,
        hop_seconds=hop_seconds,
        band_fraction=band_fraction,
        trough_threshold=trough_threshold,
        voicing_threshold=voicing_threshold,
        energy_floor_db=energy_floor_db,
        min_harmonics=min_harmonics,
        min_frames=min_frames,
    )
    return (1 - analysis.hcr).reshape(waveform.shape[:-1])


@dataclass(frozen=True)
class DescriptorRow:
    """Descriptors of one class: mean and sample standard deviation (ddof 1; NaN for fewer than 2 values).

    Attributes:
        name: Class name.
        n_clips: Clips given.
        amplitude_ratio_mean: Mean of :func:`amplitude_ratio` over the clips.
        amplitude_ratio_std: Its standard deviation.
        harmonic_complexity_mean: Mean of :func:`harmonic_complexity` over the clips where it is defined.
        harmonic_complexity_std: Its standard deviation.
        n_undefined: Clips whose harmonic complexity is undefined (too few voiced frames with all harmonics below
            Nyquist, see :func:`harmonic_analysis`), left out of its mean and std.
    """

    name: str
    n_clips: int
    amplitude_ratio_mean: float
    amplitude_ratio_std: float
    harmonic_complexity_mean: float
    harmonic_complexity_std: float
    n_undefined: int


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the finite values; NaN where undefined."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = math.fsum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def descriptor_table(
    waveforms_by_class: Mapping[str, Sequence[Tensor]],
    sample_rate: int,
    n_harmonics: int = 8,
    min_harmonics: int | None = None,
) -> list[DescriptorRow]:
    """Amplitude ratio and harmonic complexity per class (mean ± std over the class's clips).

    Args:
        waveforms_by_class: Class name → its clips, each a 1-D waveform (lengths may differ).
        sample_rate: Hz.
        n_harmonics: K for :func:`harmonic_complexity`.
        min_harmonics: See :func:`harmonic_analysis`.

    Returns:
        One :class:`DescriptorRow` per class, in the mapping's order.

    Raises:
        ValueError: a class without clips, a clip that is not 1-D, or a silent clip (named).
    """
    rows = []
    for name, clips in waveforms_by_class.items():
        if len(clips) == 0:
            raise ValueError(f"class {name!r} has no clips")
        ratios, complexities = [], []
        for i, clip in enumerate(clips):
            if clip.dim() != 1:
                raise ValueError(f"class {name!r}, clip {i}: expected a 1-D waveform, got {tuple(clip.shape)}")
            try:
                ratios.append(float(amplitude_ratio(clip)))
                complexities.append(
                    float(harmonic_complexity(clip, sample_rate, n_harmonics, min_harmonics=min_harmonics))
                )
            except ValueError as err:
                raise ValueError(f"class {name!r}, clip {i}: {err}") from err
        ar_mean, ar_std = _mean_std(ratios)
        hc_mean, hc_std = _mean_std(complexities)
        n_undefined = sum(not math.isfinite(v) for v in complexities)
        rows.append(DescriptorRow(name, len(clips), ar_mean, ar_std, hc_mean, hc_std, n_undefined))
    return rows


def _pm(mean: float, std: float, digits: int) -> str:
    """``mean ± std`` (``n/a`` parts where undefined)."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(rows: Sequence[DescriptorRow], digits: int = 2) -> str:
    """A markdown table of :func:`descriptor_table` rows.

    Args:
        rows: The rows.
        digits: Decimals.

    Returns:
        Markdown with columns class, clips, amplitude ratio, harmonic complexity (each ``mean ± std``), and the
        number of clips whose complexity is undefined (left out of it) when there are any.
    """
    show_undefined = any(r.n_undefined for r in rows)
    header = ["class", "clips", "amplitude ratio (max/rms)", "harmonic complexity (1 − HCR)"]
    if show_undefined:
        header.append("clips without complexity")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        cells = [
            r.name,
            str(r.n_clips),
            _pm(r.amplitude_ratio_mean, r.amplitude_ratio_std, digits),
            _pm(r.harmonic_complexity_mean, r.harmonic_complexity_std, digits),
        ]
        if show_undefined:
            cells.append(str(r.n_undefined))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
