"""Check a dataset tree in one of the official layouts and report every problem, not just the first.

:func:`check_tree` goes further than the datasets' construction-time checks: it counts clips per split and per
category against the published sizes, compares each clip's frame and mask files with what its layout has,
decodes every mask (values, palette colours, sizes against the frames), reads every audio header (rate, length,
channels), scans the audio for non-finite samples (only files whose encoding can hold them: float wavs, compressed
formats), opens every frame's header and looks for clips shared between splits (by id, and for the MUSIC-style
layout also by identical audio under another name). Errors are problems the readers would fail on or that make
results wrong (missing, empty or corrupt files, NaN or infinite samples, wrong rates, S4/MS3 masks with values
besides 0 and 255, unknown colours, audio much shorter than its frames, leaks); warnings are handled by the readers
but worth a look (short audio that is zero-padded, files the readers ignore, categories missing from a split). A
tree smaller than the published dataset is a subset: noted next to the counts, not a problem.
"""

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from avtoolkit.data import avsbench_layout as avsbench
from avtoolkit.data import music
from avtoolkit.data.audio_files import audio_info, nonfinite_samples
from avtoolkit.data.avsbench_layout import SPLITS, SegClip, decode_palette_array, read_csv, read_label2idx
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.mask_files import read_mask_array, read_rgb_mask_array

Layout = Literal["s4", "ms3", "avss", "music"]
Severity = Literal["error", "warning"]

# Published sizes, shown next to the counts. A smaller tree is a subset (noted, not a problem); a split larger
# than published is a warning. Where a number comes from:
#   S4: 3452/740/740 clips over 23 categories (AVSBench-object S4, Zhou et al., ECCV 2022).
#   MS3: 296/64/64 clips (the AVSBench paper's statistics, Zhou et al., ECCV 2022);
#        does not give MS3 sizes.
#   AVSS and the MUSIC-style layout: no published sizes to check against (and a prepared tree holds whichever videos
#        could be downloaded), so nothing is promised and the counts stand alone.
PUBLISHED_SIZES: dict[str, dict[str, int]] = {
    "s4": {"train": 3452, "val": 740, "test": 740},
    "ms3": {"train": 296, "val": 64, "test": 64},
}
PUBLISHED_CATEGORIES: dict[str, int] = {"s4": 23}

FRAMES_AUDIO_SLACK_S = 1.0
"""MUSIC-style layout: the frames (``n_frames / fps``) and the audio of a clip may differ by this many seconds
before it is a warning (a video's streams rarely end together); beyond the readers' own limit
(:func:`avtoolkit.data.music.read_clip`) it is an error."""

