"""The corruptions of the robustness suite: pure tensor functions and their severity tables.

Every function returns a new tensor (its input is never modified) and draws its randomness from a CPU
``torch.Generator``, moving the draws to the input's device, so a seeded run gives the same corruption on any
device. Severity 0 is never a function call: the suite leaves the batch as it is, so severity 0 reproduces the
clean metrics exactly.

Audio (16 kHz segmentation waveforms before the log-mel, separation mixtures):

* :func:`add_noise_at_snr`: white Gaussian noise over the clip's valid samples, scaled so that the signal-to-noise
  ratio over those samples is exactly the asked one (the drawn noise's own power is measured, not assumed).
* :func:`loudness_matched_noise`: white Gaussian noise alone, at the clip's loudness (RMS over its valid samples).
* :func:`silence`: all zeros.

Frames (float in [0, 1], ``(..., T, 3, H, W)``; one "sequence" is everything but the last four dimensions, a
segmentation clip or a separation source):

* :func:`frame_noise`: Gaussian noise of a given standard deviation, clamped to [0, 1]
  (:func:`avtoolkit.analysis.gates.corrupt_frames`, ``"noise"``).
* :func:`blur_frames`: a Gaussian blur whose σ is a fraction of the frame side (separable, edges replicated).
* :func:`occlude_frames`: a square block, its side a fraction of the shorter frame side, filled with mid-grey;
  one random position per sequence, the same in all its frames (an occluder standing in the scene).
* :func:`black_frames`: ``⌈fraction · T⌉`` randomly chosen frames of each sequence set to 0 (so every severity
  blackens at least one frame, also of a one-frame query).
* :func:`blank_frames`: a blend towards uniform mid-grey (``corrupt_frames``, ``"blank"``).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from avtoolkit.analysis.gates import corrupt_frames

__all__ = [
    "SEGMENTATION_CORRUPTIONS",
    "SEPARATION_CORRUPTIONS",
    "CorruptionSpec",
    "add_noise_at_snr",
    "black_frames",
    "blank_frames",
    "blur_frames",
    "frame_noise",
    "loudness_matched_noise",
    "measured_snr_db",
    "occlude_frames",
    "signal_power",
    "silence",
    "valid_samples",
]

Kind = Literal["negative", "audio", "visual", "query"]

OCCLUSION_FILL = 0.5
"""Value of the occluding block (mid-grey; never exactly a uint8 frame value k/255)."""


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption of the suite and what its severities mean.

    Attributes:
        name: The name the suite and its report use (e.g. ``"audio_noise"``).
        kind: ``"negative"`` (segmentation: audio that matches nothing in the frames, empty ground truth),
            ``"audio"`` (noise on the audio), ``"visual"`` (corrupted frames / query pictures) or ``"query"``
            (separation: the query picture replaced).
        parameter: What the level values are (e.g. ``"SNR (dB)"``); empty for single-level corruptions.
        levels: The parameter at severity 1, 2, 3; a single-level corruption has one level (severity 1).
        description: One line for the report.
    """

    name: str
    kind: Kind
    parameter: str
    levels: tuple[float, ...]
    description: str

    @property
    def severities(self) -> tuple[int, ...]:
        """The severities this corruption has, 1-based (severity 0, the clean input, is implied)."""
        return tuple(range(1, len(self.levels) + 1))

    def level(self, severity: int) -> float:
        """The parameter at ``severity`` (≥ 1).

        Raises:
            ValueError: a severity this corruption does not have.
        """
        if severity not in self.severities:
            raise ValueError(f"{self.name} has severities {self.severities}, not {severity}")
        return self.levels[severity - 1]


SNR_LEVELS = (20.0, 10.0, 0.0)
NOISE_STD_LEVELS = (0.1, 0.2, 0.4)
BLUR_LEVELS = (1 / 112, 1 / 56, 1 / 28)  # σ = 2, 4, 8 px at 224 px
OCCLUSION_LEVELS = (0.25, 0.5, 0.75)  # 1/16, 1/4, 9/16 of the frame area
BLACK_LEVELS = (1 / 3, 2 / 3, 1.0)
BLANK_LEVELS = (1 / 3, 2 / 3, 1.0)

_VISUAL = {
    "noise": ("std of the noise (frame range [0, 1])", NOISE_STD_LEVELS, "Gaussian noise added, clamped to [0, 1]"),
    "blur": (
        "σ (fraction of the frame side)",
        BLUR_LEVELS,
        "Gaussian blur, σ = 1/112, 1/56, 1/28 of the side (2, 4, 8 px at 224 px)",
    ),
    "occlusion": (
        "block side (fraction of the frame side)",
        OCCLUSION_LEVELS,
        "a mid-grey square at a random position (the same in all frames of a sequence)",
    ),
    "black": ("fraction of the frames", BLACK_LEVELS, "randomly chosen frames set to black (0)"),
}

