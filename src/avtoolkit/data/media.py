"""Predict on your own media: a video file, or an audio file plus pictures (``avtoolkit predict``).

Two predict-only datamodules turn one input into batches with the keys and shapes the tasks are trained on
(:mod:`avtoolkit.data.batch`), plus a few position keys (below) that tell
:class:`~avtoolkit.callbacks.predictions.PredictionWriter` where each prediction goes:

- :class:`MediaSegmentationDataModule`: frames of a video one second apart, ``frames_per_clip`` per sample, with
  the audio of those seconds, as AVSBench clips are (the VGGish log-mel is computed on the device, as
  :class:`~avtoolkit.data.datamodules.SegmentationDataModule` does). The whole video is covered.
- :class:`MediaSeparationDataModule`: the mixture (a video's sound track or an audio file) in overlapping
  windows of the trained length that cover the whole file, with one picture per source: the given images, or
  the video's own frames as a single source.

Everything is checked, then decoded, once, in ``setup("predict")`` (which Lightning runs before it loads the
checkpoint); problems raise a :class:`~avtoolkit.data.errors.DatasetError` naming the file and the fix.
"""

from collections import Counter
from pathlib import Path

import torch
import torchaudio.functional as AF
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torch.utils.data import Dataset

from avtoolkit.data.audio import VGGishLogMel, read_audio
from avtoolkit.data.audio_files import audio_info
from avtoolkit.data.avsbench_layout import SAMPLE_RATE as SEGMENTATION_RATE
from avtoolkit.data.batch import (
    AUDIO,
    DISPLAY_FRAMES,
    FRAME_INDEX,
    FRAMES,
    MIXTURE,
    MIXTURE_EMB,
    MIXTURE_LENGTH,
    MIXTURE_START,
    VISUAL_EMB,
    WAVEFORM,
    WAVEFORM_LENGTH,
)
from avtoolkit.data.datamodules import BaseAVDataModule, Split
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.video import VIDEO_EXTENSIONS, decode_audio_track, decode_video, read_image
from avtoolkit.utils.imports import lazy_import

SOUND_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
"""Sound files read with soundfile (libsndfile)."""
AUDIO_EXTENSIONS = (*SOUND_EXTENSIONS, ".m4a", ".aac", ".opus", *VIDEO_EXTENSIONS)
"""Accepted as ``audio``: sound files, and the sound track of other audio/video containers (PyAV)."""
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

MIN_SEGMENTATION_SECONDS = (
    (VGGishLogMel.example_frames - 1) * VGGishLogMel.hop_length + VGGishLogMel.window_length
) / SEGMENTATION_RATE
"""Shortest audio for segmentation: one VGGish example (0.975 s)."""
MIN_SEPARATION_SECONDS = 1.0
"""Shortest audio for separation (the networks are trained on windows of several seconds)."""