_MAX_TABLE_ROWS = 30  # longer per-category tables list only the categories missing from a split


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
        published: Published clips per split (empty when the layout promises no sizes).
        group_kind: What :attr:`groups` counts: "category" (S4), "class" (MUSIC-style), "subset" (AVSS), or "".
        groups: Clips per category/class/subset and split.
        published_groups: Published number of categories (S4), else ``None``.
    """

    layout: Layout
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    published: dict[str, int] = field(default_factory=dict)
    group_kind: str = ""
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    published_groups: int | None = None

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
        """A readable report, paths relative to the root.

        Verdict, clips per split (with the published sizes), clips per category, then the errors and the
        warnings, one per line, each naming the file and the fix.
        """
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"{self.layout} dataset at {self.root}: {verdict} "
            f"({_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')})",
            self._counts_line(),
            *self._group_table(),
        ]
        for title, problems in (("errors", self.errors), ("warnings", self.warnings)):
            if problems:
                lines.append(f"{title}:")
                lines.extend(f"  {self.relative(p.file)}: {self.relative(p.message)}" for p in problems)
        return "\n".join(lines)

    def relative(self, text: str) -> str:
        """``text`` with the root's prefix removed from the paths in it."""
        return text.replace(f"{self.root}{os.sep}", "")

    def _counts_line(self) -> str:
        if not self.counts:
            return "clips per split: none read"
        if not self.published:
            return "clips per split: " + ", ".join(f"{s} {n}" for s, n in self.counts.items())
        parts = [f"{s} {n} of {self.published[s]}" for s, n in self.counts.items()]
        if all(n == self.published[s] for s, n in self.counts.items()):
            state = "complete"
        elif any(n > self.published[s] for s, n in self.counts.items()):
            state = "a split is larger, see the warnings"
        else:
            state = "this tree is a subset"
        return f"clips per split: {', '.join(parts)} (published sizes; {state})"

    def _group_table(self) -> list[str]:
        if not self.groups:
            return []
        splits = list(self.counts) or list(SPLITS)
        found = f"{len(self.groups)}" + (f" of {self.published_groups} published" if self.published_groups else "")
        plural = {"category": "categories", "class": "classes"}.get(self.group_kind, f"{self.group_kind}s")
        rows = list(self.groups.items())
        hidden = 0
        if len(rows) > _MAX_TABLE_ROWS:
            shown = [(name, n) for name, n in rows if any(n.get(s, 0) == 0 for s in splits)]
            hidden, rows = len(rows) - len(shown), shown
        width = max(len(self.group_kind), *(len(name) for name, _ in rows)) if rows else len(self.group_kind)
        widths = [max(len(s), *(len(str(n.get(s, 0))) for _, n in rows)) if rows else len(s) for s in splits]
        lines = [
            f"clips per {self.group_kind} ({found} {plural}):",
            f"  {self.group_kind:<{width}}  " + "  ".join(f"{s:>{w}}" for s, w in zip(splits, widths, strict=True)),
        ]
        lines.extend(
            f"  {name:<{width}}  " + "  ".join(f"{n.get(s, 0):>{w}}" for s, w in zip(splits, widths, strict=True))
            for name, n in rows
        )
        if hidden:
            lines.append(f"  ... and {hidden} more {plural}, each with clips in every split")
        return lines


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
    report = CheckReport(
        layout=layout,
        root=Path(root),
        published=dict(PUBLISHED_SIZES.get(layout, {})),
        published_groups=PUBLISHED_CATEGORIES.get(layout),
    )
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

SplitRow = tuple[str, str, str]
"""``(split, clip id, where)`` of one metadata row; ``where`` names the file and line (and for the MUSIC-style
layout the wav)."""


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
    clips: list[SegClip] = []
    entries: list[SplitRow] = []
    groups: list[tuple[str, str]] = []
    for where, row in rows:
        try:
            clip = make_clip(report.root, row, where)
        except DatasetError as err:
            report.error(where, _strip(where, str(err)))
            continue
        clips.append(clip)
        entries.append((clip.split, clip.name, where))
        if report.layout == "s4":
            groups.append((clip.split, str(clip.category)))
        elif report.layout == "avss":
            groups.append((clip.split, _avss_subset(clip)))
    check_splits(report, entries, lambda split: metadata)
    if report.layout == "s4":
        _check_groups(report, groups, "category", lambda split: metadata)
    elif report.layout == "avss":
        _check_groups(report, groups, "subset", lambda split: metadata, warn_missing=False)
    for clip in clips:
        _check_clip(report, clip, n_classes, name)