SEGMENTATION_CORRUPTIONS: dict[str, CorruptionSpec] = {
    "negative_silence": CorruptionSpec(
        "negative_silence", "negative", "", (math.nan,), "negative audio: silence (all zeros); empty ground truth"
    ),
    "negative_noise": CorruptionSpec(
        "negative_noise",
        "negative",
        "",
        (math.nan,),
        "negative audio: white noise at the clip's loudness (RMS of its valid samples); empty ground truth",
    ),
    "negative_offscreen": CorruptionSpec(
        "negative_offscreen",
        "negative",
        "",
        (math.nan,),
        "negative audio: the audio of another test clip sharing no category with these frames; empty ground truth",
    ),
    "audio_noise": CorruptionSpec(
        "audio_noise", "audio", "SNR (dB)", SNR_LEVELS, "white noise added to the clip's audio at the given SNR"
    ),
    **{
        f"frame_{name}": CorruptionSpec(f"frame_{name}", "visual", parameter, levels, text)
        for name, (parameter, levels, text) in _VISUAL.items()
    },
}
"""Segmentation corruptions by name (negative audio, noisy audio, corrupted frames)."""

SEPARATION_CORRUPTIONS: dict[str, CorruptionSpec] = {
    "mixture_noise": CorruptionSpec(
        "mixture_noise", "audio", "SNR (dB)", SNR_LEVELS, "white noise added to the mixture at the given SNR"
    ),
    **{
        f"query_{name}": CorruptionSpec(f"query_{name}", "visual", parameter, levels, f"query pictures: {text}")
        for name, (parameter, levels, text) in _VISUAL.items()
    },
    "query_blank": CorruptionSpec(
        "query_blank",
        "visual",
        "blend weight towards mid-grey",
        BLANK_LEVELS,
        "query pictures blended towards uniform mid-grey (1: blank)",
    ),
    "absent_query": CorruptionSpec(
        "absent_query",
        "query",
        "",
        (math.nan,),
        "source 1's picture replaced by one of a class in neither source: its estimate should be silent",
    ),
    "same_class_query": CorruptionSpec(
        "same_class_query",
        "query",
        "",
        (math.nan,),
        "source 2's picture replaced by another picture of source 1's class (two queries of one class)",
    ),
}
"""Separation corruptions by name (noisy mixtures, corrupted query pictures, replaced queries)."""


# -- audio --------------------------------------------------------------------------------------------------


def valid_samples(waveform: Tensor, length: Tensor | None = None) -> Tensor:
    """Which samples of ``(B, L)`` waveforms are real audio: the first ``length[b]`` of row ``b`` (all if ``None``)."""
    positions = torch.arange(waveform.shape[-1], device=waveform.device)
    if length is None:
        return torch.ones_like(waveform, dtype=torch.bool)
    return positions[None, :] < length.to(waveform.device)[:, None]


def signal_power(waveform: Tensor, length: Tensor | None = None) -> Tensor:
    """Mean square of each row over its valid samples, ``(B,)`` float64 (0 for a row without valid samples)."""
    valid = valid_samples(waveform, length)
    energy = (waveform.double().square() * valid).sum(-1)
    return energy / valid.sum(-1).clamp_min(1)


def measured_snr_db(clean: Tensor, noisy: Tensor, length: Tensor | None = None) -> Tensor:
    """``10 log10(P_clean / P_(noisy − clean))`` over the valid samples of each row, ``(B,)`` float64 dB."""
    return 10 * torch.log10(signal_power(clean, length) / signal_power(noisy.double() - clean.double(), length))


def _white_noise(waveform: Tensor, length: Tensor | None, power: Tensor, generator: torch.Generator | None) -> Tensor:
    """White Gaussian noise of exactly ``power`` (mean square) over each row's valid samples, zero elsewhere."""
    valid = valid_samples(waveform, length)
    noise = torch.randn(waveform.shape, generator=generator, dtype=torch.float64).to(waveform.device) * valid
    drawn = signal_power(noise, length)
    scale = torch.where(drawn > 0, (power.double() / drawn.clamp_min(1e-300)).sqrt(), torch.zeros_like(drawn))
    return (noise * scale[:, None]).to(waveform.dtype)


