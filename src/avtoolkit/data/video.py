"""Pictures and video: read images and masks, decode video frames and audio tracks.

Images are returned as uint8 tensors ``(3, H, W)`` (RGB) and grayscale masks as uint8 ``(H, W)``; resizing
is antialiased for images and nearest-neighbour for masks, so label values are never blended. Masks are decoded by
:mod:`avtoolkit.data.mask_files` (Pillow, no torch: the dataset check reads them without torch). Videos are
decoded with PyAV (an optional dependency, extra ``video``), sampling frames at a target rate.
"""

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from avtoolkit.data.errors import DatasetError
from avtoolkit.data.mask_files import read_mask_array, read_rgb_mask_array
from avtoolkit.utils.imports import lazy_import

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
"""Video file extensions the toolkit looks for (preferred first when several files match)."""

Size = int | tuple[int, int]
"""An output size: ``S`` for ``S×S`` or ``(H, W)``."""

_TIME_EPS = 1e-6  # seconds; absorbs rounding in frame timestamps (pts × time_base)


def _hw(size: Size) -> list[int]:
    return [size, size] if isinstance(size, int) else [size[0], size[1]]


def _decode(path: str | Path, mode: ImageReadMode) -> Tensor:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    try:
        return decode_image(str(path), mode=mode)
    except RuntimeError as err:
        raise DatasetError(f"cannot decode image {path}: {err}. Re-create or remove it.") from err


def read_image(path: str | Path, size: Size | None = None) -> Tensor:
    """Read a JPEG/PNG picture as RGB.

    Grayscale pictures are repeated to three channels, alpha is dropped, 16-bit pictures are scaled to 8 bits.

    Args:
        path: Image file.
        size: Output size (``S`` for ``S×S`` or ``(H, W)``), resized with antialiasing; ``None`` keeps it.

    Returns:
        uint8 tensor ``(3, H, W)``.

    Raises:
        DatasetError: the file is missing or cannot be decoded.
    """
    image = _decode(path, ImageReadMode.RGB)
    if image.dtype != torch.uint8:
        image = TF.to_dtype(image, torch.uint8, scale=True)
    if size is not None:
        image = TF.resize(image, _hw(size), antialias=True)
    return image


def resize_mask(mask: Tensor, size: Size | None) -> Tensor:
    """Nearest-neighbour resize of a mask or label map ``(H, W)`` or ``(C, H, W)``, any dtype (values kept).

    Args:
        mask: The mask.
        size: Output size (``S`` for ``S×S`` or ``(H, W)``); ``None`` or the current size returns it as is.
    """
    if size is None or tuple(mask.shape[-2:]) == tuple(_hw(size)):
        return mask
    if mask.ndim == 2:
        return resize_mask(mask[None], size)[0]
    return TF.resize(mask, _hw(size), interpolation=TF.InterpolationMode.NEAREST_EXACT)


def read_mask(path: str | Path, size: Size | None = None) -> Tensor:
    """Read a grayscale mask (colour or palette masks are converted to luminance, as Pillow does).

    The tensor form of :func:`avtoolkit.data.mask_files.read_mask_array`, which ``avtoolkit data check`` uses.

    Args:
        path: Mask file (PNG).
        size: Output size, resized nearest-neighbour (values are kept, never blended); ``None`` keeps it.

    Returns:
        uint8 tensor ``(H, W)``.

    Raises:
        DatasetError: the file is missing, cannot be decoded or is not 8-bit.
    """
    return resize_mask(torch.from_numpy(read_mask_array(path)), size)


def read_rgb_mask(path: str | Path, size: Size | None = None) -> Tensor:
    """Read a colour label image (e.g. AVSS ``labels_rgb``), palette PNGs expanded to their colours.

    The tensor form of :func:`avtoolkit.data.mask_files.read_rgb_mask_array`, which ``avtoolkit data check`` uses.

    Args:
        path: Label image (PNG).
        size: Output size, resized nearest-neighbour (no new colours appear); ``None`` keeps it.

    Returns:
        uint8 tensor ``(3, H, W)``.

    Raises:
        DatasetError: the file is missing, cannot be decoded or is not 8-bit.
    """
    return resize_mask(torch.from_numpy(read_rgb_mask_array(path)).permute(2, 0, 1).contiguous(), size)


def open_media(path: str | Path, what: str) -> Any:  # av.container.InputContainer
    """Open a media file with PyAV; a missing or unreadable file is a :class:`DatasetError` naming it."""
    av = lazy_import("av", "video")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        raise DatasetError(f"cannot open {what} {path}: {err}. Re-download or remove it.") from err


