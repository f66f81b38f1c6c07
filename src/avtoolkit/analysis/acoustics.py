"""Acoustic descriptors of instrument recordings (HFRA's analysis of what makes an instrument hard to separate).

The HFRA paper (appendix A1, "Acoustic Characteristics Computation for Figure 1") defines two descriptors per clip,
averaged per instrument class:

* :func:`amplitude_ratio`: ``AR = max|x(t)| / sqrt(mean_t x(t)²)`` (the crest factor) of the whole waveform. A
  steady tone has a low ratio (a sine: √2); an impulsive, decaying sound (plucked or struck instruments) a high one.
* :func:`harmonic_complexity`: ``1 − HCR`` with the harmonic component ratio
  ``HCR = Σ_{i=1..N} (1/i)·E_i / Σ_{i=1..N} E_i``, where ``f0`` is estimated with ``librosa.pyin``, ``E_i`` is
  the average energy at harmonic ``i·f0`` and ``N = 8``. A pure tone has ``HCR = 1`` (complexity 0); equal
  energy in harmonics 1 and 2 gives ``HCR = (1 + 1/2)/2 = 0.75`` (complexity 0.25); all the energy in harmonic
  ``N`` gives ``1/N``, so complexity lies in ``[0, 1 − 1/N]``. The paper names the steps only; the details it
  leaves open (frames, pyin's range, how ``E_i`` is measured, which frames count) are resolved in
  :func:`harmonic_analysis`, each marked as ours.
* :func:`descriptor_table` / :func:`format_table`: mean ± std of both descriptors per class, as markdown.

``harmonic_complexity`` needs librosa, from the ``analysis`` extra (``pip install 'avtoolkit[analysis]'``).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
from torch import Tensor

from avtoolkit.utils.imports import lazy_import

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
        f0: ``(B, T)`` pyin's fundamental frequency per frame in Hz (on its grid of 1/10 semitone); NaN where
            pyin's path is unvoiced.
        voiced_probability: ``(B, T)`` pyin's probability that the frame is voiced.
        voiced: ``(B, T)`` the frames that enter ``E_i``: voiced on pyin's path with ``voiced_probability`` at
            least ``min_voiced_probability``.
        energies: ``(B, T, N)`` energy ``E_i(t)`` in the band around harmonic ``i·f0(t)``, ``i = 1..N``, scaled so
            that a steady partial ``a·sin(2π i f0 t)`` gives its mean power ``a²/2``; 0 for harmonics at or above
            Nyquist, NaN where ``f0`` is NaN.
        mean_energies: ``(B, N)`` the average energy ``E_i`` over the ``voiced`` frames (NaN where there is none).
        hcr: ``(B,)`` ``Σ_i (1/i)·E_i / Σ_i E_i`` (NaN where no frame is voiced).
        frame_times: ``(T,)`` centre of each frame in seconds.
    """

    f0: Tensor
    voiced_probability: Tensor
    voiced: Tensor
    energies: Tensor
    mean_energies: Tensor
    hcr: Tensor
    frame_times: Tensor


_DEFAULT_FRAME_SECONDS = 2048 / 22050  # librosa.pyin's default frame (2048 samples at 22050 Hz), ≈ 92.9 ms


