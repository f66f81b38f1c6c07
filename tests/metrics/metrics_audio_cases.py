"""Real instrument audio for the metric tests: scenes to render and realistic separation estimates."""

import numpy as np
from scipy.signal import fftconvolve, istft, stft

SAMPLE_RATE = 11025

# (instruments, seconds): 2 and 3 sources, tonal and percussive, 2–4 s (mir_eval takes ~0.1 s per clip).
SCENES = [
    (("violin", "cello"), 3.0),
    (("trumpet", "flute"), 2.0),
    (("piano", "drum"), 3.0),
    (("guzheng", "clarinet", "saxophone"), 2.0),
]


def _stft_masked(refs: np.ndarray, soft: bool) -> np.ndarray:
    """Estimates by masking the mixture's STFT with ideal binary or ratio masks (Sound of Pixels style)."""
    kw = {"nperseg": 1022, "noverlap": 1022 - 256}
    _, _, spec = stft(refs, **kw)
    _, _, mix = stft(refs.sum(0), **kw)
    mag = np.abs(spec)
    share = mag**2 / ((mag**2).sum(0) + 1e-12) if soft else (mag / (mag.sum(0) + 1e-12) > 0.5)
    return istft(share * mix[None], **kw)[1][:, : refs.shape[1]]


def make_estimates(refs: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A realistic estimate of every source of ``refs (N, L)``."""
    other = np.roll(refs, 1, axis=0)  # the next source leaks into each estimate
    if kind == "leakage_noise":
        return refs + 0.3 * other + 0.05 * refs.std() * rng.standard_normal(refs.shape)
    if kind == "filtered":  # smeared by a short decaying filter, plus leakage
        h = rng.standard_normal(64) * np.exp(-np.arange(64) / 10.0)
        return np.stack([fftconvolve(x, h)[: refs.shape[1]] for x in refs]) + 0.2 * other
    if kind == "binary_mask":
        return _stft_masked(refs, soft=False)
    if kind == "ratio_mask_noise":
        return _stft_masked(refs, soft=True) + 0.01 * rng.standard_normal(refs.shape)
    raise ValueError(kind)


ESTIMATE_KINDS = ("leakage_noise", "filtered", "binary_mask", "ratio_mask_noise")