def check_file(path: str | Path, what: str, option: str, extensions: tuple[str, ...]) -> Path:
    """An existing file with a supported extension, else a :class:`DatasetError` naming the option to fix.

    Args:
        path: The file.
        what: What it is, for the message ("video", "audio", "image").
        option: The command-line option that gave it (e.g. ``--data.video``).
        extensions: Accepted extensions (lower case, with the dot).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path} (given as {option}); check the path.")
    if path.suffix.lower() not in extensions:
        raise DatasetError(
            f"{path}: unsupported {what} file extension {path.suffix or '(none)'!r} ({option}); use one of "
            f"{', '.join(extensions)}, or convert it, e.g. `ffmpeg -i {path} {path.stem}{extensions[0]}`."
        )
    return path


def probe(path: Path) -> tuple[bool, bool]:
    """Whether a media file has a video stream and an audio stream.

    Raises:
        DatasetError: FFmpeg cannot open the file (corrupt, truncated, or not media).
        MissingDependencyError: PyAV is not installed.
    """
    av = lazy_import("av", "video")
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video), bool(container.streams.audio)
    except av.error.FFmpegError as err:
        raise DatasetError(
            f"cannot read {path}: {err}. The file is corrupt, truncated or not a video; re-export or re-download "
            f"it, or re-encode it with `ffmpeg -i {path} -c:v libx264 -c:a aac {path.stem}_fixed.mp4`."
        ) from err


def check_video(path: str | Path, option: str, needs_audio: bool) -> Path:
    """A readable video file (with a sound track if ``needs_audio``), else a :class:`DatasetError`."""
    if Path(path).suffix.lower() in SOUND_EXTENSIONS:
        raise DatasetError(f"{path} is a sound file, not a video ({option}); give it as --data.audio instead.")
    path = check_file(path, "video", option, VIDEO_EXTENSIONS)
    has_video, has_audio = probe(path)
    if not has_video:
        raise DatasetError(f"{path} has no video stream ({option}); give its sound as --data.audio instead.")
    if needs_audio and not has_audio:
        raise DatasetError(
            f"{path} has no audio stream, and the prediction needs sound: give the sound as --data.audio FILE."
        )
    return path


def check_audio(path: str | Path, option: str) -> Path:
    """A readable audio file (a sound file, or a container with a sound track), else a :class:`DatasetError`."""
    path = check_file(path, "audio", option, AUDIO_EXTENSIONS)
    if path.suffix.lower() in SOUND_EXTENSIONS:
        audio_info(path)  # raises a DatasetError naming the file when libsndfile cannot read it
    elif not probe(path)[1]:
        raise DatasetError(f"{path} has no audio stream ({option}); give a file with sound.")
    return path


def load_audio(path: Path, sample_rate: int, min_seconds: float) -> Tensor:
    """The whole sound of a file, mono at ``sample_rate`` ``(L,)``; at least ``min_seconds`` long.

    Sound files are read with soundfile and resampled with torchaudio; other containers are decoded (and
    resampled) with PyAV.

    Raises:
        DatasetError: unreadable file, no sound track, or shorter than ``min_seconds``.
    """
    if path.suffix.lower() in SOUND_EXTENSIONS:
        rate, _ = audio_info(path)
        wave = read_audio(path, rate)
        wave = AF.resample(wave, rate, sample_rate) if rate != sample_rate else wave
    else:
        wave = decode_audio_track(path, sample_rate)
    seconds = wave.shape[0] / sample_rate
    if seconds < min_seconds:
        raise DatasetError(
            f"the audio of {path} lasts {seconds:.2f} s, too short: at least {min_seconds:.2f} s is needed. "
            "Use a longer recording."
        )
    return wave


def unique_names(paths: list[Path]) -> list[str]:
    """File stems made unique (``guitar``, ``guitar_2``, ...), in order."""
    counts = Counter(p.stem for p in paths)
    seen: Counter[str] = Counter()
    names = []
    for path in paths:
        seen[path.stem] += 1
        names.append(path.stem if counts[path.stem] == 1 or seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem]}")
    return names


class MediaSegmentationFrames(Dataset[dict[str, Tensor]]):
    """Segmentation samples over a whole video: ``T`` frames one second apart and the audio of those seconds.

    With ``frame_rate`` r > 1 the video is sampled at r frames per second in r interleaved passes: pass p takes
    the frames at p/r, p/r + 1, p/r + 2, ... seconds, so every sample still looks like an AVSBench clip (frames
    one second apart, the continuous audio from its first frame). Samples are ordered by time (the passes of one
    stretch of video follow each other). The last sample of a pass repeats its last frame (``FRAME_INDEX`` -1);
    audio missing at the end is zero-padded and ``WAVEFORM_LENGTH`` says so (the log-mel then repeats its last
    whole window, as for S4/MS3).

    Args:
        frames: ``(n, 3, S, S)`` uint8 frames at ``frame_rate`` per second (frame i at i / frame_rate s).
        display: ``(n, 3, Hd, Wd)`` uint8, the same frames at the overlay size.
        audio: ``(L,)`` 16 kHz audio.
        frames_per_clip: ``T``, frames per sample.
        frame_rate: Frames per second of ``frames``.
    """

    def __init__(self, frames: Tensor, display: Tensor, audio: Tensor, frames_per_clip: int, frame_rate: int) -> None:
        self.frames, self.display, self.audio = frames, display, audio
        self.frames_per_clip = frames_per_clip
        self.frame_rate = frame_rate
        n, step = frames.shape[0], frames_per_clip * frame_rate  # step: frames in one stretch of T seconds
        self.windows = [
            list(range(first + phase, min(first + step, n), frame_rate))
            for first in range(0, n, step)
            for phase in range(frame_rate)
            if first + phase < n
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        real = self.windows[index]
        n_pad = self.frames_per_clip - len(real)
        chosen = torch.tensor(real + [real[-1]] * n_pad)
        n_samples = self.frames_per_clip * SEGMENTATION_RATE
        start = round(real[0] / self.frame_rate * SEGMENTATION_RATE)
        piece = self.audio[start : start + n_samples]
        return {
            FRAMES: self.frames[chosen],
            DISPLAY_FRAMES: self.display[chosen],
            WAVEFORM: torch.cat([piece, piece.new_zeros(n_samples - piece.shape[0])]),
            WAVEFORM_LENGTH: torch.tensor(piece.shape[0]),
            FRAME_INDEX: torch.tensor(real + [-1] * n_pad),
        }


class MediaSeparationWindows(Dataset[dict[str, Tensor]]):
    """Separation samples over a whole mixture: windows of ``window`` samples, ``hop`` apart, covering it.

    Args:
        mixture: ``(L,)`` the input audio.
        window: Samples per window (the last one is zero-padded).
        hop: Samples between window starts.
        frames: ``(n_windows, N, Tv, 3, S, S)`` uint8, the pictures of each window's sources.
    """

    def __init__(self, mixture: Tensor, window: int, hop: int, frames: Tensor) -> None:
        self.mixture, self.window, self.hop, self.frames = mixture, window, hop, frames

    @staticmethod
    def count(n_samples: int, window: int, hop: int) -> int:
        """Windows needed to cover ``n_samples``."""
        return 1 if n_samples <= window else -(-(n_samples - window) // hop) + 1

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        start = index * self.hop
        piece = self.mixture[start : start + self.window]
        return {
            MIXTURE: torch.cat([piece, piece.new_zeros(self.window - piece.shape[0])]),
            FRAMES: self.frames[index],
            MIXTURE_START: torch.tensor(start),
            MIXTURE_LENGTH: torch.tensor(piece.shape[0]),
        }


class _MediaDataModule(BaseAVDataModule):
    """Predict-only: one input, decoded in ``setup("predict")``; fit/validate/test are errors (no ground truth)."""

    name: str
    """The input's file stem: the writer's output folder name."""

    def setup(self, stage: str) -> None:
        """Decode the input (``predict`` only)."""
        if stage != "predict":
            raise DatasetError(
                f"{type(self).__name__} reads your own media, which has no ground truth: use it with "
                f"`avtoolkit predict`, not {stage}."
            )
        super().setup(stage)


class MediaSegmentationDataModule(_MediaDataModule):
    """Segment the sounding objects of your own video (``avtoolkit predict`` with a segmentation model).

    Frames are taken one second apart as in AVSBench (``frame_rate`` > 1 adds interleaved passes for denser
    masks), ``frames_per_clip`` per sample with the continuous 16 kHz audio from the first one; the VGGish
    log-mel is computed on the device. The whole video is covered.

    Args:
        video: Video file (mp4, mov, mkv, avi, webm, m4v).
        audio: Sound to use instead of the video's own track (any file ``avtoolkit`` reads as audio).
        image_size: Side of the square frames the network sees (as trained).
        frames_per_clip: Frames per sample ``T`` (as trained: 5 for S4/MS3, 10 for AVSS).
        frame_rate: Masks per second of video: 1 as AVSBench, more runs that many interleaved passes.
        overlay_height: Height of the frames kept for the overlays (width by the aspect ratio, both even);
            ``None`` keeps the video's size.
        batch_size: Samples per batch.
        num_workers: DataLoader workers (everything is decoded up front; 0 is usually best).
    """

    def __init__(
        self,
        video: str | Path,
        audio: str | Path | None = None,
        image_size: int = 224,
        frames_per_clip: int = 5,
        frame_rate: int = 1,
        overlay_height: int | None = 480,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        if frames_per_clip < 1 or frame_rate < 1:
            raise ValueError(f"frames_per_clip and frame_rate must be >= 1, got {frames_per_clip} and {frame_rate}")
        self.video = Path(video)
        self.audio = None if audio is None else Path(audio)
        self.name = self.video.stem
        self.image_size = image_size
        self.frames_per_clip = frames_per_clip
        self.frame_rate = frame_rate
        self.overlay_height = overlay_height
        self.log_mel = VGGishLogMel(frames_per_clip, pad="repeat")

    def _display_size(self, height: int, width: int) -> list[int]:
        if self.overlay_height is None or self.overlay_height >= height:
            return [height - height % 2, width - width % 2]
        return [self.overlay_height - self.overlay_height % 2, 2 * round(width * self.overlay_height / height / 2)]

    def build_dataset(self, split: Split) -> MediaSegmentationFrames:
        """Check the files, then decode the video's frames and the audio."""
        check_video(self.video, "--data.video", needs_audio=self.audio is None)
        if self.audio is not None:
            check_audio(self.audio, "--data.audio")
        audio = load_audio(self.audio or self.video, SEGMENTATION_RATE, MIN_SEGMENTATION_SECONDS)
        frames, display = [], []
        for frame in decode_video(self.video, self.frame_rate):
            display.append(TF.resize(frame, self._display_size(*frame.shape[-2:]), antialias=True))
            frames.append(TF.resize(frame, [self.image_size, self.image_size], antialias=True))
        return MediaSegmentationFrames(
            torch.stack(frames), torch.stack(display), audio, self.frames_per_clip, self.frame_rate
        )

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """On the device: frames to float, audio → VGGish log-mel ``(B, T, 1, 96, 64)`` (as for AVSBench)."""
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        self.log_mel.to(batch[WAVEFORM].device)
        batch[AUDIO] = self.log_mel(batch[WAVEFORM], batch[WAVEFORM_LENGTH])
        return batch


