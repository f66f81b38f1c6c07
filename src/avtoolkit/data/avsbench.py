"""AVSBench readers: S4, MS3 and AVSS datasets in their official on-disk layouts.

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

Where the files of each clip are (metadata, paths, the VOC palette of AVSS labels) is in
:mod:`avtoolkit.data.avsbench_layout`, which needs no torch; its names are re-exported here.
"""

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Self

import torch
from torch import Tensor
from torch.utils.data import Dataset

from avtoolkit.data import batch
from avtoolkit.data.audio import read_audio
from avtoolkit.data.audio_files import audio_info
from avtoolkit.data.avsbench_layout import (
    AVSS_COLUMNS,
    AVSS_FRAMES,
    AVSS_LABELS,
    AVSS_METADATA,
    MASK_THRESHOLD,
    MS3_COLUMNS,
    MS3_METADATA,
    S4_COLUMNS,
    S4_FRAMES,
    S4_METADATA,
    SAMPLE_RATE,
    SPLITS,
    SUBSETS,
    SegClip,
    Split,
    Subset,
    avsbench_clips,
    avss_clip,
    avss_subset,
    decode_palette_array,
    field,
    ms3_clip,
    read_csv,
    read_label2idx,
    s4_clip,
    voc_palette_array,
)
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.mask_files import read_rgb_mask_array
from avtoolkit.data.video import read_image, read_mask, resize_mask

__all__ = [  # the on-disk index is re-exported from avtoolkit.data.avsbench_layout
    "AVSS_COLUMNS",
    "AVSS_FRAMES",
    "AVSS_LABELS",
    "AVSS_METADATA",
    "MASK_THRESHOLD",
    "MS3_COLUMNS",
    "MS3_METADATA",
    "NO_LABEL",
    "ODD_MASK_REPORTS",
    "S4_COLUMNS",
    "S4_FRAMES",
    "S4_METADATA",
    "SAMPLE_RATE",
    "SPLITS",
    "SUBSETS",
    "AVSSDataset",
    "MS3Dataset",
    "S4Dataset",
    "SegClip",
    "Split",
    "Subset",
    "avsbench_clips",
    "avss_clip",
    "avss_subset",
    "decode_palette",
    "field",
    "ms3_clip",
    "read_clip_audio",
    "read_csv",
    "read_label2idx",
    "s4_clip",
    "voc_palette",
]

NO_LABEL = -1
"""``LABELS`` value of clips without a category (MS3)."""

ODD_MASK_REPORTS = (1, 10, 100, 1000, 10000)
"""After how many distinct masks with values besides 0 and 255 a process warns (then every 10000 more)."""


def read_clip_audio(clip: SegClip, n_samples: int) -> tuple[Tensor, int]:
    """A clip's first ``n_samples`` at 16 kHz, zero-padded, and how many of them come from the file."""
    waveform = read_audio(clip.audio, SAMPLE_RATE, 0, n_samples, pad=True)
    return waveform, min(audio_info(clip.audio)[1], n_samples)


def voc_palette(n_classes: int) -> Tensor:
    """The VOC bit palette as a tensor: :func:`~avtoolkit.data.avsbench_layout.voc_palette_array`."""
    return torch.from_numpy(voc_palette_array(n_classes))


def decode_palette(rgb: Tensor, n_classes: int, path: str | Path) -> Tensor:
    """Class indices ``(H, W)`` of a uint8 colour label image ``(3, H, W)``.

    The tensor form of :func:`~avtoolkit.data.avsbench_layout.decode_palette_array` (same lookup, same errors).
    """
    return torch.from_numpy(decode_palette_array(rgb.permute(1, 2, 0).numpy(), n_classes, path))


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

    def only(self, keep: Callable[[str], bool], what: str = "") -> Self:
        """This dataset with only the clips whose name ``keep`` accepts (e.g. one set of a split).

        Raises:
            DatasetError: no clip is kept (``what`` names the set in the message).
        """
        kept = copy.copy(self)
        kept.clips = [clip for clip in self.clips if keep(clip.name)]
        if not kept.clips:
            raise DatasetError(f"the split {self.split!r}{what} has no clips in {self.metadata}.")
        return kept

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
        indices = decode_palette_array(read_rgb_mask_array(path), len(self.class_names), path)
        return resize_mask(torch.from_numpy(indices), self.image_size)

    def _label(self, clip: SegClip, masks: Tensor, valid: Tensor) -> int:
        counts = torch.bincount(masks[valid].flatten(), minlength=len(self.class_names))
        counts[0] = 0
        return int(counts.argmax()) if bool(counts.any()) else 0
