"""Index of the prepared separation layout (MUSIC / MUSIC-21 / VGGSound) that `avtoolkit data prepare` writes.

Layout (paths in the CSVs are relative to the root)::

    {root}/audio/{class}/{id}.wav                   mono, 11025 Hz by default
    {root}/frames/{class}/{id}.mp4/{000001..}.jpg   8 fps; frame k shows time (k - 1) / fps
    {root}/{train,val,test}.csv                     header: audio,frames,n_frames,label

:func:`read_split` indexes one split into :class:`Clip` records, checking what is cheap to check (headers,
file existence, sample rates from the wav headers); the mix-and-separate sampler reads windows and frames
from them. Class indices come from :func:`class_names`, the sorted labels of all splits, so they agree
across splits.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from avtoolkit.data.audio_files import audio_info
from avtoolkit.data.avsbench_layout import field, read_csv
from avtoolkit.data.errors import DatasetError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)
COLUMNS = ("audio", "frames", "n_frames", "label")

_DURATION_SLACK_S = 2.0  # frames and audio may differ by this much (or by half the clip) before it is an error


@dataclass(frozen=True)
class Clip:
    """One prepared clip.

    Args:
        id: The clip id (the wav's stem, e.g. the YouTube id); the same id in two splits is a leak.
        audio: The wav file.
        frames: The folder of its frames (``000001.jpg`` ...).
        n_frames: Number of frames.
        label: Class name.
        label_index: Index of ``label`` in :func:`class_names` of the dataset.
        n_samples: Audio length in samples (from the wav header).
        sample_rate: Audio rate in Hz.
        fps: Frame rate of the frames.
    """

    id: str
    audio: Path
    frames: Path
    n_frames: int
    label: str
    label_index: int
    n_samples: int
    sample_rate: int
    fps: float

    @property
    def duration(self) -> float:
        """Audio length in seconds."""
        return self.n_samples / self.sample_rate


def split_csv(root: str | Path, split: Split) -> Path:
    """The CSV of a split: ``{root}/{split}.csv``."""
    return Path(root) / f"{split}.csv"


def class_names(root: str | Path) -> tuple[str, ...]:
    """Sorted class names over every split CSV present in ``root`` (so indices agree across splits).

    Raises:
        DatasetError: no split CSV exists, or one lacks the required columns.
    """
    csvs = [split_csv(root, split) for split in SPLITS if split_csv(root, split).is_file()]
    if not csvs:
        raise DatasetError(
            f"no split CSV ({', '.join(f'{s}.csv' for s in SPLITS)}) in {root}; point root at a prepared "
            "dataset (avtoolkit's data preparation writes them)."
        )
    return tuple(sorted({field(row, "label", where) for path in csvs for where, row in read_csv(path, COLUMNS)}))


def frame_path(clip: Clip, index: int) -> Path:
    """The file of frame ``index`` (1-based) of a clip."""
    return clip.frames / f"{index:06d}.jpg"


def frame_index(clip: Clip, time: float) -> int:
    """1-based index of the frame shown at ``time`` seconds, clamped to ``[1, n_frames]``.

    Frame ``k`` shows time ``(k - 1) / fps``, so this is ``floor(time × fps) + 1``.
    """
    return min(max(math.floor(time * clip.fps + 1e-6) + 1, 1), clip.n_frames)


def frame_indices(clip: Clip, time: float, count: int = 1, stride: int = 1) -> list[int]:
    """``count`` frame indices centred on the frame shown at ``time``, ``stride`` frames apart.

    Each index is clamped to ``[1, n_frames]``, so indices repeat near the ends of the clip. With an even
    ``count`` the extra frame is after the centre.
    """
    centre = frame_index(clip, time)
    offsets = [(i - (count - 1) // 2) * stride for i in range(count)]
    return [min(max(centre + offset, 1), clip.n_frames) for offset in offsets]


def read_clip(
    root: Path, row: dict[str, str], where: str, classes: dict[str, int], sample_rate: int, fps: float
) -> Clip:
    """Check one CSV row and make its :class:`Clip`.

    Args:
        root: Dataset root (the row's paths are relative to it).
        row: The CSV row.
        where: The CSV file and line, for error messages.
        classes: Class name → index.
        sample_rate: The rate every wav must have.
        fps: The frame rate of the frame folders.

    Raises:
        DatasetError: a field is empty or invalid, a file is missing, the wav is unreadable or at another
            rate, or the frames and the audio cover very different durations (the message says which is shorter:
            audio shorter than its frames is a truncated wav; frames shorter than the audio, a wrong fps).
    """
    audio = root / field(row, "audio", where)
    frames = root / field(row, "frames", where)
    label = field(row, "label", where)
    text = field(row, "n_frames", where)
    n_frames = int(text) if text.isdigit() else 0
    if n_frames < 1:
        raise DatasetError(f"{where}: n_frames must be a positive integer, got {text!r}.")
    rate, n_samples = audio_info(audio)
    if rate != sample_rate:
        raise DatasetError(
            f"{audio} has sample rate {rate} Hz but {sample_rate} Hz was expected: re-run the preparation at "
            f"{sample_rate} Hz, or set the datamodule's sample_rate to {rate} if the whole dataset has it."
        )
    if not frames.is_dir():
        raise DatasetError(f"{where}: frames folder {frames} not found; re-run the preparation of this clip.")
    for index in (1, n_frames):
        if not (frames / f"{index:06d}.jpg").is_file():
            raise DatasetError(
                f"{frames / f'{index:06d}.jpg'} not found ({where} says {n_frames} frames); re-run the "
                "preparation of this clip or fix n_frames."
            )
    frames_s, audio_s = n_frames / fps, n_samples / rate
    if audio_s < frames_s - max(_DURATION_SLACK_S, 0.5 * frames_s):
        raise DatasetError(
            f"{where}: {audio} is {audio_s:.1f} s long but its {n_frames} frames cover {frames_s:.1f} s at {fps:g} "
            "fps: the audio is shorter than its frames (a truncated file?). Re-extract the audio (re-run the "
            "preparation of this clip) or drop the clip. (If every clip is reported so, the frames were extracted "
            f"at a higher rate than {fps:g} fps: set fps to it.)"
        )
    if frames_s < audio_s - max(_DURATION_SLACK_S, 0.5 * audio_s):
        raise DatasetError(
            f"{where}: {n_frames} frames cover {frames_s:.1f} s at {fps:g} fps but {audio} lasts "
            f"{audio_s:.1f} s; were the frames extracted at another rate? Set fps to the rate used, or "
            "re-run the preparation."
        )
    return Clip(
        id=audio.stem,
        audio=audio,
        frames=frames,
        n_frames=n_frames,
        label=label,
        label_index=classes[label],
        n_samples=n_samples,
        sample_rate=rate,
        fps=fps,
    )


def read_split(root: str | Path, split: Split, sample_rate: int = 11025, fps: float = 8.0) -> list[Clip]:
    """Index one split of a prepared tree.

    Checks the CSV columns, that every file exists (the wav, the frames folder with its first and last frame),
    every wav's sample rate (header only), that frames and audio roughly agree in duration, and that the split
    is not empty. Raises at the first problem; :func:`avtoolkit.data.check.check_tree` lists all of them.

    Args:
        root: Dataset root.
        split: Which split.
        sample_rate: The rate every wav must have (Hz).
        fps: The frame rate of the frame folders.

    Returns:
        The split's clips in CSV order.

    Raises:
        DatasetError: any of the checks fails (the message names the file or CSV line and the fix).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    path = split_csv(root, split)
    rows = read_csv(path, COLUMNS)
    if not rows:
        raise DatasetError(f"the split {split!r} is empty: {path} has no rows; prepare clips for it.")
    classes = {name: i for i, name in enumerate(class_names(root))}
    return [read_clip(root, row, where, classes, sample_rate, fps) for where, row in rows]
