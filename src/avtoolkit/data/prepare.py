"""Prepare MUSIC / MUSIC-21 / VGGSound from downloaded videos and a published id list.

The published datasets are lists of YouTube ids; users download the videos themselves.
:func:`prepare_separation` turns a folder of downloaded videos plus the id list into the prepared layout that
:mod:`avtoolkit.data.music` reads::

    {out}/audio/{class}/{id}.wav                    mono, 11025 Hz by default
    {out}/frames/{class}/{id}.mp4/{000001..}.jpg    8 fps by default; frame k shows time (k - 1) / fps
    {out}/{train,val,test}.csv                      header: audio,frames,n_frames,label (paths relative to out)
    {out}/duet.csv                                  MUSIC duets (real mixtures), never in the solo splits
    {out}/prepare_report.txt                        what was prepared and what was not, and why
    {out}/prepare.json                              the settings of the tree (a re-run must use the same)

Id lists:

- MUSIC / MUSIC-21 JSON ``{"videos": {class: [youtube_id, ...]}}`` (``MUSIC_solo_videos.json``,
  ``MUSIC21_solo_videos.json``, ``MUSIC_duet_videos.json``). A class key with a space (``"acoustic_guitar
  violin"``) is a duet: with ``duets="separate"`` (default) it is prepared into ``duet.csv`` (label ``"a b"``,
  class folder ``a+b``) and never into train/val/test; with ``duets="skip"`` it is left out and listed in the
  report.
- VGGSound CSV as published (``vggsound.csv``, no header): rows ``youtube_id,start_seconds,label,split`` with
  split ``train``/``test``. A clip is the 10 s from ``start_seconds``; its id is ``{youtube_id}_{start:06d}``.
  Class folders are the labels with every run of characters other than letters, digits, ``_ . -`` replaced
  by ``_`` (``"playing violin, fiddle"`` → ``playing_violin_fiddle``); the CSVs keep the published label.

Several id lists of one format can be given together (e.g. the MUSIC solo and duet lists); an id listed twice
is prepared once, under its first class, and reported.

Video files are searched for anywhere under the videos folder (flat or in class folders, hidden folders
skipped), with the extensions of :data:`VIDEO_EXTENSIONS` (.mp4, .mkv, .webm, .mov, .avi, .m4v). MUSIC:
``{youtube_id}.{ext}``. VGGSound: ``{youtube_id}_{start:06d}.{ext}``, else ``{youtube_id}_{start}.{ext}``,
else ``{youtube_id}.{ext}``. A VGGSound file longer than the clip by more than 1 s is taken as the whole
YouTube video and the clip is cut from it at ``start``; otherwise the file is the clip (its first 10 s are
used). When several files match, one in the class folder is preferred, then the extension order above.

Splits. Each clip goes to the split of the explicit list naming it (``train_ids`` / ``val_ids`` /
``test_ids``: one id per line, or a CSV whose first column is an id or a path whose stem is the id, such as the
CLIPSep lists or a prepared ``train.csv``; a VGGSound clip is named by its clip id or by its YouTube id).
Otherwise it goes to its source split (VGGSound: the CSV's; MUSIC: train), unless that split has an explicit
list, in which case it is left out (``unlisted`` in the report). A split with neither a list nor a source
(always val unless listed; test for MUSIC) is drawn from train: per class, from the sorted ids shuffled with
``seed`` (``val_fraction``, ``test_fraction``). Splits are planned on the whole id list, not on what was
downloaded, so they do not change when more videos arrive. Ids in two explicit lists are a leak
(found with :mod:`avtoolkit.data.check`'s split check): the preparation fails before decoding anything, unless
``keep_first`` keeps each such id in its first split in train, val, test order (and reports it).

Each video is decoded with PyAV into a staging folder ``{out}/.partial`` and moved into place (frames first,
the wav last: a clip is complete when its wav is there), so an interruption never leaves a partial clip where a
reader would find it; ``.partial`` is emptied at the start of every run. Complete clips are not decoded again
(whether or not their video is still there), so a re-run resumes. Only one preparation may write to a folder
at a time.

Problems with single videos are reported, not raised: missing from the folder, corrupt or undecodable (e.g.
truncated), without a video stream, without an audio track, too short (below ``min_seconds`` after cutting).
The CSVs list only the clips prepared successfully. Malformed id lists, an unknown format, a leak, or an out
folder that is not a prepared tree raise a :class:`~avtoolkit.data.errors.DatasetError` naming the file and
the fix. After writing, the tree is checked with :func:`~avtoolkit.data.check.check_tree`;
:attr:`PrepareReport.ok` is false when nothing could be prepared or the check fails (e.g. an empty split).
"""

