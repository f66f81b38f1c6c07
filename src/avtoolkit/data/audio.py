"""Audio I/O and the spectral front ends.

Workers only *read*: :func:`read_audio` seek-reads the window a sample needs with soundfile. Everything
spectral runs in torch on the batch's device: :class:`Spectrogram` (STFT, log-frequency warp of the
Sound-of-Pixels lineage, inverse warp, iSTFT) for separation, :class:`VGGishLogMel` for segmentation.
"""

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.data.audio_files import audio_info, nonfinite_samples
from avtoolkit.data.errors import DatasetError

__all__ = [
    "Spectrogram",
    "VGGishLogMel",
    "audio_info",
    "log_frequency_grid",
    "nonfinite_samples",
    "read_audio",
    "vggish_mel_matrix",
]


def read_audio(
    path: str | Path,
    sample_rate: int,
    start: int = 0,
    n_samples: int | None = None,
    pad: bool = False,
) -> Tensor:
    """Seek-read a mono float32 window ``[start, start + n_samples)`` of an audio file.

    Multi-channel files are averaged to mono. Only the requested samples are decoded.

    Args:
        path: Audio file (any format libsndfile reads: wav, flac, ogg, ...).
        sample_rate: The rate the caller expects; a file at another rate is an error (no silent resampling).
        start: First sample to read.
        n_samples: How many samples; ``None`` reads to the end.
        pad: Zero-pad a window that runs past the end of the file instead of raising.

    Returns:
        Tensor of shape ``(n_samples,)``.

    Raises:
        DatasetError: missing or corrupt file, wrong sample rate, a window past the end of the file, or non-finite
            samples (NaN or infinity, possible in float wavs) in the window read.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != sample_rate:
                raise DatasetError(
                    f"{path} has sample rate {f.samplerate} Hz but {sample_rate} Hz was expected: "
                    f"resample the dataset (e.g. re-run its preparation with the right rate) or set the "
                    f"datamodule's sample_rate to {f.samplerate}."
                )
            total = f.frames
            count = total - start if n_samples is None else n_samples
            if start < 0 or count < 0 or (start + count > total and not pad):
                raise DatasetError(
                    f"{path}: cannot read samples [{start}, {start + count}) from a file of {total} samples "
                    f"({total / sample_rate:.2f} s); the clip is shorter than the requested window."
                )
            f.seek(min(start, total))
            data = f.read(frames=min(count, max(total - start, 0)), dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise DatasetError(f"cannot decode audio file {path}: {str(err).rstrip('.')}. Re-create or remove it.") from err
    if not np.isfinite(data).all():
        first = start + int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
        raise DatasetError(
            f"{path} has non-finite samples (NaN or infinity), the first read at {first / sample_rate:.2f} s "
            f"(sample {first}): losses and metrics would be NaN. Re-create the file (re-run the preparation of this "
            "clip) or remove the clip; `avtoolkit data check` lists every such file."
        )
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if mono.shape[0] < count:
        mono = np.pad(mono, (0, count - mono.shape[0]))
    return torch.from_numpy(np.ascontiguousarray(mono))


def log_frequency_grid(n_out: int, n_time: int, inverse: bool = False, device: torch.device | None = None) -> Tensor:
    """Sampling grid of the Sound-of-Pixels log-frequency warp, for ``F.grid_sample`` (align_corners=True).

    Forward warp: output row ``y`` ∈ [-1, 1] reads input frequency ``(21^((y+1)/2) - 11) / 10``, so rows are
    spaced logarithmically (dense at low frequencies). The inverse grid maps linear rows back:
    ``y = 2 log(10 f + 11) / log(21) - 1``.

    Returns:
        Grid of shape ``(1, n_out, n_time, 2)`` (x = time, y = frequency).
    """
    y = torch.linspace(-1.0, 1.0, n_out, device=device, dtype=torch.float64)
    if inverse:
        y = 2.0 * torch.log(10.0 * y + 11.0) / math.log(21.0) - 1.0
    else:
        y = (torch.pow(21.0, (y + 1.0) / 2.0) - 11.0) / 10.0
    x = torch.linspace(-1.0, 1.0, n_time, device=device, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # (n_out, n_time, 2)
    return grid.unsqueeze(0).float()


class Spectrogram(nn.Module):
    """STFT magnitude/phase, log-frequency warp and their inverses, batched on the input's device.

    Args:
        n_fft: FFT size (1022 in the Sound-of-Pixels recipe: 512 frequency bins).
        hop_length: Hop in samples (256 in the recipe: 256 frames for a 65535-sample window).
        warp_bins: Rows of the log-frequency-warped spectrogram the network sees; ``None`` disables the warp.
    """

    window: Tensor

    def __init__(self, n_fft: int = 1022, hop_length: int = 256, warp_bins: int | None = 256) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.warp_bins = warp_bins
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def n_freq(self) -> int:
        """Number of linear frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def stft(self, waveform: Tensor) -> Tensor:
        """Complex STFT of ``(..., L)`` → ``(..., F, T)`` (centered, Hann window)."""
        shape = waveform.shape
        spec = torch.stft(
            waveform.reshape(-1, shape[-1]).float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            return_complex=True,
        )
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    @staticmethod
    def magnitude(spec: Tensor) -> Tensor:
        """``|spec|`` of a complex spectrogram (``hypot``: ~3× faster than ``abs`` on CPU, same values)."""
        return torch.hypot(spec.real, spec.imag)

    def istft(self, magnitude: Tensor, phase: Tensor, length: int) -> Tensor:
        """Waveform ``(..., length)`` from magnitude and phase of shape ``(..., F, T)``."""
        spec = torch.polar(magnitude.float(), phase.float())
        shape = spec.shape
        wave = torch.istft(
            spec.reshape(-1, *shape[-2:]),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            length=length,
        )
        return wave.reshape(*shape[:-2], length)

    def _resample_rows(self, x: Tensor, n_out: int, inverse: bool) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, 1, shape[-2], shape[-1])
        grid = log_frequency_grid(n_out, shape[-1], inverse=inverse, device=x.device)
        out = F.grid_sample(flat, grid.expand(flat.shape[0], -1, -1, -1), align_corners=True)
        return out.reshape(*shape[:-2], n_out, shape[-1])

    def warp(self, x: Tensor) -> Tensor:
        """Linear-frequency ``(..., F, T)`` → log-frequency ``(..., warp_bins, T)`` (identity without warp)."""
        return x if self.warp_bins is None else self._resample_rows(x, self.warp_bins, inverse=False)

    def unwarp(self, x: Tensor) -> Tensor:
        """Log-frequency ``(..., warp_bins, T)`` → linear-frequency ``(..., F, T)`` (identity without warp)."""
        return x if self.warp_bins is None else self._resample_rows(x, self.n_freq, inverse=True)

    def n_frames(self, n_samples: int) -> int:
        """Number of STFT frames for a waveform of ``n_samples``."""
        return n_samples // self.hop_length + 1


