"""AVSBench readers: S4, MS3 and AVSS datasets in their official on-disk layouts (specs/data.md).

Each dataset returns tensor-only samples with the keys of :mod:`avtoolkit.data.batch`:

- ``FRAMES`` uint8 ``(T, 3, S, S)``: the clip's frames resized (antialiased) to ``image_size``.
- ``WAVEFORM`` float32 ``(T × 16000,)``: the clip's 16 kHz audio from its start, **zero-padded** when the file
  is shorter than ``T`` seconds and **cropped** when it is longer (5 s for S4/MS3, ``n_frames`` s for AVSS).
  ``WAVEFORM_LENGTH`` says how many samples came from the file. The VGGish log-mel is computed on the device
  (:class:`avtoolkit.data.audio.VGGishLogMel`), which fills windows past that length as each benchmark does;
  with a log-mel cache the samples carry ``AUDIO`` instead (:class:`avtoolkit.data.features.CachedLogMel`).
- ``MASKS`` int64 ``(T, S, S)``, resized nearest-neighbour: 0/1 for S4/MS3 (gray values from
  :data:`MASK_THRESHOLD` = 128 are foreground; masks with other values than 0 and 255 are warned about), class
  indices ``0..C-1`` for AVSS (0 = background), decoded from ``labels_rgb`` with the VOC bit palette.
- ``MASK_VALID`` bool ``(T,)``: frames that have a ground-truth mask. S4 train has only frame 1; AVSS v1s
  train only frame 0; padded AVSS frames are never valid. Frames without ground truth have all-zero masks.
- ``LABELS`` int64 scalar: S4, the category index in :attr:`S4Dataset.category_names` (sorted over all
  splits); MS3, :data:`NO_LABEL` (MS3 has no clip category); AVSS, the class covering most pixels over the
  valid masks (background excluded, smallest index on ties; 0 when only background is labelled).

Construction reads the metadata and checks cheaply (path existence) that every file a clip needs is there;
decoding problems (and non-finite audio samples) surface in ``__getitem__`` with the file named.
``dataset.names[i]`` is the clip name of sample ``i`` and ``dataset.clips[i]`` where its files are.
:mod:`avtoolkit.data.check` checks a whole tree more thoroughly (decoding masks, sample rates, non-finite samples,
leaks between splits).
"""

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from avtoolkit.data import batch
from avtoolkit.data.audio import audio_info, read_audio
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.video import read_image, read_mask, read_rgb_mask, resize_mask

Split = Literal["train", "val", "test"]
Subset = Literal["v1s", "v1m", "v2"]
SPLITS: tuple[Split, ...] = get_args(Split)
SUBSETS: tuple[Subset, ...] = get_args(Subset)

SAMPLE_RATE = 16000
"""Audio rate of every AVSBench subset (Hz)."""
NO_LABEL = -1
"""``LABELS`` value of clips without a category (MS3)."""

S4_METADATA = "s4_meta_data.csv"
MS3_METADATA = "ms3_meta_data.csv"
AVSS_METADATA = "metadata.csv"
AVSS_LABELS = "label2idx.json"
S4_COLUMNS = ("name", "category", "split")
MS3_COLUMNS = ("name", "split")
AVSS_COLUMNS = ("uid", "label", "split")

MASK_THRESHOLD = 128
"""S4/MS3 masks: gray values from this one are foreground, lower ones background.

The published masks hold only 0 and 255. AVSBench's own loaders (``avs_scripts/avs_s4/dataloader.py`` and
``avs_ms3/dataloader.py``) read them with PIL's ``convert("1")`` (S4: Floyd–Steinberg dithering around mid-grey, so a
region of value ``v`` becomes about ``v / 255`` foreground) and ``convert("P")`` then ``/ 255`` (MS3: a soft target
``v / 255``). A threshold at mid-grey is their deterministic, one-label-per-pixel equivalent (PIL's own threshold
without dithering: values above 127 are white); 0/255 masks read the same under all three. So a stray value such as
3 or a 0/1 mask is background, not foreground as ``> 0`` would make it."""
ODD_MASK_REPORTS = (1, 10, 100, 1000, 10000)
"""After how many distinct masks with values besides 0 and 255 a process warns (then every 10000 more)."""

S4_FRAMES = 5
"""Frames of an S4/MS3 clip (one per second)."""
AVSS_FRAMES: dict[str, int] = {"v1s": 5, "v1m": 5, "v2": 10}
"""Frames (and seconds of audio) of an AVSS clip per subset."""