import csv
import io
import json
import math
import os
import random
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePath
from typing import Any, Literal, get_args

import soundfile as sf
from PIL import Image

from avtoolkit.data.audio_files import audio_info
from avtoolkit.data.check import CheckReport, SplitRow, check_splits, check_tree
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.music import COLUMNS, SPLITS, Split
from avtoolkit.data.video import VIDEO_EXTENSIONS, decode_audio_track, decode_video, open_media
from avtoolkit.errors import ConfigError
from avtoolkit.utils.files import atomic_path
from avtoolkit.utils.imports import lazy_import
from avtoolkit.utils.processes import map_in_processes

Format = Literal["music", "vggsound"]
DuetPolicy = Literal["separate", "skip"]

VGGSOUND_SECONDS = 10.0
"""Length of a VGGSound clip (from its start second)."""
DUET_CSV = "duet.csv"
REPORT_FILE = "prepare_report.txt"
MANIFEST_FILE = "prepare.json"
PARTIAL_DIR = ".partial"
_FULL_VIDEO_SLACK_S = 1.0  # a VGGSound file longer than the clip by more than this is the whole video
_ID = re.compile(r"[A-Za-z0-9_-]+")
_HEADER_NAMES = {"audio", "id", "ids", "youtube_id", "ytid", "video_id", "clip_id", "name"}
_FAILURES = ("missing", "corrupt", "no_video", "no_audio", "too_short")
_TITLES = {
    "missing": "missing from the videos folder",
    "corrupt": "corrupt or undecodable",
    "no_video": "without a video stream",
    "no_audio": "without an audio track",
    "too_short": "too short",
    "skipped_duets": "duets skipped (duets='skip')",
    "unlisted": "left out: in no explicit split list, and their split has one",
    "not_in_id_list": "named in a split list but not in the id list",
    "duplicates": "listed more than once in the id lists (the first kept)",
}


@dataclass(frozen=True)
class Entry:
    """One clip of an id list.

    Args:
        id: Clip id, the stem of its files in the tree (MUSIC: the YouTube id; VGGSound:
            ``{youtube_id}_{start:06d}``).
        label: Class label written to the CSV (duets: ``"a b"``).
        folder: Class folder in the tree.
        names: File stems of the video to look for, preferred first.
        aliases: Names an explicit split list may use for it.
        start: VGGSound: start second of the clip in the whole video.
        seconds: Clip length (VGGSound: 10 s); ``None`` keeps the whole video.
        source_split: The split the id list gives (VGGSound), else ``None``.
        duet: A MUSIC duet (a real mixture).
        where: File and line or key that listed it.
    """

    id: str
    label: str
    folder: str
    names: tuple[str, ...]
    aliases: tuple[str, ...]
    start: float = 0.0
    seconds: float | None = None
    source_split: Split | None = None
    duet: bool = False
    where: str = ""


