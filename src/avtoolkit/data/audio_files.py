"""Audio file headers and scans, with soundfile and NumPy only (no torch).

The dataset check (:mod:`avtoolkit.data.check`) and the layout indexes (:mod:`avtoolkit.data.music`) read only
headers or scan samples, so they import this module rather than :mod:`avtoolkit.data.audio`, which needs torch.
"""

from pathlib import Path

import numpy as np
import soundfile as sf

from avtoolkit.data.errors import DatasetError


def audio_info(path: str | Path) -> tuple[int, int]:
    """Return ``(sample_rate, n_samples)`` of an audio file from its header.

    Raises:
        DatasetError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DatasetError(f"cannot read audio file {path}: {str(err).rstrip('.')}. Re-create or remove it.") from err
    return int(info.samplerate), int(info.frames)


_INTEGER_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW"})
"""Sample encodings that cannot hold NaN or infinity (FLAC reports these too)."""


def nonfinite_samples(path: str | Path, block: int = 1 << 18) -> tuple[int, int | None]:
    """Count the non-finite samples (NaN or infinity) of an audio file: ``(count, first sample index or None)``.

    Integer encodings cannot hold them, so only files in other encodings (float wavs, compressed formats) are
    decoded, in blocks of ``block`` samples; a sample with a non-finite value in any channel counts once.

    Raises:
        DatasetError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"audio file not found: {path}")
    count, first, offset = 0, None, 0
    try:
        with sf.SoundFile(str(path)) as f:
            if f.subtype in _INTEGER_SUBTYPES:
                return 0, None
            for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                bad = ~np.isfinite(data).all(axis=1)
                if bad.any():
                    count += int(bad.sum())
                    first = offset + int(np.flatnonzero(bad)[0]) if first is None else first
                offset += data.shape[0]
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DatasetError(f"cannot decode audio file {path}: {str(err).rstrip('.')}. Re-create or remove it.") from err
    return count, first