@dataclass(frozen=True)
class SegClip:
    """Where the files of one segmentation clip are.

    Args:
        name: Clip name (S4 ``name``, MS3 video id, AVSS ``uid``).
        split: "train", "val" or "test".
        audio: The clip's wav file.
        frames: One entry per output frame; ``None`` for padding (a zero frame).
        masks: One entry per output frame; ``None`` where the frame has no ground truth.
        category: S4 category (folder name); ``None`` for MS3 and AVSS.
    """

    name: str
    split: Split
    audio: Path
    frames: tuple[Path | None, ...]
    masks: tuple[Path | None, ...]
    category: str | None = None

    @property
    def files(self) -> list[Path]:
        """Every file the clip needs: audio, frames, masks."""
        return [self.audio, *(p for p in (*self.frames, *self.masks) if p is not None)]

    @property
    def seconds(self) -> int:
        """Seconds of audio the clip should have (one per real frame)."""
        return sum(p is not None for p in self.frames)


def read_csv(path: Path, columns: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """Read a CSV with a header row, checking that it has the required columns.

    Args:
        path: The CSV file.
        columns: Columns that must be present (others are kept and ignored).

    Returns:
        ``(where, row)`` per data row; ``where`` names the file and line (for error messages), ``row`` maps
        column to stripped value.

    Raises:
        DatasetError: the file is missing or unreadable, or a column is missing.
    """
    if not path.is_file():
        raise DatasetError(f"metadata file not found: {path}. Point root at the dataset folder holding it.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            lines = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"cannot read {path}: {err}. Save it as a UTF-8 CSV with a header row.") from err
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(
            f"{path} has no column {', '.join(repr(c) for c in missing)} "
            f"(its header: {', '.join(header) or 'empty'}); the file needs the columns {', '.join(columns)}."
        )
    return [
        (f"{path} line {i}", {name: value.strip() for name, value in zip(header, values, strict=False)})
        for i, values in enumerate(lines, start=2)
        if any(v.strip() for v in values)
    ]


def field(row: dict[str, str], column: str, where: str) -> str:
    """The non-empty value of ``column`` in a CSV row, or a :class:`DatasetError` naming the row."""
    value = row.get(column, "")
    if not value:
        raise DatasetError(f"{where}: the field {column!r} is empty; fill it in or remove the row.")
    return value


def _split(row: dict[str, str], where: str) -> Split:
    value = field(row, "split", where)
    for split in SPLITS:
        if value == split:
            return split
    raise DatasetError(f"{where}: unknown split {value!r}; it must be one of {', '.join(SPLITS)}.")


def s4_clip(root: Path, row: dict[str, str], where: str) -> SegClip:
    """The files of an S4 metadata row (``Single-source/`` layout; masks of train clips: frame 1 only)."""
    name, category, split = field(row, "name", where), field(row, "category", where), _split(row, where)
    base = root / "s4_data"
    frames = base / "visual_frames" / split / category / name
    masks = base / "gt_masks" / split / category / name
    labelled = range(1, 2) if split == "train" else range(1, S4_FRAMES + 1)
    return SegClip(
        name=name,
        split=split,
        audio=base / "audio_wav" / split / category / f"{name}.wav",
        frames=tuple(frames / f"{name}_{k}.png" for k in range(1, S4_FRAMES + 1)),
        masks=tuple(masks / f"{name}_{k}.png" if k in labelled else None for k in range(1, S4_FRAMES + 1)),
        category=category,
    )


def ms3_clip(root: Path, row: dict[str, str], where: str) -> SegClip:
    """The files of an MS3 metadata row (``Multi-sources/`` layout: frames without split folder, 5 masks)."""
    name, split = field(row, "name", where), _split(row, where)
    base = root / "ms3_data"
    return SegClip(
        name=name,
        split=split,
        audio=base / "audio_wav" / split / f"{name}.wav",
        frames=tuple(base / "visual_frames" / name / f"{name}.mp4_{k}.png" for k in range(1, S4_FRAMES + 1)),
        masks=tuple(base / "gt_masks" / split / name / f"{name}_{k}.png" for k in range(1, S4_FRAMES + 1)),
    )


def avss_subset(row: dict[str, str], where: str) -> Subset:
    """The AVSS subset (``label`` column) of a metadata row."""
    value = field(row, "label", where)
    for subset in SUBSETS:
        if value == subset:
            return subset
    raise DatasetError(f"{where}: unknown label {value!r}; it must be one of {', '.join(SUBSETS)}.")


def avss_clip(root: Path, row: dict[str, str], where: str, n_frames: int = 10) -> SegClip:
    """The files of an AVSS metadata row, padded or cropped to ``n_frames`` frames.

    v1s train clips have a mask for frame 0 only, other clips one per real frame; padded frames have neither.
    """
    uid, split, subset = field(row, "uid", where), _split(row, where), avss_subset(row, where)
    clip_dir = root / subset / uid
    available = AVSS_FRAMES[subset]
    labelled = 1 if subset == "v1s" and split == "train" else available
    return SegClip(
        name=uid,
        split=split,
        audio=clip_dir / "audio.wav",
        frames=tuple(clip_dir / "frames" / f"{i}.jpg" if i < available else None for i in range(n_frames)),
        masks=tuple(clip_dir / "labels_rgb" / f"{i}.png" if i < labelled else None for i in range(n_frames)),
    )


def avsbench_clips(
    root: str | Path, layout: Literal["s4", "ms3", "avss"], avss_frames: int = 10, subsets: Sequence[Subset] = SUBSETS
) -> list[SegClip]:
    """Every clip of every split of an S4/MS3/AVSS tree, in metadata order (AVSS: only the given subsets).

    Raises:
        DatasetError: the metadata file is missing or malformed.
    """
    root = Path(root)
    if layout == "s4":
        return [s4_clip(root, row, where) for where, row in read_csv(root / S4_METADATA, S4_COLUMNS)]
    if layout == "ms3":
        return [ms3_clip(root, row, where) for where, row in read_csv(root / MS3_METADATA, MS3_COLUMNS)]
    rows = read_csv(root / AVSS_METADATA, AVSS_COLUMNS)
    return [avss_clip(root, row, where, avss_frames) for where, row in rows if avss_subset(row, where) in subsets]


def read_clip_audio(clip: SegClip, n_samples: int) -> tuple[Tensor, int]:
    """A clip's first ``n_samples`` at 16 kHz, zero-padded, and how many of them come from the file."""
    waveform = read_audio(clip.audio, SAMPLE_RATE, 0, n_samples, pad=True)
    return waveform, min(audio_info(clip.audio)[1], n_samples)


def read_label2idx(path: Path) -> tuple[str, ...]:
    """Class names of AVSS ``label2idx.json`` (the public 1-based copy: class index = value − 1).

    Raises:
        DatasetError: the file is missing, not JSON, or its values are not exactly 1..C.
    """
    if not path.is_file():
        raise DatasetError(f"{path} not found; AVSS needs the label2idx.json published with the dataset.")
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}. Restore the published label2idx.json.") from err
    values = sorted(mapping.values()) if isinstance(mapping, dict) else None
    if not values or values != list(range(1, len(values) + 1)):
        raise DatasetError(
            f"{path} must map each class name to a distinct index 1..C (the public 1-based copy, "
            "background = 1); restore the published label2idx.json."
        )
    return tuple(name for name, _ in sorted(mapping.items(), key=lambda item: item[1]))


def voc_palette(n_classes: int) -> Tensor:
    """The VOC bit palette: colour of class ``i`` (0 = black), as uint8 ``(n_classes, 3)``."""
    colours = torch.zeros(n_classes, 3, dtype=torch.uint8)
    for i in range(n_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = torch.tensor([r, g, b], dtype=torch.uint8)
    return colours


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Colours ``(..., 3)`` → one int64 per colour (0xRRGGBB)."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@cache
def _palette_lookup(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted packed palette colours and the class index of each."""
    packed = _pack(voc_palette(n_classes).numpy())
    order = np.argsort(packed)
    return packed[order], order


def decode_palette(rgb: Tensor, n_classes: int, path: str | Path) -> Tensor:
    """Class indices of a colour label image (vectorised lookup of the packed colours).

    Args:
        rgb: uint8 ``(3, H, W)`` label image.
        n_classes: ``C``, the palette covers indices ``0..C-1``.
        path: The image's file, for the error message.

    Returns:
        int64 ``(H, W)``.

    Raises:
        DatasetError: a colour is not in the palette (naming the file, each unknown colour and its pixel
            count); unknown colours are never mapped to background.
    """
    # NumPy's searchsorted: torch's pays a fixed thread-pool cost per call that dominates on small images.
    packed = _pack(rgb.permute(1, 2, 0).numpy())
    keys, order = _palette_lookup(n_classes)
    position = np.minimum(np.searchsorted(keys, packed), n_classes - 1)
    known = keys[position] == packed
    if not known.all():
        colours, counts = np.unique(packed[~known], return_counts=True)
        listed = sorted(zip(counts.tolist(), colours.tolist(), strict=True), reverse=True)
        described = ", ".join(f"RGB({c >> 16}, {(c >> 8) & 255}, {c & 255}) × {n} pixels" for n, c in listed[:10]) + (
            f" and {len(listed) - 10} more colours" if len(listed) > 10 else ""
        )
        raise DatasetError(
            f"{path} has colours outside the VOC palette of {n_classes} classes: {described}. Label images "
            "must use palette colours only (no antialiasing, no JPEG artefacts); re-export it as a PNG."
        )
    return torch.from_numpy(order[position])


class _SegmentationDataset(Dataset[dict[str, Tensor]]):
    """The shared reading of S4/MS3/AVSS clips; subclasses parse their metadata and decode masks."""

    def __init__(
        self,
        clips: list[SegClip],
        split: Split,
        metadata: Path,
        image_size: int,
        seconds: int,
        what: str = "",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.clips = [clip for clip in clips if clip.split == split]
        if not self.clips:
            raise DatasetError(f"the split {split!r}{what} has no clips in {metadata}; check its split column.")
        for clip in self.clips:
            for path in clip.files:
                if not path.is_file():
                    raise DatasetError(
                        f"{path} not found (clip {clip.name!r}, split {split!r} of {metadata}). Restore the "
                        "file or remove the clip's row; `avtoolkit data check` lists every problem of a tree."
                    )
        self.split = split
        self.image_size = image_size
        self.n_samples = seconds * SAMPLE_RATE
        self.with_waveform = True  # read the audio; off when the log-mel comes from a cache (features.CachedLogMel)
        self.metadata = metadata
        self.odd_masks: list[Path] = []  # masks read in this process with values besides 0 and 255, in reading order
        self._odd_mask_set: set[Path] = set()

    @property
    def names(self) -> list[str]:
        """Clip name of each sample."""
        return [clip.name for clip in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clips[index]
        size = self.image_size
        frames = torch.stack(
            [read_image(p, size) if p else torch.zeros(3, size, size, dtype=torch.uint8) for p in clip.frames]
        )
        masks = torch.stack(
            [self._read_mask(p) if p else torch.zeros(size, size, dtype=torch.int64) for p in clip.masks]
        )
        valid = torch.tensor([p is not None for p in clip.masks])
        sample = {
            batch.FRAMES: frames,
            batch.MASKS: masks,
            batch.MASK_VALID: valid,
            batch.LABELS: torch.tensor(self._label(clip, masks, valid), dtype=torch.int64),
        }
        if self.with_waveform:
            waveform, length = read_clip_audio(clip, self.n_samples)
            sample |= {batch.WAVEFORM: waveform, batch.WAVEFORM_LENGTH: torch.tensor(length)}
        return sample

    def _read_mask(self, path: Path) -> Tensor:
        """Binary mask as int64 ``(S, S)``: 1 where the gray value is at least :data:`MASK_THRESHOLD` (128).

        A mask with other values than 0 and 255 is read so, and counted in :attr:`odd_masks` (see
        :meth:`_note_odd_mask` for the warnings).
        """
        mask = read_mask(path)
        if not bool(((mask == 0) | (mask == 255)).all()):
            self._note_odd_mask(path, mask)
        return (resize_mask(mask, self.image_size) >= MASK_THRESHOLD).long()

    def _note_odd_mask(self, path: Path, mask: Tensor) -> None:
        """Count a mask with values besides 0 and 255, and warn on the first and after 10, 100, 1000 ... of them.

        Counts are per process (each DataLoader worker holds its own copy of the dataset, kept across epochs by
        persistent workers), so each process warns on its first such mask, naming it, then only with the running
        count and the first few names; each file counts once. ``avtoolkit data check`` lists every such mask.
        """
        if path in self._odd_mask_set:
            return
        self._odd_mask_set.add(path)
        self.odd_masks.append(path)
        n = len(self.odd_masks)
        if n not in ODD_MASK_REPORTS and n % ODD_MASK_REPORTS[-1]:
            return
        fix = (
            f"Re-export the masks with 0 for background and 255 for the sounding objects; `avtoolkit data check` on "
            f"the tree of {self.metadata} lists every such mask (an error there)."
        )
        how = f"values from {MASK_THRESHOLD} are read as foreground, lower ones as background, as AVSBench's loaders do"
        if n == 1:
            values = sorted(set(mask.unique().tolist()) - {0, 255})
            shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
            warnings.warn(
                f"{path}: mask values {shown} besides 0 and 255 ({how}; e.g. a 0/1 mask reads as empty). Further "
                f"such masks of the {self.split!r} split are counted, not named one by one. {fix}",
                stacklevel=3,
            )
        else:
            first = ", ".join(str(p) for p in self.odd_masks[:3])
            warnings.warn(
                f"{n} masks of the {self.split!r} split with values besides 0 and 255 read so far in this process "
                f"(first: {first}, ...); {how}. {fix}",
                stacklevel=3,
            )

    def _label(self, clip: SegClip, masks: Tensor, valid: Tensor) -> int:
        return NO_LABEL


class S4Dataset(_SegmentationDataset):
    """AVSBench-object single-source (S4), ``Single-source/`` layout: 5 frames, 5 s of audio per clip.

    Args:
        root: The folder holding ``s4_meta_data.csv`` and ``s4_data/``.
        split: Which clips to read.
        image_size: Side ``S`` of the square frames and masks.

    Attributes:
        category_names: Sorted categories over all splits; ``LABELS`` indexes them.
    """

    def __init__(self, root: str | Path, split: Split, image_size: int = 224) -> None:
        root = Path(root)
        metadata = root / S4_METADATA
        clips = [s4_clip(root, row, where) for where, row in read_csv(metadata, S4_COLUMNS)]
        self.category_names = tuple(sorted({str(clip.category) for clip in clips}))
        self._category_index = {name: i for i, name in enumerate(self.category_names)}
        super().__init__(clips, split, metadata, image_size, seconds=S4_FRAMES)

    def _label(self, clip: SegClip, masks: Tensor, valid: Tensor) -> int:
        return self._category_index[str(clip.category)]


class MS3Dataset(_SegmentationDataset):
    """AVSBench-object multi-source (MS3), ``Multi-sources/`` layout: 5 frames, 5 masks, 5 s audio per clip.

    ``LABELS`` is :data:`NO_LABEL` (MS3 clips have no category).

    Args:
        root: The folder holding ``ms3_meta_data.csv`` and ``ms3_data/``.
        split: Which clips to read.
        image_size: Side ``S`` of the square frames and masks.
    """

    def __init__(self, root: str | Path, split: Split, image_size: int = 224) -> None:
        root = Path(root)
        metadata = root / MS3_METADATA
        clips = [ms3_clip(root, row, where) for where, row in read_csv(metadata, MS3_COLUMNS)]
        super().__init__(clips, split, metadata, image_size, seconds=S4_FRAMES)


class AVSSDataset(_SegmentationDataset):
    """AVSBench-semantic (AVSS): v1s, v1m (5 frames, 5 s) and v2 (10 frames, 10 s) clips.

    Clips are padded (zero frames, zero audio, invalid masks) or cropped to ``n_frames`` frames and seconds.

    Args:
        root: The folder holding ``metadata.csv``, ``label2idx.json`` and the subset folders.
        split: Which clips to read.
        image_size: Side ``S`` of the square frames and masks.
        subsets: Which subsets (``label`` column) to include.
        n_frames: Frames ``T`` per sample (and seconds of audio).

    Attributes:
        class_names: ``C`` class names, index 0 = background; ``MASKS`` and ``LABELS`` index them.
    """

    def __init__(
        self,
        root: str | Path,
        split: Split,
        image_size: int = 224,
        subsets: tuple[Subset, ...] = SUBSETS,
        n_frames: int = 10,
    ) -> None:
        if not subsets or any(s not in SUBSETS for s in subsets):
            raise ValueError(f"subsets must be a non-empty tuple of {', '.join(SUBSETS)}, got {subsets!r}")
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        root = Path(root)
        metadata = root / AVSS_METADATA
        self.class_names = read_label2idx(root / AVSS_LABELS)
        clips = [
            avss_clip(root, row, where, n_frames)
            for where, row in read_csv(metadata, AVSS_COLUMNS)
            if avss_subset(row, where) in subsets
        ]
        super().__init__(clips, split, metadata, image_size, seconds=n_frames, what=f" of subsets {subsets}")

    def _read_mask(self, path: Path) -> Tensor:
        """Class indices decoded at full resolution, then resized nearest-neighbour."""
        indices = decode_palette(read_rgb_mask(path), len(self.class_names), path)
        return resize_mask(indices, self.image_size)

    def _label(self, clip: SegClip, masks: Tensor, valid: Tensor) -> int:
        counts = torch.bincount(masks[valid].flatten(), minlength=len(self.class_names))
        counts[0] = 0
        return int(counts.argmax()) if bool(counts.any()) else 0