@dataclass
class PrepareReport:
    """What :func:`prepare_separation` did. Id lists are sorted.

    Args:
        out: The prepared tree.
        id_format: Format of the id lists.
        splits: Ids written to each CSV (``train``, ``val``, ``test``, and ``duet`` when duets are prepared).
        prepared: Clips decoded in this run.
        reused: Clips already complete in ``out``, not decoded again.
        missing: Listed ids without a video file in the folder.
        corrupt: Videos that could not be opened or decoded (e.g. truncated files).
        no_video: Files without a video stream.
        no_audio: Videos without an audio track.
        too_short: Clips shorter than ``min_seconds`` (after cutting).
        skipped_duets: Duets left out (``duets="skip"``).
        unlisted: Ids left out because their split has an explicit list that does not name them.
        not_in_id_list: Names in the explicit split lists that match no id of the id lists.
        duplicates: Ids listed more than once in the id lists (prepared once, under the first class).
        leaks: Ids named in several explicit split lists → those splits; only with ``keep_first`` (the id is
            kept in the first).
        details: Id → why it was not prepared (failures only).
        check: :func:`~avtoolkit.data.check.check_tree` of the written tree.
    """

    out: Path
    id_format: Format
    splits: dict[str, list[str]] = field(default_factory=dict)
    prepared: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    no_video: list[str] = field(default_factory=list)
    no_audio: list[str] = field(default_factory=list)
    too_short: list[str] = field(default_factory=list)
    skipped_duets: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    not_in_id_list: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    check: CheckReport | None = None

    @property
    def n_clips(self) -> int:
        """Clips in the train/val/test CSVs."""
        return sum(len(self.splits.get(split, [])) for split in SPLITS)

    @property
    def failed(self) -> list[str]:
        """Ids that could not be prepared (missing, corrupt, no video, no audio, too short), sorted."""
        return sorted(i for name in _FAILURES for i in getattr(self, name))

    @property
    def ok(self) -> bool:
        """Some clip was prepared and the written tree passes :func:`~avtoolkit.data.check.check_tree`."""
        return self.n_clips > 0 and (self.check is None or self.check.ok)

    def format(self) -> str:
        """A readable report: verdict, clips per CSV, then every left-out id with its reason, one per line."""
        counts = ", ".join(f"{name} {len(ids)}" for name, ids in self.splits.items())
        lines = [
            f"{self.id_format} prepared at {self.out}: {'OK' if self.ok else 'FAILED'}",
            f"clips: {counts or 'none'} ({len(self.prepared)} decoded now, {len(self.reused)} already prepared)",
        ]
        if self.failed:
            lines.append(f"not prepared ({len(self.failed)}):")
        for name in _FAILURES:
            ids = getattr(self, name)
            if ids:
                lines.append(f"  {_TITLES[name]} ({len(ids)}):")
                lines.extend(f"    {i}: {self.details.get(i, '')}" for i in ids)
        for name in ("skipped_duets", "unlisted", "not_in_id_list", "duplicates"):
            ids = getattr(self, name)
            if ids:
                lines.append(f"{_TITLES[name]} ({len(ids)}): {' '.join(ids)}")
        if self.leaks:
            lines.append(f"ids in several split lists, kept in the first ({len(self.leaks)}):")
            lines.extend(f"  {i}: {', '.join(splits)}" for i, splits in self.leaks.items())
        if self.check is not None:
            lines.append("check of the prepared tree: " + self.check.format().replace("\n", "\n  "))
        return "\n".join(lines)