def check_splits(
    report: CheckReport, entries: list[SplitRow], source: Callable[[str], Path], splits: Sequence[str] = SPLITS
) -> None:
    """Counts per split; empty or oversized splits, ids listed twice in a split, ids in several splits.

    A leak is one error per id, naming every split and row it is in.
    """
    rows_by_id: dict[str, dict[str, list[str]]] = {}
    for split, clip_id, where in entries:
        rows_by_id.setdefault(clip_id, {}).setdefault(split, []).append(where)
    for split in splits:
        count = report.counts[split] = sum(1 for s, _, _ in entries if s == split)
        published = report.published.get(split)
        if not count:
            report.error(source(split), f"the split {split!r} has no clips; the readers refuse an empty split.")
        elif published is not None and count > published:
            report.warning(
                source(split),
                f"the split {split!r} has {count} clips, more than the {published} published; were rows added "
                "or listed twice?",
            )
    for clip_id, where_by_split in rows_by_id.items():
        for split, wheres in where_by_split.items():
            if len(wheres) > 1:
                report.warning(
                    source(split),
                    f"clip {clip_id!r} is listed {len(wheres)} times in the split {split!r} ({'; '.join(wheres)}); "
                    "remove the extra rows.",
                )
    for clip_id, where_by_split in sorted(rows_by_id.items()):
        if len(where_by_split) > 1:
            in_splits = [s for s in SPLITS if s in where_by_split]
            rows = "; ".join(w for s in in_splits for w in where_by_split[s])
            report.error(
                source(in_splits[0]),
                f"clip id {clip_id!r} is in {_all_of(in_splits)}, a leak between splits: {rows}. Keep it in one "
                "split only.",
            )


def _check_groups(
    report: CheckReport,
    pairs: list[tuple[str, str]],
    kind: str,
    source: Callable[[str], Path],
    warn_missing: bool = True,
) -> None:
    """Clips per category/class and split; more categories than published, categories missing from a split."""
    groups: dict[str, dict[str, int]] = {}
    for split, group in pairs:
        groups.setdefault(group, dict.fromkeys(report.counts, 0))[split] += 1
    report.group_kind, report.groups = kind, dict(sorted(groups.items()))
    published = report.published_groups
    if published is not None and len(groups) > published:
        report.warning(
            source(SPLITS[0]),
            f"{len(groups)} {kind} names, more than the {published} published; is one misspelt?",
        )
    if not warn_missing:
        return
    filled = [split for split, count in report.counts.items() if count]  # empty splits are errors already
    for name, counts in report.groups.items():
        absent = [split for split in filled if not counts[split]]
        if not absent:
            continue
        present = ", ".join(f"{split} {n}" for split, n in counts.items() if n)
        effects = ["models never see it in training"] if "train" in absent else []
        unevaluated = [split for split in absent if split != "train"]
        if unevaluated:
            effects.append(f"it is not evaluated on {_any_of(unevaluated)}")
        report.warning(
            source(absent[0]),
            f"{kind} {name!r} has no {_any_of(absent)} clips ({present}): {'; '.join(effects)}. Rebalance the "
            "splits if this is not intended.",
        )


def _check_clip(report: CheckReport, clip: SegClip, n_classes: int | None, metadata: str) -> None:
    _check_missing(report, clip, metadata)
    _check_unused(report, clip)
    if clip.audio.is_file():
        _check_audio(report, clip.audio, avsbench.SAMPLE_RATE, clip.seconds, metadata)
    for frame, mask in zip(clip.frames, clip.masks, strict=True):
        frame_size = _image_size(report, frame) if frame is not None and frame.is_file() else None
        if mask is None or not mask.is_file():
            continue
        try:
            if report.layout == "avss":
                rgb = read_rgb_mask_array(mask)
                if n_classes is not None:
                    decode_palette_array(rgb, n_classes, mask)
                height, width = rgb.shape[:2]
            else:
                values = read_mask_array(mask)
                height, width = values.shape
                _check_binary(report, mask, values)
        except DatasetError as err:
            report.error(mask, str(err))
            continue
        if frame_size is not None and frame_size != (width, height):
            report.error(
                mask,
                f"mask is {width}×{height} but its frame {frame} is {frame_size[0]}×{frame_size[1]}; "
                "masks must align with their frames.",
            )


def _check_binary(report: CheckReport, path: Path, values: np.ndarray) -> None:
    """S4/MS3 masks hold 0 and 255 only; the readers take other values from 128 as foreground, so they are errors."""
    odd = (values != 0) & (values != 255)
    if not odd.any():
        return
    extra = np.unique(values[odd]).tolist()
    n = int(odd.sum())
    report.error(
        path,
        f"values {_few(extra)} besides 0 and 255 ({_plural(n, 'pixel')}): masks must be binary. The readers take "
        f"values from {avsbench.MASK_THRESHOLD} as foreground and lower ones as background (as AVSBench's loaders "
        "do), so e.g. a 0/1 mask reads as empty. Re-export the mask with 0 for background and 255 for the sounding "
        "objects.",
    )