class MediaSeparationDataModule(_MediaDataModule):
    """Separate the sound of each pictured source from your own recording (``avtoolkit predict``).

    The mixture is a video's sound track or an audio file; the pictures are ``images`` (one per source, each
    written out as ``{image stem}.wav``), or, without images, the video's own frames as one source (the sound
    of what the video shows). The mixture is cut into windows of ``window`` samples that overlap by
    ``overlap`` and cover the whole file; the writer cross-fades the windows back into full-length waveforms.

    Networks trained on cached frozen embeddings get them computed on the device by the same encoders
    (``visual_encoder``: the mean over each source's frames, as the frame cache gives; ``mixture_encoder``: the
    mixture's). Replacing the experiment's ``data`` class on the command line keeps its arguments of the same
    name (``sample_rate``, ``window``, ``frames_per_source``, ``image_size``, ``fps``, the encoders).

    Args:
        video: Video file: its sound is the mixture unless ``audio`` is given; its frames are the single source's
            pictures unless ``images`` are given.
        audio: Audio file to use as the mixture (wav, flac, ogg, mp3, aiff; or the sound track of m4a, aac,
            opus and video files).
        images: One picture per source (png, jpg).
        sample_rate: Audio rate in Hz the network was trained at.
        window: Samples per window (as trained).
        overlap: Fraction of a window shared with the next one, in [0, 1).
        frames_per_source: Frames per source and window ``Tv``, evenly spaced in the window (as trained).
        image_size: Side of the square frames (as trained).
        fps: Rate at which the video's frames are read for the pictures.
        visual_encoder: Frozen image encoder whose embeddings the network was trained on (``visual_emb``).
        mixture_encoder: Frozen audio encoder whose mixture embedding the network reads (``mixture_emb``); its
            ``sample_rate`` must be the data's.
        batch_size: Windows per batch.
        num_workers: DataLoader workers (everything is decoded up front; 0 is usually best).
    """

    def __init__(
        self,
        video: str | Path | None = None,
        audio: str | Path | None = None,
        images: list[str | Path] | None = None,
        sample_rate: int = 11025,
        window: int = 65535,
        overlap: float = 0.25,
        frames_per_source: int = 3,
        image_size: int = 224,
        fps: float = 8.0,
        visual_encoder: nn.Module | None = None,
        mixture_encoder: nn.Module | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters(ignore=["visual_encoder", "mixture_encoder"])
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        rate = getattr(mixture_encoder, "sample_rate", sample_rate)
        if rate != sample_rate:
            raise ValueError(f"mixture_encoder expects {rate} Hz audio but the data is at {sample_rate} Hz")
        self.visual_encoder = visual_encoder
        self.mixture_encoder = mixture_encoder
        self.video = None if video is None else Path(video)
        self.audio = None if audio is None else Path(audio)
        self.images = [Path(p) for p in images or []]
        media = self.video or self.audio
        self.name = "prediction" if media is None else media.stem
        self.source_names = unique_names(self.images) if self.images else [self.name]
        """Name of each source (the image stems, or the video's): the writer's wav names."""
        self.sample_rate = sample_rate
        self.window = window
        self.hop = max(window - round(overlap * window), 1)
        self.frames_per_source = frames_per_source
        self.image_size = image_size
        self.fps = fps

    def _video_frames(self, video: Path, n_windows: int) -> Tensor:
        """``(n_windows, 1, Tv, 3, S, S)``: per window, frames evenly spaced in it (as mix-and-separate takes)."""
        offsets = (torch.arange(self.frames_per_source) + 0.5) * self.window / self.frames_per_source
        times = (torch.arange(n_windows)[:, None] * self.hop + offsets) / self.sample_rate  # (n_windows, Tv)
        wanted = (times * self.fps + 1e-6).floor().long()  # frame i is shown from i / fps
        wanted_set = set(wanted.flatten().tolist())
        kept: dict[int, Tensor] = {}
        count, latest = 0, torch.empty(0)
        for count, latest in enumerate(decode_video(video, self.fps, self.image_size), start=1):
            if count - 1 in wanted_set:
                kept[count - 1] = latest
        # Times past the end of the video (its audio may run longer) show its last frame.
        rows = [[kept.get(i, latest) for i in row] for row in wanted.clamp(max=count - 1).tolist()]
        return torch.stack([torch.stack(row) for row in rows]).unsqueeze(1)

    def _check(self) -> Path:
        """Check the inputs; return the file of the mixture."""
        if self.video is None and self.audio is None:
            raise DatasetError("nothing to separate: give a video (--data.video) or an audio file (--data.audio).")
        if self.video is None and not self.images:
            raise DatasetError(
                "no pictures of the sources: give one image per source (--data.images '[a.png, b.png]') or a "
                "video (--data.video) whose frames show the source."
            )
        if self.video is not None:
            check_video(self.video, "--data.video", needs_audio=self.audio is None)
        if self.audio is not None:
            check_audio(self.audio, "--data.audio")
        for image in self.images:
            check_file(image, "image", "--data.images", IMAGE_EXTENSIONS)
        media = self.audio or self.video
        assert media is not None
        return media

    def build_dataset(self, split: Split) -> MediaSeparationWindows:
        """Check the files, then decode the mixture and the pictures."""
        mixture = load_audio(self._check(), self.sample_rate, MIN_SEPARATION_SECONDS)
        n_windows = MediaSeparationWindows.count(mixture.shape[0], self.window, self.hop)
        if self.images:
            pictures = torch.stack([read_image(p, self.image_size) for p in self.images])  # (N, 3, S, S)
            frames = pictures[None, :, None].expand(n_windows, -1, self.frames_per_source, -1, -1, -1)
        else:
            assert self.video is not None
            frames = self._video_frames(self.video, n_windows)
        return MediaSeparationWindows(mixture, self.window, self.hop, frames)

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """On the device: frames to float in [0, 1]; the frozen encoders' ``visual_emb`` and ``mixture_emb``."""
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        with torch.no_grad():
            if self.visual_encoder is not None:
                frames = batch[FRAMES]  # (B, N, Tv, 3, S, S)
                embeddings = self.visual_encoder.to(frames.device).eval()(frames.flatten(0, 2))
                batch[VISUAL_EMB] = embeddings.float().unflatten(0, frames.shape[:3]).mean(2)
            if self.mixture_encoder is not None:
                mixture = batch[MIXTURE]
                batch[MIXTURE_EMB] = self.mixture_encoder.to(mixture.device).eval()(mixture).float()
        return batch