def prepare_separation(
    videos: str | Path,
    id_list: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    format: Format | None = None,
    train_ids: str | Path | None = None,
    val_ids: str | Path | None = None,
    test_ids: str | Path | None = None,
    keep_first: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    duets: DuetPolicy = "separate",
    sample_rate: int = 11025,
    fps: float = 8.0,
    short_side: int | None = 256,
    min_seconds: float = 6.0,
    jpeg_quality: int = 90,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Prepare a separation dataset (MUSIC, MUSIC-21, VGGSound) from downloaded videos and published id lists.

    Args:
        videos: Folder of the downloaded videos (searched recursively; see the module doc for the names).
        id_list: Published id list(s) of one format: MUSIC/MUSIC-21 JSON, or VGGSound CSV.
        out: Folder of the prepared tree (created; an earlier run's folder is resumed).
        format: music or vggsound; ``None`` infers it from the suffix (.json: music, .csv: vggsound).
        train_ids: Explicit train ids (one per line, or a CSV whose first column is an id or a path to it).
        val_ids: Explicit val ids (same formats).
        test_ids: Explicit test ids (same formats).
        keep_first: When an id is in several split lists, keep it in the first (train, val, test) instead of
            failing.
        val_fraction: Fraction of each class's train ids drawn for val when val has no list.
        test_fraction: Fraction of each class's train ids drawn for test when test has neither a list nor a
            source split (MUSIC).
        seed: Seed of the drawn splits.
        duets: separate (MUSIC duets into duet.csv, never the solo splits) or skip (left out, reported).
        sample_rate: Audio rate of the wavs (Hz).
        fps: Frame rate of the extracted frames.
        short_side: Resize frames so that their short side has this many pixels (never enlarged); ``None``
            keeps the video's size. 256 keeps the detail of the 224-pixel inputs of the image encoders.
        min_seconds: Clips shorter than this are left out (the default window, 65535 samples at 11025 Hz,
            needs 5.94 s).
        jpeg_quality: JPEG quality of the frames.
        workers: Processes decoding videos (default: all cores); 1 decodes in this process.
        progress: Show a progress bar.

    Returns:
        The report, also written to ``{out}/prepare_report.txt``.

    Raises:
        DatasetError: a malformed id or split list, an unknown format, ids in two split lists (without
            ``keep_first``), or an ``out`` that is not a tree prepared with these settings.
        ConfigError: an option out of its range (fractions, rates, sizes, JPEG quality, duets).
    """
    _check_arguments(val_fraction, test_fraction, sample_rate, fps, short_side, min_seconds, jpeg_quality)
    if duets not in get_args(DuetPolicy):
        raise ConfigError(f"duets must be 'separate' or 'skip', got {duets!r}")
    videos, out = Path(videos), Path(out)
    lists = [Path(id_list)] if isinstance(id_list, str | Path) else [Path(p) for p in id_list]
    if not lists:
        raise DatasetError("no id list given: pass the published MUSIC JSON or VGGSound CSV.")
    id_format = format or infer_format(lists[0])
    if id_format not in get_args(Format):
        raise DatasetError(f"unknown id-list format {id_format!r}: use one of {', '.join(get_args(Format))}.")
    report = PrepareReport(out=out, id_format=id_format)
    entries = _unique_entries([e for path in lists for e in read_id_list(path, id_format)], report)
    explicit = {
        split: path for split, path in zip(SPLITS, (train_ids, val_ids, test_ids), strict=True) if path is not None
    }
    plan = plan_splits(
        [e for e in entries if not e.duet],
        {split: read_split_ids(Path(path)) for split, path in explicit.items()},
        val_fraction,
        test_fraction,
        seed,
        keep_first,
        report,
    )
    duet_entries = [e for e in entries if e.duet]
    if duets == "skip":
        report.skipped_duets = sorted(e.id for e in duet_entries)
        duet_entries = []
    if not videos.is_dir():
        raise DatasetError(f"videos folder not found: {videos}; point it at the folder of the downloaded videos.")

    settings = {"sample_rate": sample_rate, "fps": fps, "short_side": short_side, "jpeg_quality": jpeg_quality}
    _open_out(out, settings)
    wanted = [e for e in entries if e.id in plan] + duet_entries
    done, jobs = _jobs(wanted, index_videos(videos, exclude=out), out, settings, min_seconds)
    # Forked workers start at once (a spawned one re-imports torch first); as in torch's DataLoader workers, each
    # uses one intra-op thread, so no inherited OpenMP pool is touched.
    outcomes = done + map_in_processes(prepare_clip, jobs, workers, "fork", progress, "prepare", "video", _init_worker)
    for outcome in sorted(outcomes, key=lambda o: o.id):
        getattr(report, outcome.status).append(outcome.id)
        if outcome.status not in ("prepared", "reused"):
            report.details[outcome.id] = outcome.detail
    good = set(report.prepared) | set(report.reused)
    n_frames = {o.id: o.n_frames for o in outcomes}
    tables: dict[str, list[Entry]] = {split: [] for split in SPLITS}
    for entry in entries:
        if entry.id in good and entry.id in plan:
            tables[plan[entry.id]].append(entry)
    if duet_entries:
        tables["duet"] = [e for e in duet_entries if e.id in good]
    for name, rows in tables.items():
        rows.sort(key=lambda e: (e.label, e.id))
        report.splits[name] = [e.id for e in rows]
        _write_text(out / (DUET_CSV if name == "duet" else f"{name}.csv"), _csv_text(rows, n_frames))
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    report.check = check_tree(out, "music", sample_rate=sample_rate, fps=fps)
    _write_text(out / REPORT_FILE, report.format() + "\n")
    return report


def infer_format(path: Path) -> Format:
    """The id-list format from the file suffix: .json → music, .csv → vggsound."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "music"
    if suffix == ".csv":
        return "vggsound"
    raise DatasetError(
        f"cannot tell the format of the id list {path} from its suffix {suffix or '(none)'!r}: pass "
        "format='music' (MUSIC/MUSIC-21 JSON) or format='vggsound' (vggsound.csv)."
    )


# Id lists


def read_id_list(path: Path, id_format: Format) -> list[Entry]:
    """Read a published id list (MUSIC/MUSIC-21 JSON or VGGSound CSV) into :class:`Entry` records.

    Raises:
        DatasetError: the file is missing, unreadable or malformed (the message names the line or key).
    """
    if not path.is_file():
        raise DatasetError(f"id list not found: {path}; download the published list or fix the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read the id list {path}: {err}. Save it as UTF-8 text.") from err
    return _read_music_json(path, text) if id_format == "music" else _read_vggsound_csv(path, text)


_MUSIC_SHAPE = '{"videos": {"accordion": ["<youtube id>", ...], ...}} (as MUSIC_solo_videos.json)'


def _read_music_json(path: Path, text: str) -> list[Entry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); a MUSIC id list "
            f"looks like {_MUSIC_SHAPE}. Re-download it, or pass format='vggsound' for a VGGSound CSV."
        ) from err
    classes = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(classes, dict):
        raise DatasetError(f"{path} has no 'videos' object; a MUSIC id list looks like {_MUSIC_SHAPE}.")
    entries = []
    for key, ids in classes.items():
        parts = key.split()
        where = f"{path} class {key!r}"
        if not parts or not all(_ID.fullmatch(part) for part in parts):
            raise DatasetError(f"{where}: a class name is one word of letters, digits, _ or - (duets: two).")
        if not isinstance(ids, list) or not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
            raise DatasetError(f"{where}: expected a list of YouTube ids (strings of letters, digits, _ and -).")
        for video in ids:
            entries.append(
                Entry(
                    id=video,
                    label=" ".join(parts),
                    folder="+".join(parts),
                    names=(video,),
                    aliases=(video,),
                    duet=len(parts) > 1,
                    where=where,
                )
            )
    return entries


def _read_vggsound_csv(path: Path, text: str) -> list[Entry]:
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise DatasetError(f"cannot parse {path} as CSV: {err}. Use the published vggsound.csv.") from err
    entries = []
    for line, row in enumerate(rows, start=1):
        row = [value.strip() for value in row]
        if not any(row):
            continue
        if line == 1 and row[-1] not in SPLITS and (len(row) < 2 or _number(row[1]) is None):
            continue  # a header row such as youtube_id,start_seconds,label,split (the published file has none)
        where = f"{path} line {line}"
        if len(row) != 4:
            raise DatasetError(
                f"{where}: expected 4 fields youtube_id,start_seconds,label,split (as in the published "
                f"vggsound.csv; quote labels that hold commas), got {len(row)}: {','.join(row)!r}."
            )
        video, start_text, label, split = row
        start = _number(start_text)
        if not _ID.fullmatch(video):
            raise DatasetError(f"{where}: {video!r} is not a YouTube id (letters, digits, _ and -).")
        if start is None or start < 0 or start != int(start):
            raise DatasetError(f"{where}: start_seconds must be a whole number of seconds, got {start_text!r}.")
        if split not in SPLITS:
            raise DatasetError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}.")
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.")
        if not folder:
            raise DatasetError(f"{where}: the label {label!r} is empty or has no letter or digit.")
        second = int(start)
        clip = f"{video}_{second:06d}"
        entries.append(
            Entry(
                id=clip,
                label=label,
                folder=folder,
                names=(clip, f"{video}_{second}", video),
                aliases=(clip, f"{video}_{second}", video),
                start=float(second),
                seconds=VGGSOUND_SECONDS,
                source_split=split,
                where=where,
            )
        )
    return entries


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _unique_entries(entries: list[Entry], report: PrepareReport) -> list[Entry]:
    """The entries with each id once (the first); ids listed again go to ``report.duplicates``."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        if entry.id in seen:
            report.duplicates.append(entry.id)
        else:
            seen[entry.id] = entry
    report.duplicates = sorted(set(report.duplicates))
    return list(seen.values())


def read_split_ids(path: Path) -> list[tuple[str, str]]:
    """Read an explicit split list: one id per line, or a CSV whose first column is an id or a file path.

    A path's stem is the id (CLIPSep's ``data/MUSIC/solo/audio/cello/VdFnyZWJAgo.wav`` → ``VdFnyZWJAgo``).
    Empty lines, ``#`` comments and a header (``audio``, ``id``, ``youtube_id``, ...) are skipped.

    Returns:
        ``(name, where)`` per listed id; ``where`` names the file and line.

    Raises:
        DatasetError: the file is missing or unreadable, or a line holds no id.
    """
    if not path.is_file():
        raise DatasetError(f"split list not found: {path}; fix the path.")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"cannot read the split list {path}: {err}. Save it as UTF-8 text.") from err
    names: list[tuple[str, str]] = []
    for line, row in enumerate(rows, start=1):
        first = row[0].strip() if row else ""
        if not first or first.startswith("#"):
            continue
        if not names and first.lower() in _HEADER_NAMES:
            continue
        name = PurePath(first.replace("\\", "/")).stem if "/" in first or "." in first else first
        if not _ID.fullmatch(name):
            raise DatasetError(
                f"{path} line {line}: {first!r} is not a video id; a split list holds one YouTube id (or clip "
                "id, or a prepared CSV's audio path) per line."
            )
        names.append((name, f"{path} line {line}"))
    return names


# Splits


def plan_splits(
    entries: Sequence[Entry],
    lists: dict[Split, list[tuple[str, str]]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    keep_first: bool,
    report: PrepareReport,
) -> dict[str, Split]:
    """The split of each solo clip (id → split), following the rules of the module doc.

    Args:
        entries: The solo entries (each id once).
        lists: The explicit split lists given (split → ``(name, where)`` from :func:`read_split_ids`).
        val_fraction: Fraction of each class's train ids drawn for val when val has no list.
        test_fraction: Same for test, when test has neither a list nor a source split.
        seed: Seed of the drawn splits.
        keep_first: Keep an id named in several lists in the first (train, val, test order) instead of failing.
        report: Receives ``unlisted``, ``not_in_id_list`` and ``leaks``.

    Raises:
        DatasetError: ids in two lists (without ``keep_first``), or a list that names no id of the id lists.
    """
    by_alias: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        for alias in dict.fromkeys(entry.aliases):
            by_alias[alias].append(entry.id)
    rows: list[SplitRow] = [
        (split, clip_id, where)
        for split in SPLITS
        for name, where in lists.get(split, [])
        for clip_id in by_alias.get(name, [])
    ]
    report.not_in_id_list = sorted({name for names in lists.values() for name, _ in names if name not in by_alias})
    split_of: dict[str, Split] = {}
    files = sorted({where.rsplit(" line ", 1)[0] for names in lists.values() for _, where in names})
    for split, clip_id, _ in _check_lists(rows, list(lists), keep_first, report, files):
        split_of[clip_id] = split  # type: ignore[assignment]  # one of SPLITS
    for entry in entries:
        if entry.id not in split_of:
            split = entry.source_split or "train"
            if split in lists:
                report.unlisted.append(entry.id)
            else:
                split_of[entry.id] = split
    report.unlisted.sort()
    has_source = {entry.source_split or "train" for entry in entries}
    drawn: list[Split] = [split for split in ("val", "test") if split not in lists and split not in has_source]
    fractions = {"val": val_fraction, "test": test_fraction}
    by_label: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        if split_of.get(entry.id) == "train":
            by_label[entry.label].append(entry.id)
    for label, ids in sorted(by_label.items()):
        order = sorted(ids)
        random.Random(f"{seed}/{label}").shuffle(order)
        start = 0
        for split in drawn:
            count = round(len(order) * fractions[split])
            split_of.update(dict.fromkeys(order[start : start + count], split))
            start += count
    return split_of


def _check_lists(
    rows: list[SplitRow], splits: list[Split], keep_first: bool, report: PrepareReport, files: list[str]
) -> list[SplitRow]:
    """Check the explicit lists with check.py's split check; resolve leaks with ``keep_first``, else raise."""
    if not splits:
        return rows
    where = Path(", ".join(files) or "the split lists")
    check = _split_check(rows, splits, where)
    if check.ok:
        return rows
    if keep_first:
        first: dict[str, str] = {}
        for split, clip_id, _ in rows:  # rows come in train, val, test order
            first.setdefault(clip_id, split)
            if first[clip_id] != split:
                report.leaks.setdefault(clip_id, [first[clip_id]])
                if split not in report.leaks[clip_id]:
                    report.leaks[clip_id].append(split)
        report.leaks = dict(sorted(report.leaks.items()))
        rows = [row for row in rows if first[row[1]] == row[0]]
        check = _split_check(rows, splits, where)
        if check.ok:
            return rows
    problems = "\n".join(f"  {p.message}" for p in check.errors)
    if report.not_in_id_list:
        unknown = report.not_in_id_list
        problems += (
            f"\n  {len(unknown)} listed ids are in no id list ({', '.join(unknown[:5])}{', ...' * (len(unknown) > 5)})"
        )
    fix = "" if keep_first else ", or pass keep_first=True (CLI: --keep_first true) to keep each id in its first split"
    raise DatasetError(
        f"the split lists ({where}) cannot be used; nothing was prepared:\n{problems}\n"
        f"Fix the lists{fix}. An id in two splits leaks between training and evaluation."
    )