def _check_missing(report: CheckReport, clip: SegClip, metadata: str) -> None:
    """Every missing file of a clip; a missing frame or mask folder is one error, not one per file."""
    fix = f"restore it, or remove the clip's row from {metadata}."
    folders_done: set[Path] = set()
    for kind, paths in (("audio", (clip.audio,)), ("frame", clip.frames), ("mask", clip.masks)):
        for path in paths:
            if path is None or path.is_file():
                continue
            folder = path.parent
            if kind != "audio" and not folder.is_dir():
                if folder not in folders_done:
                    folders_done.add(folder)
                    expected = sum(p is not None for p in paths)
                    report.error(
                        folder,
                        f"{kind} folder missing ({expected} {kind}s of clip {clip.name!r}, split {clip.split!r}); "
                        + fix,
                    )
                continue
            report.error(path, f"missing {kind} (clip {clip.name!r}, split {clip.split!r}); " + fix)


def _check_unused(report: CheckReport, clip: SegClip) -> None:
    """Frame and mask files in a clip's folders that its layout does not have (the readers ignore them)."""
    for kind, paths in (("frame", clip.frames), ("mask", clip.masks)):
        expected = [p for p in paths if p is not None]
        folder = expected[0].parent
        if not folder.is_dir():
            continue
        unused = sorted(
            (f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f not in expected),
            key=_natural,
        )
        if unused:
            span = expected[0].name + (f" .. {expected[-1].name}" if len(expected) > 1 else "")
            report.warning(
                folder,
                f"{_plural(len(unused), f'{kind} file')} the readers do not use ({_few(unused)}): the layout has "
                f"{_plural(len(expected), kind)} for this {_clip_kind(report, clip)} {clip.split} clip ({span}); "
                "remove the others, or check the clip.",
            )


def _clip_kind(report: CheckReport, clip: SegClip) -> str:
    return _avss_subset(clip) if report.layout == "avss" else report.layout.upper()


def _avss_subset(clip: SegClip) -> str:
    """The subset folder of an AVSS clip (``{root}/{subset}/{uid}/audio.wav``)."""
    return clip.audio.parent.parent.name


def _check_audio(report: CheckReport, path: Path, sample_rate: int, seconds: float, metadata: str) -> None:
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
    _check_finite(report, path, rate, f"re-create it, or remove the clip's row from {metadata}.")


def _check_finite(report: CheckReport, path: Path, rate: int, fix: str) -> None:
    """NaN or infinite samples: the readers refuse the file (training on them gives NaN losses and metrics)."""
    try:
        count, first = nonfinite_samples(path)
    except DatasetError as err:
        report.error(path, str(err))
        return
    if count and first is not None:
        report.error(
            path,
            f"{_plural(count, 'non-finite sample')} (NaN or infinity), the first at {first / rate:.2f} s (sample "
            f"{first}): the readers refuse the file, as losses and metrics would be NaN; {fix}",
        )