def vggish_mel_matrix(
    n_mels: int = 64,
    n_fft: int = 512,
    sample_rate: int = 16000,
    f_min: float = 125.0,
    f_max: float = 7500.0,
) -> Tensor:
    """VGGish's mel filterbank ``(n_fft // 2 + 1, n_mels)``: HTK mel scale, triangles built in mel space.

    Differs from librosa/torchaudio filterbanks (which interpolate in Hz); the official VGGish weights
    expect exactly this one. The DC bin is zeroed.
    """

    def hz_to_mel(f: Tensor) -> Tensor:
        return 1127.0 * torch.log1p(f / 700.0)

    bins_mel = hz_to_mel(torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64))
    edges = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min))),
        float(hz_to_mel(torch.tensor(f_max))),
        n_mels + 2,
        dtype=torch.float64,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0, :] = 0.0
    return weights.float()


class VGGishLogMel(nn.Module):
    """VGGish input features: 0.96 s log-mel examples of 96 frames × 64 bands from 16 kHz audio.

    25 ms periodic-Hann window, 10 ms hop, 512-point FFT magnitude, 64 mel bands 125–7500 Hz, ``log(x + 0.01)``,
    then non-overlapping examples of 96 frames. Frames are not centered (as in VGGish).

    Args:
        n_examples: Examples to return per clip (one per video frame). Clips that give fewer are completed by
            ``pad`` ("repeat": repeat the last example, as AVSBench S4/MS3; "zero": zeros, as AVSS).
        pad: How missing examples are filled.
    """

    window: Tensor
    mel: Tensor
    sample_rate = 16000
    window_length = 400
    hop_length = 160
    n_fft = 512
    example_frames = 96

    def __init__(self, n_examples: int, pad: str = "repeat") -> None:
        super().__init__()
        if pad not in ("repeat", "zero"):
            raise ValueError(f"pad must be 'repeat' or 'zero', got {pad!r}")
        self.n_examples = n_examples
        self.pad = pad
        self.register_buffer("window", torch.hann_window(self.window_length, periodic=True), persistent=False)
        self.register_buffer("mel", vggish_mel_matrix(), persistent=False)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, L)`` 16 kHz waveform → ``(B, n_examples, 1, 96, 64)`` log-mel examples.

        Args:
            waveform: Audio, possibly zero-padded at the end.
            lengths: ``(B,)`` samples of each row that are real audio; examples that need padding samples are
                filled as ``pad`` says. ``None``: all of ``L`` is real.
        """
        frames = waveform.float().unfold(-1, self.window_length, self.hop_length)  # (B, n_frames, 400)
        magnitude = torch.fft.rfft(frames * self.window, n=self.n_fft).abs()
        log_mel = torch.log(magnitude @ self.mel + 0.01)  # (B, n_frames, 64)
        batch, n_frames = log_mel.shape[:2]
        n_whole = n_frames // self.example_frames
        examples = log_mel[:, : n_whole * self.example_frames].reshape(batch, n_whole, self.example_frames, -1)
        if n_whole < self.n_examples:
            examples = torch.cat(
                [examples, examples.new_zeros(batch, self.n_examples - n_whole, *examples.shape[2:])], 1
            )
        examples = examples[:, : self.n_examples]
        # Examples made only of real audio; the rest are repeats of the last real one, or zeros.
        real_samples = torch.full((batch,), waveform.shape[-1]) if lengths is None else lengths.cpu()
        real_frames = torch.clamp((real_samples - self.window_length) // self.hop_length + 1, min=0)
        n_real = torch.clamp(real_frames // self.example_frames, max=self.n_examples).to(examples.device)
        index = torch.arange(self.n_examples, device=examples.device).expand(batch, -1)
        is_real = index < n_real[:, None]
        if self.pad == "repeat":
            source = torch.minimum(index, torch.clamp(n_real - 1, min=0)[:, None])
            examples = torch.gather(examples, 1, source[:, :, None, None].expand_as(examples))
            is_real = is_real | (n_real[:, None] > 0)
        examples = examples * is_real[:, :, None, None]
        return examples.unsqueeze(2)
