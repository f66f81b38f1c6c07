"""Check a dataset tree in one of the official layouts and report every problem, not just the first.

:func:`check_tree` goes further than the datasets' construction-time checks: it decodes every mask (values,
palette colours, sizes against the frames), reads every audio header (rate, length), and looks for clip ids
shared between splits. Errors are problems the readers would fail on or that make results wrong (missing or
corrupt files, wrong rates, unknown colours, leaks); warnings are handled by the readers but worth a look
(short audio that is zero-padded, non-binary masks binarised with ``> 0``, frame counts that disagree).
"""

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from avtoolkit.data import avsbench, music
from avtoolkit.data.audio import audio_info
from avtoolkit.data.avsbench import SPLITS, SegClip, decode_palette, read_csv, read_label2idx
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.video import read_mask, read_rgb_mask

Layout = Literal["s4", "ms3", "avss", "music"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem found in a tree.

    Args:
        severity: "error" (readers fail or results are wrong) or "warning" (handled, worth a look).
        file: The file, folder or CSV line concerned.
        message: What is wrong and how to fix it.
    """

    severity: Severity
    file: str
    message: str


@dataclass
class CheckReport:
    """What :func:`check_tree` found.

    Args:
        layout: The layout checked.
        root: The tree's root.
        counts: Clips per split (rows of the metadata/CSV).
        problems: Every problem, in the order found.
    """

    layout: Layout
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """The problems of severity "error"."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems of severity "warning"."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def error(self, file: str | Path, message: str) -> None:
        """Record an error."""
        self.problems.append(Problem("error", str(file), message))

    def warning(self, file: str | Path, message: str) -> None:
        """Record a warning."""
        self.problems.append(Problem("warning", str(file), message))

    def format(self) -> str:
        """A readable report: verdict, clips per split, then errors and warnings one per line."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"{self.layout} dataset at {self.root}: {verdict} "
            f"({len(self.errors)} errors, {len(self.warnings)} warnings)",
            "clips per split: " + (", ".join(f"{s} {n}" for s, n in self.counts.items()) or "none read"),
        ]
        for title, problems in (("errors", self.errors), ("warnings", self.warnings)):
            if problems:
                lines.append(f"{title}:")
                lines.extend(f"  {p.file}: {p.message}" for p in problems)
        return "\n".join(lines)


def check_tree(root: str | Path, layout: Layout, sample_rate: int = 11025, fps: float = 8.0) -> CheckReport:
    """Check a dataset tree and report every problem.

    Args:
        root: The tree's root (as passed to the dataset readers).
        layout: Which official layout it is in.
        sample_rate: Music layout: the rate every wav must have (AVSBench layouts are always 16 kHz).
        fps: Music layout: the frame rate of the frame folders.

    Returns:
        The report; ``report.ok`` is false when there is any error.
    """
    if layout not in ("music", *_SEGMENTATION):
        raise ValueError(f"layout must be one of s4, ms3, avss, music; got {layout!r}")
    report = CheckReport(layout=layout, root=Path(root))
    if layout == "music":
        _check_music(report, sample_rate, fps)
    else:
        _check_avsbench(report)
    return report


_SEGMENTATION: dict[str, tuple[str, tuple[str, ...], Callable[[Path, dict[str, str], str], SegClip]]] = {
    "s4": (avsbench.S4_METADATA, avsbench.S4_COLUMNS, avsbench.s4_clip),
    "ms3": (avsbench.MS3_METADATA, avsbench.MS3_COLUMNS, avsbench.ms3_clip),
    "avss": (avsbench.AVSS_METADATA, avsbench.AVSS_COLUMNS, avsbench.avss_clip),
}


def _check_avsbench(report: CheckReport) -> None:
    name, columns, make_clip = _SEGMENTATION[report.layout]
    metadata = report.root / name
    try:
        rows = read_csv(metadata, columns)
    except DatasetError as err:
        report.error(metadata, str(err))
        return
    n_classes = None
    if report.layout == "avss":
        try:
            n_classes = len(read_label2idx(report.root / avsbench.AVSS_LABELS))
        except DatasetError as err:
            report.error(report.root / avsbench.AVSS_LABELS, f"{err} (label colours not checked)")
    clips = []
    for where, row in rows:
        try:
            clips.append(make_clip(report.root, row, where))
        except DatasetError as err:
            report.error(where, str(err))
    ids: dict[str, list[str]] = {split: [clip.name for clip in clips if clip.split == split] for split in SPLITS}
    _check_splits(report, ids, metadata)
    for clip in clips:
        _check_clip(report, clip, n_classes)


def _check_splits(report: CheckReport, ids: dict[str, list[str]], source: Path) -> None:
    """Counts per split; empty splits, ids listed twice, ids shared between splits (leaks)."""
    for split, names in ids.items():
        report.counts[split] = len(names)
        if not names:
            report.error(source, f"the split {split!r} has no clips; the readers refuse an empty split.")
        for name, count in Counter(names).items():
            if count > 1:
                report.warning(source, f"clip {name!r} is listed {count} times in the split {split!r}.")
    for (split_a, names_a), (split_b, names_b) in itertools.combinations(ids.items(), 2):
        for name in sorted(set(names_a) & set(names_b)):
            report.error(
                source,
                f"clip id {name!r} is in both {split_a} and {split_b} (a leak between splits); keep one.",
            )


def _check_clip(report: CheckReport, clip: SegClip, n_classes: int | None) -> None:
    for path in clip.files:
        if not path.is_file():
            report.error(path, f"missing (clip {clip.name!r}, split {clip.split!r}).")
    if clip.audio.is_file():
        _check_audio(report, clip.audio, avsbench.SAMPLE_RATE, clip.seconds)
    for frame, mask in zip(clip.frames, clip.masks, strict=True):
        frame_size = _image_size(report, frame) if frame is not None and frame.is_file() else None
        if mask is None or not mask.is_file():
            continue
        try:
            if report.layout == "avss":
                rgb = read_rgb_mask(mask)
                if n_classes is not None:
                    decode_palette(rgb, n_classes, mask)
                height, width = rgb.shape[-2:]
            else:
                values = read_mask(mask)
                height, width = values.shape
                extra = sorted(set(values.unique().tolist()) - {0, 255})
                if extra:
                    report.warning(mask, f"values {_few(extra)} besides 0/255; the readers binarise with > 0.")
        except DatasetError as err:
            report.error(mask, str(err))
            continue
        if frame_size is not None and frame_size != (width, height):
            report.error(
                mask,
                f"mask is {width}×{height} but its frame {frame} is {frame_size[0]}×{frame_size[1]}; "
                "masks must align with their frames.",
            )


def _check_audio(report: CheckReport, path: Path, sample_rate: int, seconds: float) -> None:
    try:
        rate, n_samples = audio_info(path)
    except DatasetError as err:
        report.error(path, str(err))
        return
    if rate != sample_rate:
        report.error(path, f"sample rate {rate} Hz, expected {sample_rate} Hz; resample the file.")
    elif n_samples < seconds * rate:
        report.warning(
            path,
            f"{n_samples / rate:.2f} s long, shorter than the clip's {seconds:g} s: zero-padded when read.",
        )


def _image_size(report: CheckReport, path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, or an error."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        report.error(path, f"cannot read image: {err}. Re-create or remove it.")
        return None


def _few(values: list[int]) -> str:
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")


def _check_music(report: CheckReport, sample_rate: int, fps: float) -> None:
    tables = {}
    for split in SPLITS:
        path = music.split_csv(report.root, split)
        try:
            tables[split] = read_csv(path, music.COLUMNS)
        except DatasetError as err:
            report.error(path, str(err))
    labels = {row["label"] for rows in tables.values() for _, row in rows if row.get("label")}
    classes = {name: i for i, name in enumerate(sorted(labels))}  # as music.class_names
    for rows in tables.values():
        for where, row in rows:
            try:
                clip = music.read_clip(report.root, row, where, classes, sample_rate, fps)
            except DatasetError as err:
                report.error(where, str(err))
                continue
            n_files = sum(1 for _ in clip.frames.glob("*.jpg"))
            if n_files != clip.n_frames:
                report.warning(clip.frames, f"holds {n_files} frames but {where} says {clip.n_frames}.")
    ids: dict[str, list[str]] = {s: [Path(row.get("audio", "")).stem for _, row in rows] for s, rows in tables.items()}
    _check_splits(report, ids, report.root)