def decode_video(path: str | Path, fps: float, size: Size | None = None) -> Iterator[Tensor]:
    """Decode the frames of a video's first video stream at a target rate.

    Output frame ``k`` (from 0) is the frame shown at time ``k / fps`` (the latest decoded frame whose
    timestamp is not after it; times before the first frame get the first frame). Frames are produced while
    ``k / fps`` is inside the video, so a ``D``-second video gives about ``D × fps`` frames, whatever its own
    rate (frames are repeated or dropped as needed).

    Args:
        path: Video file (any container/codec FFmpeg reads).
        fps: Output frame rate.
        size: Output size (``S`` for ``S×S`` or ``(H, W)``), resized with antialiasing; ``None`` keeps it.

    Yields:
        uint8 tensors ``(3, H, W)`` (RGB).

    Raises:
        DatasetError: the file is missing, has no video stream or cannot be decoded.
        MissingDependencyError: PyAV is not installed.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    av = lazy_import("av", "video")
    with open_media(path, "video") as container:
        if not container.streams.video:
            raise DatasetError(f"{path} has no video stream; expected a video file.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        n_out, shown, shown_end = 0, None, 0.0  # shown: the latest decoded frame, converted only if output
        try:
            for i, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else i / (rate or fps)
                if shown is not None:  # it is shown at the output times before this frame's time
                    n_before = _n_times_before(time, fps)
                    yield from _copies(shown, size, n_before - n_out)
                    n_out = max(n_out, n_before)
                shown, shown_end = frame, time + _frame_duration(frame, rate)
        except av.error.FFmpegError as err:
            raise DatasetError(f"cannot decode video {path}: {err}. Re-download or remove it.") from err
        if shown is None:
            raise DatasetError(f"{path} contains no decodable video frame; re-download or remove it.")
        # The last frame is shown until its end; a video gives at least one frame.
        yield from _copies(shown, size, max(_n_times_before(shown_end, fps), 1) - n_out)


def _n_times_before(time: float, fps: float) -> int:
    """How many output times ``k / fps`` (k = 0, 1, ...) lie before ``time`` (with a rounding tolerance)."""
    return max(math.ceil((time - _TIME_EPS) * fps), 0)


def _copies(frame: Any, size: Size | None, n: int) -> Iterator[Tensor]:
    """``n`` tensors of a decoded frame (converted once; repeats are copies)."""
    image = None
    for _ in range(n):
        image = _frame_tensor(frame, size) if image is None else image.clone()
        yield image


def _frame_duration(frame: Any, rate: float | None) -> float:
    """Seconds a frame is shown: its own duration, else one period of the stream's average rate."""
    duration = getattr(frame, "duration", None)  # PyAV >= 14
    if duration and frame.time_base:
        return float(duration * frame.time_base)
    return 1.0 / rate if rate else 0.0


def _frame_tensor(frame: Any, size: Size | None) -> Tensor:
    image = torch.from_numpy(np.ascontiguousarray(frame.to_ndarray(format="rgb24"))).permute(2, 0, 1)
    if size is not None:
        image = TF.resize(image, _hw(size), antialias=True)
    return image.contiguous()


def decode_audio_track(path: str | Path, sample_rate: int) -> Tensor:
    """Decode the first audio stream of a media file to mono at ``sample_rate``.

    FFmpeg's resampler changes the rate; channels are then averaged, as
    :func:`~avtoolkit.data.audio.read_audio` does (FFmpeg's own down-mix sums at −3 dB, which can exceed
    [−1, 1]). The length follows the decoded stream (codecs such as AAC add some encoder padding).

    Args:
        path: Video or audio file.
        sample_rate: Output rate in Hz.

    Returns:
        float32 tensor ``(L,)``.

    Raises:
        DatasetError: the file is missing, has no audio stream or cannot be decoded.
        MissingDependencyError: PyAV is not installed.
    """
    av = lazy_import("av", "video")
    chunks: list[np.ndarray] = []
    with open_media(path, "media") as container:
        if not container.streams.audio:
            raise DatasetError(f"{path} has no audio stream; a clip needs its sound track.")
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # planar: (channels, samples)
        try:
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().mean(axis=0) for out in resampler.resample(None))
        except av.error.FFmpegError as err:
            raise DatasetError(f"cannot decode the audio of {path}: {err}. Re-download it.") from err
    if not chunks:
        return torch.zeros(0)
    return torch.from_numpy(np.concatenate(chunks).astype(np.float32, copy=False))