def add_noise_at_snr(
    waveform: Tensor, snr_db: float, length: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Add white Gaussian noise at exactly ``snr_db`` over each row's valid samples.

    The noise is drawn, its power over the valid samples measured, and it is scaled to
    ``P_signal / 10^(snr_db / 10)``; padding samples stay as they are. A silent row stays silent.

    Args:
        waveform: ``(B, L)`` audio.
        snr_db: Signal-to-noise ratio in dB (``inf``: nothing added).
        length: ``(B,)`` valid samples per row (``None``: all).
        generator: CPU random generator.

    Returns:
        The noisy ``(B, L)`` audio, same dtype and device.
    """
    if math.isinf(snr_db) and snr_db > 0:
        return waveform.clone()
    power = signal_power(waveform, length) / 10 ** (snr_db / 10)
    return waveform + _white_noise(waveform, length, power, generator)


def loudness_matched_noise(
    waveform: Tensor, length: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """White Gaussian noise alone, at each row's loudness: the RMS of its valid samples (padding stays zero)."""
    return _white_noise(waveform, length, signal_power(waveform, length), generator)


def silence(waveform: Tensor) -> Tensor:
    """All-zero audio of the same shape."""
    return torch.zeros_like(waveform)


# -- frames -------------------------------------------------------------------------------------------------


def _check_frames(frames: Tensor) -> None:
    if frames.dim() < 4 or frames.shape[-3] != 3 or not frames.is_floating_point():
        raise ValueError(f"frames must be float (..., T, 3, H, W), got {tuple(frames.shape)} {frames.dtype}")


def frame_noise(frames: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian noise of standard deviation ``std`` (frame range [0, 1]), clamped to [0, 1]."""
    _check_frames(frames)
    return corrupt_frames(frames.cpu(), "noise", std, generator).to(frames.device)


def blank_frames(frames: Tensor, strength: float) -> Tensor:
    """``(1 − strength) · frames + strength · 0.5``: 1 gives uniform mid-grey pictures."""
    _check_frames(frames)
    return corrupt_frames(frames, "blank", strength)


def blur_frames(frames: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with σ = ``sigma`` × the shorter frame side (pixels), kernel radius ⌈3σ⌉, edges replicated.

    Args:
        frames: ``(..., 3, H, W)`` float frames.
        sigma: σ as a fraction of ``min(H, W)`` (> 0).
    """
    _check_frames(frames)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    size = min(frames.shape[-2:])
    sigma_px = sigma * size
    radius = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = (kernel / kernel.sum()).to(frames)
    flat = frames.reshape(-1, 3, *frames.shape[-2:])
    horizontal = kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1)
    out = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=3)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), vertical, groups=3)
    return out.reshape(frames.shape)


def occlusion_side(frames: Tensor, fraction: float) -> int:
    """Side in pixels of the occluding block: ``round(fraction × min(H, W))``, at least 1."""
    return max(1, round(fraction * min(frames.shape[-2:])))


def occlude_frames(
    frames: Tensor, fraction: float, generator: torch.Generator | None = None, fill: float = OCCLUSION_FILL
) -> Tensor:
    """A ``fill``-valued square of side :func:`occlusion_side` at a random position per sequence.

    Args:
        frames: ``(..., T, 3, H, W)`` float frames; every leading index (a clip, a source) gets its own position,
            shared by its ``T`` frames.
        fraction: Block side as a fraction of the shorter frame side, in (0, 1].
        generator: CPU random generator.
        fill: Value of the block's pixels.
    """
    _check_frames(frames)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    H, W = frames.shape[-2:]
    side = occlusion_side(frames, fraction)
    out = frames.clone(memory_format=torch.contiguous_format)
    flat = out.view(-1, *frames.shape[-4:])  # (S, T, 3, H, W)
    tops = torch.randint(0, H - side + 1, (flat.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, W - side + 1, (flat.shape[0],), generator=generator).tolist()
    for s, (top, left) in enumerate(zip(tops, lefts, strict=True)):
        flat[s, :, :, top : top + side, left : left + side] = fill
    return out


def black_frames(frames: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Set ``⌈fraction × T⌉`` randomly chosen frames of each sequence to 0 (black).

    Args:
        frames: ``(..., T, 3, H, W)`` float frames.
        fraction: Fraction of each sequence's ``T`` frames, in [0, 1].
        generator: CPU random generator.
    """
    _check_frames(frames)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    T = frames.shape[-4]
    k = math.ceil(fraction * T - 1e-9)
    out = frames.clone(memory_format=torch.contiguous_format)
    flat = out.view(-1, *frames.shape[-4:])
    for s in range(flat.shape[0]):
        chosen = torch.randperm(T, generator=generator)[:k].tolist()
        flat[s, chosen] = 0.0
    return out
