"""The AVSBench trees on disk (S4, MS3, AVSS): metadata, the files of each clip, the AVSS label palette.

This module needs NumPy only (no torch), so :mod:`avtoolkit.data.check` (``avtoolkit data check``) starts fast;
the torch datasets that read the clips are in :mod:`avtoolkit.data.avsbench`, which re-exports these names.

Layouts (``{root}`` is the folder passed to the readers)::

    S4    {root}/s4_meta_data.csv                                      name,category,split
          {root}/s4_data/audio_wav/{split}/{category}/{name}.wav       16 kHz
          {root}/s4_data/visual_frames/{split}/{category}/{name}/{name}_{1..5}.png
          {root}/s4_data/gt_masks/{split}/{category}/{name}/{name}_{k}.png    train: k = 1 only
    MS3   {root}/ms3_meta_data.csv                                     name,split
          {root}/ms3_data/audio_wav/{split}/{name}.wav
          {root}/ms3_data/visual_frames/{name}/{name}.mp4_{1..5}.png
          {root}/ms3_data/gt_masks/{split}/{name}/{name}_{1..5}.png
    AVSS  {root}/metadata.csv, {root}/label2idx.json                   uid,label,split (label: the subset)
          {root}/{v1s,v1m,v2}/{uid}/audio.wav, frames/{i}.jpg, labels_rgb/{i}.png    i from 0
"""

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from avtoolkit.data.errors import DatasetError

Split = Literal["train", "val", "test"]
Subset = Literal["v1s", "v1m", "v2"]
SPLITS: tuple[Split, ...] = get_args(Split)
SUBSETS: tuple[Subset, ...] = get_args(Subset)

SAMPLE_RATE = 16000
"""Audio rate of every AVSBench subset (Hz)."""

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


def voc_palette_array(n_classes: int) -> np.ndarray:
    """The VOC bit palette: colour of class ``i`` (0 = black), as uint8 ``(n_classes, 3)``."""
    colours = np.zeros((n_classes, 3), dtype=np.uint8)
    for i in range(n_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Colours ``(..., 3)`` → one int64 per colour (0xRRGGBB)."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@cache
def _palette_lookup(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted packed palette colours and the class index of each."""
    packed = _pack(voc_palette_array(n_classes))
    order = np.argsort(packed)
    return packed[order], order


def decode_palette_array(rgb: np.ndarray, n_classes: int, path: str | Path) -> np.ndarray:
    """Class indices of a colour label image (vectorised lookup of the packed colours).

    Args:
        rgb: uint8 ``(H, W, 3)`` label image.
        n_classes: ``C``, the palette covers indices ``0..C-1``.
        path: The image's file, for the error message.

    Returns:
        int64 ``(H, W)``.

    Raises:
        DatasetError: a colour is not in the palette (naming the file, each unknown colour and its pixel
            count); unknown colours are never mapped to background.
    """
    packed = _pack(rgb)
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
    return order[position]