def _image_size(report: CheckReport, path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, or an error."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        report.error(path, f"cannot read image: {err}. Re-create or remove it.")
        return None


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
    entries: list[SplitRow] = [
        (split, Path(row["audio"]).stem, f"{where} ({row['audio']})")
        for split, rows in tables.items()
        for where, row in rows
        if row.get("audio")
    ]

    csvs: dict[str, Path] = {split: music.split_csv(report.root, split) for split in SPLITS}
    source = csvs.__getitem__
    check_splits(report, entries, source, splits=list(tables))
    pairs: list[tuple[str, str]] = [
        (split, row["label"]) for split, rows in tables.items() for _, row in rows if row.get("label")
    ]
    _check_groups(report, pairs, "class", source)
    fingerprints: list[tuple[str, str, str, str]] = []
    for split, rows in tables.items():
        for where, row in rows:
            fingerprint = _check_music_row(report, row, where, classes, sample_rate, fps)
            if fingerprint is not None:
                fingerprints.append((fingerprint, split, Path(row["audio"]).stem, f"{where} ({row['audio']})"))
    _check_same_audio(report, fingerprints, source)


def _check_music_row(
    report: CheckReport, row: dict[str, str], where: str, classes: dict[str, int], sample_rate: int, fps: float
) -> str | None:
    """Check one CSV row of the MUSIC-style layout; return a fingerprint of its audio (``None`` if unreadable)."""
    n_errors = len(report.errors)
    for column in music.COLUMNS:
        if not row.get(column):
            report.error(where, f"the field {column!r} is empty; fill it in or remove the row.")
    text = row.get("n_frames", "")
    n_frames = int(text) if text.isdigit() else 0
    if text and n_frames < 1:
        report.error(where, f"n_frames must be a positive integer, got {text!r}.")
    fingerprint = None
    if row.get("audio"):
        audio = report.root / row["audio"]
        header = _audio_header(report, audio, where)
        if header is not None:
            rate, n_samples, channels = header
            if rate != sample_rate:
                report.error(
                    audio,
                    f"sample rate {rate} Hz but {sample_rate} Hz was expected: re-run the preparation at "
                    f"{sample_rate} Hz, or set the datamodule's sample_rate to {rate} if the whole dataset has it.",
                )
            if channels != 1:
                report.error(
                    audio,
                    f"{channels} channels, but the prepared layout is mono (the readers would average them): "
                    "re-run the preparation, or downmix the file to mono.",
                )
            _check_finite(report, audio, rate, "re-run the preparation of this clip, or remove the row.")
            fingerprint = _audio_fingerprint(audio, rate, n_samples)
    if row.get("frames") and n_frames:
        _check_frame_files(report, report.root / row["frames"], n_frames, where)
    if len(report.errors) > n_errors:
        return fingerprint
    try:
        clip = music.read_clip(report.root, row, where, classes, sample_rate, fps)
    except DatasetError as err:  # what the readers refuse beyond the checks above (frames vs audio duration)
        report.error(where, _strip(where, str(err)))
        return fingerprint
    frames_s = clip.n_frames / fps
    if clip.duration < frames_s - FRAMES_AUDIO_SLACK_S:
        report.warning(
            clip.audio,
            f"{clip.duration:.2f} s long, but its {clip.n_frames} frames cover {frames_s:.2f} s at {fps:g} fps: the "
            "frames past the audio are never used. Re-run the preparation of this clip, or fix n_frames.",
        )
    elif frames_s < clip.duration - FRAMES_AUDIO_SLACK_S:
        report.warning(
            clip.frames,
            f"{clip.n_frames} frames cover {frames_s:.2f} s at {fps:g} fps, but the audio lasts "
            f"{clip.duration:.2f} s: windows past the last frame show the last frame. Re-extract the frames, or "
            "check fps.",
        )
    return fingerprint


def _audio_header(report: CheckReport, path: Path, where: str) -> tuple[int, int, int] | None:
    """``(sample_rate, n_samples, channels)`` from the header, or an error."""
    if not path.is_file():
        report.error(path, f"missing ({where}); re-run the preparation of this clip, or remove the row.")
        return None
    try:
        rate, n_samples = audio_info(path)
        channels = int(sf.info(str(path)).channels)
    except (DatasetError, sf.LibsndfileError, RuntimeError) as err:
        report.error(path, str(err))
        return None
    return rate, n_samples, channels


def _audio_fingerprint(path: Path, rate: int, n_samples: int) -> str | None:
    """A hash of one second from the middle of a wav and its length: equal for copies of one recording.

    Silence is no evidence of a copy, so an all-zero second has no fingerprint.
    """
    block = min(n_samples, rate)
    try:
        data, _ = sf.read(str(path), frames=block, start=(n_samples - block) // 2, dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError):
        return None
    if not data.any():
        return None
    return hashlib.blake2b(data.tobytes() + str(n_samples).encode(), digest_size=16).hexdigest()


def _check_frame_files(report: CheckReport, folder: Path, n_frames: int, where: str) -> None:
    """The frame files of a MUSIC-style clip against its ``n_frames``.

    Missing frames are errors (the sampler reads frames by index), and so are empty (0-byte) files and files whose
    header is not a picture's (only the header is read, as for the AVSBench layouts); other files are unused.
    """
    if not folder.is_dir():
        report.error(folder, f"frames folder not found ({where}); re-run the preparation of this clip.")
        return
    present = {f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")}
    expected = {f"{k:06d}.jpg" for k in range(1, n_frames + 1)}
    missing = sorted(expected - present)
    unused = sorted(present - expected)
    if missing:
        report.error(
            folder,
            f"missing {len(missing)} of the {n_frames} frames that {where} lists ({_few(missing)}); re-run the "
            "preparation of this clip, or fix n_frames.",
        )
    if unused:
        report.warning(
            folder,
            f"{_plural(len(unused), 'file')} besides the {n_frames} frames that {where} lists ({_few(unused)}): "
            "unused; fix n_frames, or remove them.",
        )
    empty: list[str] = []
    unreadable: list[str] = []
    for name in sorted(expected & present):
        frame = folder / name
        if frame.stat().st_size == 0:
            empty.append(name)
            continue
        try:
            with Image.open(frame):
                pass
        except (UnidentifiedImageError, OSError) as err:
            unreadable.append(f"{name}: {err}" if not unreadable else name)
    fix = "re-run the preparation of this clip (the readers fail on them)."
    if empty:
        report.error(
            folder,
            f"{_plural(len(empty), 'empty frame file')} (0 bytes) among the {n_frames} that {where} lists "
            f"({_few(empty)}); {fix}",
        )
    if unreadable:
        report.error(
            folder,
            f"{_plural(len(unreadable), 'frame file')} of the {n_frames} that {where} lists cannot be read as a "
            f"picture ({_few(unreadable)}); {fix}",
        )


def _check_same_audio(
    report: CheckReport, fingerprints: list[tuple[str, str, str, str]], source: Callable[[str], Path]
) -> None:
    """Identical audio under different ids in different splits: a leak the id comparison cannot see."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for fingerprint, split, clip_id, where in fingerprints:
        groups.setdefault(fingerprint, []).append((split, clip_id, where))
    for members in groups.values():
        in_splits = [s for s in SPLITS if any(split == s for split, _, _ in members)]
        if len(in_splits) < 2 or len({clip_id for _, clip_id, _ in members}) < 2:
            continue  # one split, or one id (then the id comparison reported it)
        wheres = "; ".join(where for split in in_splits for s, _, where in members if s == split)
        report.error(
            source(in_splits[0]),
            f"identical audio under different names in {_all_of(in_splits)}, a leak between splits even when "
            f"renamed: {wheres}. Keep the recording in one split only.",
        )


def _strip(where: str, message: str) -> str:
    """A reader's message without the ``where: `` prefix that the report's file column already shows."""
    return message.removeprefix(f"{where}: ")


def _few(values: Sequence[object]) -> str:
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _all_of(names: Sequence[str]) -> str:
    """``both a and b`` / ``a, b and c``."""
    return f"both {names[0]} and {names[1]}" if len(names) == 2 else ", ".join(names[:-1]) + f" and {names[-1]}"


def _any_of(names: Sequence[str]) -> str:
    """``a`` / ``a or b`` / ``a, b or c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"


def _natural(name: str) -> tuple[int, str]:
    """Sort key putting ``x_6.png`` before ``x_10.png``: the number before the suffix, then the name."""
    stem = name.rsplit(".", 1)[0]
    digits = stem[len(stem.rstrip("0123456789")) :]
    return (int(digits) if digits else -1, name)