def _split_check(rows: list[SplitRow], splits: list[Split], where: Path) -> CheckReport:
    check = CheckReport(layout="music", root=where)
    check_splits(check, rows, lambda split: where, splits=splits)
    return check


# Videos


def index_videos(folder: Path, exclude: Path | None = None) -> dict[str, list[Path]]:
    """Every video file under ``folder`` by stem (hidden folders and anything under ``exclude`` skipped)."""
    index: dict[str, list[Path]] = defaultdict(list)
    skip = exclude.resolve() if exclude is not None else None
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
        for name in sorted(files):
            path = here / name
            if path.suffix.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                index[path.stem].append(path)
    return index


def find_video(entry: Entry, index: dict[str, list[Path]]) -> Path | None:
    """The video file of an entry: the first of its names found, in its class folder if possible."""
    for name in entry.names:
        candidates = index.get(name)
        if candidates:
            return min(
                candidates,
                key=lambda p: (
                    p.parent.name not in (entry.folder, entry.label),
                    VIDEO_EXTENSIONS.index(p.suffix.lower()),
                    str(p),
                ),
            )
    return None


# The out folder


def _open_out(out: Path, settings: dict[str, Any]) -> None:
    """Create ``out`` or check that it is a tree prepared with these settings; clean leftovers of interruptions."""
    manifest = out / MANIFEST_FILE
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file, not a folder: choose another out folder.")
    if out.is_dir() and any(out.iterdir()):
        if not manifest.is_file():
            raise DatasetError(
                f"{out} is not empty and is not a prepared tree (no {MANIFEST_FILE}): prepare into a new or empty "
                "folder, or into the folder of an earlier run to resume it."
            )
        try:
            existing = json.loads(manifest.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{manifest} is unreadable ({err}): remove {out} and prepare again.") from err
        differing = [key for key in settings if existing.get(key) != settings[key]]
        if differing:
            changes = "; ".join(f"{key}: {existing.get(key)!r} there, {settings[key]!r} now" for key in differing)
            raise DatasetError(
                f"{out} was prepared with other settings ({changes}): prepare into another folder, or re-run "
                "with the same settings."
            )
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    for name in (MANIFEST_FILE, REPORT_FILE, DUET_CSV, *(f"{split}.csv" for split in SPLITS)):
        for leftover in out.glob(f".{name}.*.tmp"):  # atomic_path's staging, left by a killed run
            shutil.rmtree(leftover, ignore_errors=True)
    _write_text(manifest, json.dumps({"prepared_by": "avtoolkit data prepare", "settings": settings}, indent=1) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically, unless the file already holds it."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _csv_text(rows: Iterable[Entry], n_frames: dict[str, int]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for e in rows:
        writer.writerow([f"audio/{e.folder}/{e.id}.wav", f"frames/{e.folder}/{e.id}.mp4", n_frames[e.id], e.label])
    return buffer.getvalue()


# Clips


@dataclass(frozen=True)
class _Job:
    id: str
    video: Path
    wav: Path
    frames: Path
    stage: Path
    start: float
    seconds: float | None
    sample_rate: int
    fps: float
    short_side: int | None
    jpeg_quality: int
    min_seconds: float


Status = Literal["prepared", "reused", "missing", "corrupt", "no_video", "no_audio", "too_short"]


@dataclass(frozen=True)
class _Outcome:
    id: str
    status: Status
    n_frames: int = 0
    detail: str = ""


def _jobs(
    entries: list[Entry],
    index: dict[str, list[Path]],
    out: Path,
    settings: dict[str, Any],
    min_seconds: float,
) -> tuple[list[_Outcome], list[_Job]]:
    """The outcomes of the entries complete in ``out`` or without a video, and the decoding jobs of the others."""
    done: list[_Outcome] = []
    jobs: list[_Job] = []
    for entry in sorted(entries, key=lambda e: (e.folder, e.id)):
        wav = out / "audio" / entry.folder / f"{entry.id}.wav"
        frames = out / "frames" / entry.folder / f"{entry.id}.mp4"
        existing = _complete(wav, frames, settings["sample_rate"])
        if existing is not None:
            n_frames, n_samples = existing
            seconds = min(n_samples / settings["sample_rate"], n_frames / settings["fps"])
            short = seconds < min_seconds
            detail = f"{wav} lasts {seconds:.2f} s, below min_seconds={min_seconds:g}" if short else ""
            done.append(_Outcome(entry.id, "too_short" if short else "reused", n_frames, detail))
            continue
        video = find_video(entry, index)
        if video is None:
            names = ", ".join(f"{name}.*" for name in entry.names)
            done.append(_Outcome(entry.id, "missing", detail=f"no video file named {names} ({entry.where})"))
            continue
        jobs.append(
            _Job(
                id=entry.id,
                video=video,
                wav=wav,
                frames=frames,
                stage=out / PARTIAL_DIR / entry.folder / entry.id,
                start=entry.start,
                seconds=entry.seconds,
                min_seconds=min_seconds,
                **settings,
            )
        )
    return done, jobs


def _complete(wav: Path, frames: Path, sample_rate: int) -> tuple[int, int] | None:
    """``(n_frames, n_samples)`` of a clip whose files are all in place, else ``None``."""
    if not wav.is_file() or not (frames / "000001.jpg").is_file():
        return None
    try:
        rate, n_samples = audio_info(wav)
    except DatasetError:
        return None
    if rate != sample_rate:
        return None
    return sum(1 for name in os.listdir(frames) if name.endswith(".jpg")), n_samples


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # the pool already uses every core


def prepare_clip(job: _Job) -> _Outcome:
    """Decode one video into its clip (staged, then moved into place); problems become the outcome."""
    av = lazy_import("av", "video")
    shutil.rmtree(job.stage, ignore_errors=True)
    try:
        return _decode_clip(job)
    except DatasetError as err:
        return _Outcome(job.id, "corrupt", detail=str(err))
    except av.error.FFmpegError as err:
        return _Outcome(job.id, "corrupt", detail=f"cannot decode {job.video}: {err}. Re-download it.")
    finally:
        shutil.rmtree(job.stage, ignore_errors=True)


def _decode_clip(job: _Job) -> _Outcome:
    with open_media(job.video, "video") as container:
        if not container.streams.video:
            return _Outcome(job.id, "no_video", detail=f"{job.video} has no video stream.")
        if not container.streams.audio:
            return _Outcome(job.id, "no_audio", detail=f"{job.video} has no audio track; a clip needs its sound.")
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
        duration = container.duration / 1e6 if container.duration else None
    offset = 0.0
    if job.seconds is not None and duration is not None and duration > job.seconds + _FULL_VIDEO_SLACK_S:
        offset = job.start  # the whole YouTube video: cut the clip from it
    wave = decode_audio_track(job.video, job.sample_rate)
    first = round(offset * job.sample_rate)
    wave = wave[first : None if job.seconds is None else first + round(job.seconds * job.sample_rate)]
    if wave.shape[0] / job.sample_rate < job.min_seconds:
        return _too_short(job, wave.shape[0] / job.sample_rate, "audio", offset)
    frames = job.stage / "frames"
    frames.mkdir(parents=True)
    first = round(offset * job.fps)
    last = None if job.seconds is None else first + round(job.seconds * job.fps)
    n_frames = 0
    for n_frames, image in enumerate(
        islice(decode_video(job.video, job.fps, _frame_size(height, width, job.short_side)), first, last), start=1
    ):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(frames / f"{n_frames:06d}.jpg", quality=job.jpeg_quality)
    if n_frames / job.fps < job.min_seconds:
        return _too_short(job, n_frames / job.fps, "video", offset)
    sf.write(job.stage / "audio.wav", wave.clamp(-1, 1).numpy(), job.sample_rate, subtype="PCM_16")
    # Into place: the wav last, so that a clip with a wav is complete.
    job.wav.unlink(missing_ok=True)
    if job.frames.exists():
        shutil.rmtree(job.frames)
    job.frames.parent.mkdir(parents=True, exist_ok=True)
    job.wav.parent.mkdir(parents=True, exist_ok=True)
    os.replace(frames, job.frames)
    os.replace(job.stage / "audio.wav", job.wav)
    return _Outcome(job.id, "prepared", n_frames)


def _too_short(job: _Job, seconds: float, what: str, offset: float) -> _Outcome:
    cut = f" from {offset:g} s" if offset else ""
    return _Outcome(
        job.id,
        "too_short",
        detail=f"the {what} of {job.video}{cut} lasts {seconds:.2f} s, below min_seconds={job.min_seconds:g}",
    )


def _frame_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    """Output (H, W) with the short side ``short_side`` (aspect kept), or ``None`` to keep the size."""
    if short_side is None or not height or not width or min(height, width) <= short_side:
        return None
    scale = short_side / min(height, width)
    return max(round(height * scale), 1), max(round(width * scale), 1)


def _check_arguments(
    val_fraction: float,
    test_fraction: float,
    sample_rate: int,
    fps: float,
    short_side: int | None,
    min_seconds: float,
    jpeg_quality: int,
) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    if sample_rate <= 0 or fps <= 0 or min_seconds < 0:
        raise ConfigError(
            f"sample_rate and fps must be positive and min_seconds not negative, got {sample_rate}, "
            f"{fps}, {min_seconds}"
        )
    if short_side is not None and short_side <= 0:
        raise ConfigError(f"short_side must be positive or None, got {short_side}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