def harmonic_analysis(
    waveform: Tensor,
    sample_rate: int,
    n_harmonics: int = 8,
    fmin: float = 40.0,
    fmax: float = 2100.0,
    frame_seconds: float = _DEFAULT_FRAME_SECONDS,
    band_fraction: float = 0.25,
    min_voiced_probability: float = 0.1,
) -> HarmonicAnalysis:
    """f0 track, energy at each harmonic per frame, average energies ``E_i`` and the HCR, per signal.

    Procedure. The HFRA paper (appendix A1) fixes steps 2, 5 and 6 (f0 by ``librosa.pyin``; the average energy
    ``E_i`` at each of the first ``N = 8`` harmonics; ``HCR = Σ_i (1/i)·E_i / Σ_i E_i``); the rest is our
    resolution of what it leaves open, and every important choice is an argument:

    1. (ours) Frames of ``frame_seconds`` (default librosa's 2048 samples at 22050 Hz, ≈ 92.9 ms; rounded to
       samples at ``sample_rate``), hop a quarter frame (librosa's default), centred on ``t·hop`` with zero
       padding at both ends (librosa's ``center=True``). The frame must hold two periods of ``fmin`` and the
       clip one frame.
    2. (paper) ``f0, voiced_flag, voiced_prob = librosa.pyin(x, fmin=fmin, fmax=fmax, sr=sample_rate,
       frame_length=..., hop_length=...)`` with librosa's other defaults. (ours) ``fmin..fmax`` =
       40..2100 Hz spans the instruments of MUSIC (tuba to flute, C7 ≈ 2093 Hz). pyin searches integer lags
       (with parabolic refinement): at a low sample rate, a tone with strong harmonics near Nyquist and a period
       between samples can be tracked at a subharmonic (8 equal harmonics of 600 Hz at 11025 Hz: 200 Hz), so
       compute the descriptor on full-rate audio where possible.
    3. (ours) Frames used: voiced on pyin's Viterbi path *and* ``voiced_prob ≥ min_voiced_probability`` (0.1).
       pyin's path alone marks most frames of white noise voiced near ``fmin``, each at voiced probability
       ≈ 0.01; steady tones get 0.24 (40 Hz: pyin's difference function is shallow at periods that long for
       the frame) to ≈ 0.95 (a few hundred Hz), so the gate drops noise and keeps low notes.
    4. (ours) ``E_i(t)``, the energy at harmonic ``i`` in frame ``t``: the power spectrum of the Hann-windowed
       frame (DFT of the frame length, the frames pyin analysed) summed over the bins in
       ``[i·f0 − h, i·f0 + h)``, with ``h = min(max(band_fraction·f0, 2·sr/frame), f0/2)``: a quarter of the
       harmonic spacing by default, never narrower than the Hann main lobe (± 2 bins, so a steady partial is
       captured whole however it falls between bins, and pyin's f0 grid of 1/10 semitone, i.e. up to 2.3 % of
       f0 at the 8th harmonic, stays inside the band) and never wider than half the spacing (bands never
       overlap). A band sum, not the spectrum's value at ``i·f0``: that would depend on where the partial falls
       between bins (Hann's scalloping loss, up to 1.4 dB). Scaled by ``2 / (frame · Σ w²)`` so a steady partial
       ``a·sin`` gives its mean power ``a²/2``. A harmonic at or above Nyquist has no energy in the recording:
       ``E_i(t) = 0``, so a high note at a low sample rate is described by the harmonics it has.
    5. (paper, "average energy") ``E_i`` = mean of ``E_i(t)`` over the used frames: energies are averaged first,
       then the ratio is taken once per clip (loud frames weigh more than quiet ones).
    6. (paper) ``HCR = Σ_{i=1..N} (1/i)·E_i / Σ_{i=1..N} E_i``. Gain invariant. (ours) NaN when no frame is used
       (noise, unpitched percussion) or the harmonic bands hold no energy.

    Args:
        waveform: ``(L,)`` or ``(..., L)`` real samples.
        sample_rate: Hz.
        n_harmonics: N, the number of harmonics (the paper: 8).
        fmin: Lowest f0 for pyin (Hz); ``frame_seconds`` must cover two of its periods.
        fmax: Highest f0 for pyin (Hz), at most Nyquist.
        frame_seconds: Frame length (pyin's ``frame_length`` and the DFT size, in seconds).
        band_fraction: Band half-width as a fraction of f0 (see step 4), in (0, 0.5].
        min_voiced_probability: Frames whose pyin voiced probability is below this are not used (step 3); 0
            keeps every frame on pyin's voiced path.

    Returns:
        A :class:`HarmonicAnalysis` with the leading dims of ``waveform`` flattened to ``B``.

    Raises:
        ValueError: bad arguments, a clip shorter than one frame, or a silent (all-zero) clip.
        MissingDependencyError: librosa is not installed (the ``analysis`` extra).
    """
    x = _check_waveform(waveform)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if n_harmonics < 1:
        raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
    if not 0 < fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 < fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}, sr={sample_rate}")
    if not 0 < band_fraction <= 0.5:
        raise ValueError(f"band_fraction must be in (0, 0.5], got {band_fraction}")
    if not 0 <= min_voiced_probability <= 1:
        raise ValueError(f"min_voiced_probability must be in [0, 1], got {min_voiced_probability}")
    frame = round(frame_seconds * sample_rate)
    if sample_rate / fmin >= frame // 2:
        raise ValueError(
            f"frame_seconds={frame_seconds} must cover two periods of fmin={fmin} Hz (more than {2 / fmin:.4f} s)"
        )
    length = x.shape[-1]
    if length < frame:
        raise ValueError(f"clip too short: {length} samples, need at least one frame of {frame} ({frame_seconds} s)")
    lead = x.shape[:-1]
    flat = x.reshape(-1, length)
    silent = (flat == 0).all(-1)
    if silent.any():
        raise _silent_error(silent.reshape(lead), "harmonic_complexity")
    librosa = lazy_import("librosa", "analysis")

    y = flat.cpu().numpy()
    hop = frame // 4
    f0, voiced_flag, voiced_prob = librosa.pyin(
        y, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame, hop_length=hop, center=True, pad_mode="constant"
    )  # (B, T) each
    # the frames pyin analysed (centre = True: frame t is centred on sample t·hop, zeros beyond the ends)
    padded = np.pad(y, [(0, 0), (frame // 2, frame // 2)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame, axis=-1)[:, ::hop]  # (B, T, frame)
    if frames.shape[:2] != f0.shape:  # pragma: no cover - guards the alignment with pyin's framing
        raise RuntimeError(f"frames {frames.shape[:2]} do not match pyin's {f0.shape}")
    window = scipy.signal.get_window("hann", frame)  # periodic Hann, as librosa's STFT
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2 * (2 / (frame * np.sum(window**2)))  # (B, T, F)
    cum = np.concatenate([np.zeros((*power.shape[:2], 1)), np.cumsum(power, axis=-1)], axis=-1)  # Σ_{bins < j}
    n_bins = power.shape[-1]
    bin_hz = sample_rate / frame
    harmonic = np.arange(1, n_harmonics + 1, dtype=np.float64)
    pitched = np.isfinite(f0)
    f0_safe = np.where(pitched, f0, fmin)[..., None]  # (B, T, 1); NaN frames are masked out below
    half = np.minimum(np.maximum(band_fraction * f0_safe, 2 * bin_hz), f0_safe / 2)
    centre = f0_safe * harmonic  # (B, T, N)
    lo = np.clip(np.ceil((centre - half) / bin_hz), 0, n_bins).astype(np.int64)
    hi = np.clip(np.ceil((centre + half) / bin_hz), 0, n_bins).astype(np.int64)  # exclusive
    energies = np.take_along_axis(cum, hi, -1) - np.take_along_axis(cum, lo, -1)
    energies = np.where(centre < sample_rate / 2, np.maximum(energies, 0.0), 0.0)
    energies = np.where(pitched[..., None], energies, np.nan)

    used = voiced_flag & pitched & (voiced_prob >= min_voiced_probability)  # (B, T)
    count = used.sum(-1)
    mean_energies = np.where(used[..., None], energies, 0.0).sum(1) / np.maximum(count, 1)[:, None]  # (B, N)
    mean_energies[count == 0] = np.nan
    total = mean_energies.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hcr = np.where(total > 0, (mean_energies / harmonic).sum(-1) / total, np.nan)

    def out(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(x.device)

    return HarmonicAnalysis(
        f0=out(f0.astype(np.float64)),
        voiced_probability=out(voiced_prob.astype(np.float64)),
        voiced=out(used),
        energies=out(energies),
        mean_energies=out(mean_energies),
        hcr=out(hcr.astype(np.float64)),
        frame_times=out(np.arange(f0.shape[-1]) * hop / sample_rate),
    )


def harmonic_complexity(
    waveform: Tensor,
    sample_rate: int,
    n_harmonics: int = 8,
    fmin: float = 40.0,
    fmax: float = 2100.0,
    frame_seconds: float = _DEFAULT_FRAME_SECONDS,
    band_fraction: float = 0.25,
    min_voiced_probability: float = 0.1,
) -> Tensor:
    """Harmonic complexity ``1 − HCR``, ``HCR = Σ_{i=1..N} (1/i)·E_i / Σ_{i=1..N} E_i`` (HFRA, appendix A1).

    ``E_i`` is the average energy at harmonic ``i·f0`` with ``f0`` from ``librosa.pyin``; the procedure, and
    which of its details are the paper's and which are ours, is in :func:`harmonic_analysis` (same arguments;
    it also returns the frame-level values). Steady harmonics of amplitudes ``a_i`` have ``E_i = a_i²/2``, so
    ``HCR = Σ_i a_i²/i / Σ_i a_i²``: a pure tone gives complexity 0, equal energy in harmonics 1 and 2 gives
    ``1 − (1 + 1/2)/2 = 0.25``, equal energy in all of the first 8 ``1 − (Σ_{i≤8} 1/i)/8 ≈ 0.660``. Larger
    values mean more energy in higher harmonics; the maximum is ``1 − 1/N``.

    Args:
        waveform: ``(L,)`` or ``(..., L)`` real samples.
        sample_rate: Hz.
        n_harmonics: N (the paper: 8).
        fmin: See :func:`harmonic_analysis`.
        fmax: See :func:`harmonic_analysis`.
        frame_seconds: See :func:`harmonic_analysis`.
        band_fraction: See :func:`harmonic_analysis`.
        min_voiced_probability: See :func:`harmonic_analysis`.

    Returns:
        float64 tensor of shape ``waveform.shape[:-1]`` (0-d for one clip), values in ``[0, 1 − 1/N]``; NaN for
        a clip without a voiced frame (e.g. noise, most drums).

    Raises:
        ValueError: a silent (all-zero) clip, a clip shorter than one frame, or bad arguments.
        MissingDependencyError: librosa is not installed (the ``analysis`` extra).
    """
    analysis = harmonic_analysis(
        waveform,
        sample_rate,
        n_harmonics=n_harmonics,
        fmin=fmin,
        fmax=fmax,
        frame_seconds=frame_seconds,
        band_fraction=band_fraction,
        min_voiced_probability=min_voiced_probability,
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
        n_undefined: Clips whose harmonic complexity is undefined (no voiced frame, see :func:`harmonic_analysis`),
            left out of its mean and std.
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
    fmin: float = 40.0,
    fmax: float = 2100.0,
    frame_seconds: float = _DEFAULT_FRAME_SECONDS,
    band_fraction: float = 0.25,
    min_voiced_probability: float = 0.1,
) -> list[DescriptorRow]:
    """Amplitude ratio and harmonic complexity per class (mean ± std over the class's clips, as HFRA appendix A1).

    Args:
        waveforms_by_class: Class name → its clips, each a 1-D waveform (lengths may differ).
        sample_rate: Hz.
        n_harmonics: N for :func:`harmonic_complexity`.
        fmin: See :func:`harmonic_analysis`.
        fmax: See :func:`harmonic_analysis`.
        frame_seconds: See :func:`harmonic_analysis`.
        band_fraction: See :func:`harmonic_analysis`.
        min_voiced_probability: See :func:`harmonic_analysis`.

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
                complexity = harmonic_complexity(
                    clip,
                    sample_rate,
                    n_harmonics,
                    fmin=fmin,
                    fmax=fmax,
                    frame_seconds=frame_seconds,
                    band_fraction=band_fraction,
                    min_voiced_probability=min_voiced_probability,
                )
                complexities.append(float(complexity))
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
