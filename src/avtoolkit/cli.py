"""The ``avtoolkit`` command.

``avtoolkit fit|validate|test|predict --config ...`` is a thin :class:`~lightning.pytorch.cli.LightningCLI`
over the toolkit's tasks and datamodules (:mod:`avtoolkit.training_cli`); ``avtoolkit data ...`` holds the dataset
commands (generate the built-in synthetic datasets, prepare MUSIC/VGGSound from downloaded videos, check a dataset
tree, fill an experiment's feature caches); ``avtoolkit pretrain vggish|backbone`` pre-trains the audio encoder or
an image backbone; ``avtoolkit list models|configs`` lists the networks and the experiment configs.

This module imports neither torch nor Lightning: ``avtoolkit --help``, ``avtoolkit data --help`` and the other
light commands start at once, and each command imports what it needs when it runs.

Errors. :func:`main` prints the errors a user can fix as one ``error: ...`` message on stderr, without a traceback,
and exits with status 2. They are exactly:

- :class:`avtoolkit.errors.UserError` (``DatasetError``, ``ConfigError``), raised anywhere: bad or missing data,
  options, configs, weights or checkpoints, each message saying what, where and how to fix it;
- the command line and config errors of the argument parsers (an unknown option or key gets the closest valid one);
- :class:`avtoolkit.utils.imports.MissingDependencyError`: an optional package to install;
- ``PermissionError`` and a full disk (``ENOSPC``, ``EDQUOT``): the system refuses a write the user asked for.

Every other exception is a bug and keeps its traceback (``FileNotFoundError`` and ``ValueError`` included: the
toolkit raises a ``UserError`` for a path or value the user gave). ``--debug`` anywhere on the command line, or
``AVTOOLKIT_DEBUG=1``, shows the traceback of user errors too. Ctrl-C prints one line and exits with status 130.
"""

import argparse
import difflib
import errno
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from avtoolkit import __version__
from avtoolkit.errors import ConfigError, UserError
from avtoolkit.utils.imports import MissingDependencyError

if TYPE_CHECKING:
    from avtoolkit.training_cli import AVToolkitCLI

DESCRIPTION = (
    "avtoolkit: audio-visual segmentation and source separation on PyTorch Lightning. "
    "Train/evaluate with `avtoolkit fit|validate|test|predict --config configs/experiment/NAME.yaml`; "
    "dataset commands: `avtoolkit data --help`; encoder pre-training: `avtoolkit pretrain --help`; "
    "the networks and configs: `avtoolkit list models|configs`; all commands: `avtoolkit --help`."
)

TRAINING_COMMANDS = {
    "fit": "Train: avtoolkit fit --config configs/experiment/NAME.yaml",
    "validate": "Evaluate a checkpoint on the validation split (--ckpt_path FILE)",
    "test": "Evaluate a checkpoint on the test split and write the report (--ckpt_path FILE)",
    "predict": "Predict masks or separated sources with a checkpoint (--ckpt_path FILE)",
}

DEBUG_ENV = "AVTOOLKIT_DEBUG"
"""Set to 1 to show the traceback of every error (as ``--debug`` does)."""


def synth(
    layout: Literal["music", "s4", "ms3", "avss"],
    root: Path,
    size: Literal["tiny", "small"] = "small",
    seed: int = 0,
    soundfont: Path | None = None,
    emoji_font: Path | None = None,
    clipart_dir: Path | None = None,
    workers: int | None = None,
    picture_families: list[Literal["noto", "twemoji", "openmoji", "openclipart", "drawn"]] | None = None,
    sound_families: list[Literal["fluidr3", "timgm6mb", "opl3"]] | None = None,
    holdout: bool = False,
    holdout_pictures: Literal["noto", "twemoji", "openmoji", "openclipart", "drawn"] = "openclipart",
    holdout_sounds: Literal["fluidr3", "timgm6mb", "opl3"] = "timgm6mb",
) -> None:
    """Generate a built-in synthetic dataset (real instrument sounds and pictures) in an official layout.

    Args:
        layout: music (MUSIC-style separation layout), s4, ms3 or avss (AVSBench layouts).
        root: Folder to write (created atomically; re-running with the same arguments does nothing).
        size: tiny (tests, seconds) or small (quick start, minutes).
        seed: Seed; the same arguments give the same files.
        soundfont: General MIDI .sf2/.sf3 (default: the one Debian's fluidr3mono-gm-soundfont installs).
        emoji_font: Noto Color Emoji font file (default: Debian's fonts-noto-color-emoji).
        clipart_dir: Folder of openclipart SVGs (default: Debian's openclipart-svg).
        workers: Processes to use (default: one for tiny, all cores for small).
        picture_families: Picture families to draw from (default: all; twemoji and openmoji come from PyPI,
            the others from Debian or avtoolkit itself).
        sound_families: Soundfont families to play with (default: all; Debian packages fluidr3mono-gm-soundfont,
            timgm6mb-soundfont, opl3-soundfont).
        holdout: Held-out-family protocol: keep --holdout_pictures and --holdout_sounds out of train/val and add
            as many held-out test clips as in-family ones (marked "held_out" in manifest.json).
        holdout_pictures: The held-out picture family (with --holdout).
        holdout_sounds: The held-out sound family (with --holdout).
    """
    from avtoolkit.data.synth import Holdout, generate

    path = generate(
        layout,
        root,
        size,
        seed,
        soundfont,
        emoji_font,
        clipart_dir,
        workers,
        picture_families=list(picture_families) if picture_families else None,
        sound_families=list(sound_families) if sound_families else None,
        holdout=Holdout(holdout_pictures, holdout_sounds) if holdout else None,
    )
    print(f"{layout} dataset ready at {path}")


def prepare(
    videos: Path,
    id_list: Path,
    out: Path,
    extra_lists: list[Path] | None = None,
    format: Literal["music", "vggsound"] | None = None,
    train_ids: Path | None = None,
    val_ids: Path | None = None,
    test_ids: Path | None = None,
    keep_first: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    duets: Literal["separate", "skip"] = "separate",
    sample_rate: int = 11025,
    fps: float = 8.0,
    short_side: int | None = 256,
    min_seconds: float = 6.0,
    jpeg_quality: int = 90,
    workers: int | None = None,
    progress: bool = True,
) -> None:
    """Prepare MUSIC / MUSIC-21 / VGGSound from downloaded videos and a published id list, and print a report.

    Writes {out}/audio, {out}/frames, {out}/{train,val,test}.csv (and duet.csv for MUSIC duets) and
    {out}/prepare_report.txt. Re-running resumes: complete clips are not decoded again. Exit status 0 when the
    tree is usable (videos that could not be prepared are listed, not fatal); 1 when nothing could be prepared
    or the tree fails `avtoolkit data check` (e.g. an empty split); 2 on a malformed id or split list, an id in
    two split lists (without --keep_first), or an out folder that is not a tree prepared with these settings.

    Args:
        videos: Folder of the downloaded videos, searched recursively: MUSIC {youtube_id}.mp4/.mkv/.webm;
            VGGSound {youtube_id}_{start:06d}.*, {youtube_id}_{start}.* or {youtube_id}.* (a whole video).
        id_list: Published id list: MUSIC/MUSIC-21 JSON ({"videos": {class: [id, ...]}}) or vggsound.csv.
        out: Folder of the prepared tree (created; the folder of an earlier run is resumed).
        extra_lists: More id lists of the same format, merged with id_list (e.g. MUSIC_duet_videos.json).
        format: music or vggsound (default: from the suffix, .json or .csv).
        train_ids: Explicit train ids: one id per line, or a CSV whose first column is an id or a path
            (CLIPSep's lists, a prepared train.csv). With any explicit list, the rest of the id list keeps its
            own split (VGGSound) or train (MUSIC), unless that split has a list.
        val_ids: Explicit val ids (same formats); without it val is drawn from train.
        test_ids: Explicit test ids (same formats); without it MUSIC test is drawn from train.
        keep_first: Keep an id named in several split lists in the first (train, val, test) instead of failing.
        val_fraction: Fraction of each class's train ids drawn for val.
        test_fraction: Fraction of each class's train ids drawn for test (MUSIC without test_ids).
        seed: Seed of the drawn splits.
        duets: separate (MUSIC duets into duet.csv, never train/val/test) or skip.
        sample_rate: Audio rate of the wavs (Hz).
        fps: Frame rate of the extracted frames.
        short_side: Resize frames to this short side in pixels (never enlarged); null keeps the video's size.
        min_seconds: Leave out clips shorter than this (the default training window needs 5.94 s).
        jpeg_quality: JPEG quality of the frames (1-100).
        workers: Processes decoding videos (default: all cores).
        progress: Show a progress bar.
    """
    from avtoolkit.data.prepare import prepare_separation

    report = prepare_separation(  # a DatasetError (malformed list, leak, foreign out folder) exits 2 in main()
        videos,
        [id_list, *(extra_lists or [])],
        out,
        format=format,
        train_ids=train_ids,
        val_ids=val_ids,
        test_ids=test_ids,
        keep_first=keep_first,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        duets=duets,
        sample_rate=sample_rate,
        fps=fps,
        short_side=short_side,
        min_seconds=min_seconds,
        jpeg_quality=jpeg_quality,
        workers=workers,
        progress=progress,
    )
    print(report.format())
    if not report.ok:
        raise SystemExit(1)


def check(
    layout: Literal["music", "s4", "ms3", "avss"], root: Path, sample_rate: int = 11025, fps: float = 8.0
) -> None:
    """Check a dataset tree against its layout and print a report; exit status 1 if it has errors.

    Args:
        layout: music (MUSIC-style prepared layout), s4, ms3 or avss (AVSBench layouts).
        root: Dataset root.
        sample_rate: Music layout: the rate every wav must have (AVSBench audio is always 16 kHz).
        fps: Music layout: the frame rate of the frame folders.
    """
    from avtoolkit.data.check import check_tree

    report = check_tree(root, layout, sample_rate, fps)
    print(report.format())
    if not report.ok:
        raise SystemExit(1)


def features(
    experiment: Path,
    overlay: Path | None = None,
    vggish_weights: Path | None = None,
    vggish_width: float = 1.0,
    device: str | None = None,
) -> None:
    """Fill the feature caches an experiment's datamodule reads, once, ahead of training (e.g. of a multi-GPU job).

    Only the datamodule of the config's data section is built, and exactly the caches it reads are filled, with the
    keys its prepare_data uses (segmentation: the log-mel of every clip, with data.init_args.cache_dir set;
    separation: the embeddings of its frozen encoders). Re-running computes only what is missing.

    Args:
        experiment: The experiment config you train with (the FILE of `avtoolkit fit --config FILE`, given here
            without --config), e.g. configs/experiment/favs_s4_224.yaml.
        overlay: A second config whose data section overrides the experiment's, as a second `fit --config` does.
        vggish_weights: VGGish state dict (segmentation): also cache its embeddings of the log-mel, for analyses.
        vggish_width: Channel multiplier the VGGish weights were saved at.
        device: Where features are computed (default: cuda when available, else cpu).
    """
    from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
    from avtoolkit.data.precompute import compute_features, datamodule_from_config

    configs = [experiment] if overlay is None else [experiment, overlay]
    names = ", ".join(str(config) for config in configs)
    try:
        datamodule = datamodule_from_config(configs)
        if not isinstance(datamodule, SegmentationDataModule | SeparationDataModule):
            raise ValueError(f"{names}: its {type(datamodule).__name__} has no feature caches")
        encoder = None
        if vggish_weights is not None:
            from avtoolkit.models.encoders.vggish import VGGish

            encoder = VGGish(str(vggish_weights), vggish_width, freeze=True)
    except (ValueError, FileNotFoundError) as err:  # the config files' and the weights' problems
        raise ConfigError(str(err)) from err
    try:
        summary = compute_features(datamodule, vggish=encoder, device=device)
    except ValueError as err:  # no cache configured, or a tree that does not match its layout
        raise ConfigError(f"{names}: {err}") from err
    print(summary.format())


def vggish(
    root: Path,
    out: Path,
    width: float = 1.0,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
) -> None:
    """Pre-train VGGish to name the sound categories of an S4-layout tree's training clips (no AudioSet here).

    Writes a state dict for the segmentation models' ``audio_weights`` (at the same ``audio_width``).

    Args:
        root: S4-layout dataset root, e.g. data/synthetic/s4.
        out: State-dict file to write.
        width: VGGish channel multiplier (the ``audio_width`` of the model that will load it).
        steps: Optimiser steps.
        batch_size: Clips per step.
        lr: Learning rate.
        seed: Seed.
    """
    from avtoolkit.pretraining import pretrain_vggish

    result = pretrain_vggish(root, out, width, steps, batch_size, lr, seed)
    held_out = "" if result.held_out_accuracy is None else f"; held-out sound family {result.held_out_accuracy:.3f}"
    print(
        f"VGGish (width {width}) written to {result.path}: {result.n_categories} categories, "
        f"validation accuracy {result.val_accuracy:.3f}{held_out} after {result.steps} steps"
    )


def backbone(
    out: Path,
    backbone: str = "resnet18",
    image_size: int = 64,
    images: int = 4000,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    workers: int | None = None,
    held_out_pictures: str | None = None,
    generic_pictures: float = 0.0,
    restyle: float = 0.0,
) -> None:
    """Pre-train an image backbone to name the objects of fresh synthetic pictures (the stand-in for ImageNet).

    Writes a timm state dict for a model's ``backbone_weights`` or a frame encoder's ``weights`` (same backbone and
    image size): every quick start of both tasks starts from it.

    Args:
        out: State-dict file to write.
        backbone: timm model name.
        image_size: Picture side in pixels (the experiment's ``image_size``).
        images: Training pictures rendered (a tenth as many more for validation).
        steps: Optimiser steps.
        batch_size: Pictures per step.
        lr: Peak learning rate.
        seed: Seed.
        workers: Processes rendering the pictures (default: every core).
        held_out_pictures: The held-out picture family of a `data synth ... --holdout true` dataset: never trained
            on, and the accuracy is also reported on pictures drawn only by it.
        generic_pictures: Share of the training objects that are generic emoji (about 900 other things).
        restyle: Share of the training objects drawn in another style (grayscale, silhouette, outline).
    """
    from avtoolkit.pretraining import PICTURE_NAMES, pretrain_backbone

    result = pretrain_backbone(
        out,
        backbone,
        image_size,
        images,
        steps,
        batch_size,
        lr,
        seed,
        workers,
        held_out_pictures=held_out_pictures,
        generic_pictures=generic_pictures,
        restyle=restyle,
    )
    held_out = (
        ""
        if result.held_out_accuracy is None
        else (f"; on the held-out family {held_out_pictures}: {result.held_out_accuracy:.3f}")
    )
    print(
        f"{backbone} ({image_size} px) written to {result.path}: {result.n_categories} object classes, "
        f"validation accuracy (a picture's object named among the datasets' {len(PICTURE_NAMES)}) "
        f"{result.val_accuracy:.3f}{held_out} after {result.steps} steps"
    )


# -- discovery ------------------------------------------------------------------------------------------------


def network_classes() -> dict[str, type]:
    """Every network a task can take, by class name: the SegmentationModel and SeparationModel subclasses.

    Imports every module of :mod:`avtoolkit.models.segmentation` and :mod:`avtoolkit.models.separation` (so that
    the argument parsers also know them by their short names).
    """
    import importlib
    import pkgutil

    from avtoolkit.models import segmentation, separation
    from avtoolkit.models.segmentation.base import SegmentationModel
    from avtoolkit.models.separation.base import SeparationModel

    for package in (segmentation, separation):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    found: dict[str, type] = {}
    pending: list[type] = [SegmentationModel, SeparationModel]
    while pending:
        subclass: type
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            module = subclass.__module__
            if module.startswith("avtoolkit.models.") and not module.endswith(".base"):
                found.setdefault(subclass.__name__, subclass)
    return dict(sorted(found.items()))


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0].strip()


def _one_line(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def models() -> None:
    """List the networks (the model of a segmentation or separation task), one line each."""
    from avtoolkit.models.segmentation.base import SegmentationModel

    networks = network_classes()
    width = max(len(name) for name in networks) + 2
    groups = {
        "Segmentation networks (model.init_args.model of avtoolkit.tasks.segmentation.AVSegmentationTask):": [
            name for name, cls in networks.items() if issubclass(cls, SegmentationModel)
        ],
        "Separation networks (model.init_args.model of avtoolkit.tasks.separation.AVSeparationTask):": [
            name for name, cls in networks.items() if not issubclass(cls, SegmentationModel)
        ],
    }
    for title, names in groups.items():
        print(title)
        for name in names:
            print(f"  {name:<{width}}{_one_line(_first_line(networks[name].__doc__), 116 - width)}")
    print("Options of one: avtoolkit fit --model.help NAME")


def config_description(path: Path) -> str:
    """The first sentence of a config's leading comment block (a config's description)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text:
            break
        lines.append(text)
    header = " ".join(lines)
    end = re.search(r"[.!?](\s|$)", header)
    return header[: end.start() + 1] if end else header


def configs(folder: Path | None = None) -> None:
    """List the experiment configs (`avtoolkit fit --config FILE`), one line each: name and description.

    Args:
        folder: Folder of the configs (default: configs/experiment under the current directory; the configs ship
            with the source checkout, not with an installed package).
    """
    if folder is None:
        folder = Path("configs") / "experiment"
        checkout = Path(__file__).resolve().parents[2] / "configs" / "experiment"
        if not folder.is_dir() and checkout.is_dir():
            print(f"(no configs/experiment in {Path.cwd()}: listing the source checkout's, {checkout})")
            folder = checkout
    if not folder.is_dir():
        raise ConfigError(
            f"no experiment configs in {folder}: they ship with the source checkout (its configs/experiment), not "
            "with the installed package. Run this from the checkout, or pass --folder"
        )
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"{folder} holds no .yaml config")
    width = max(len(path.stem) for path in paths) + 2
    for path in paths:
        print(f"{path.stem:<{width}}{_one_line(config_description(path), 118 - width)}")
    print(f"Train with one: avtoolkit fit --config {folder}/NAME.yaml")


# -- the training CLI -----------------------------------------------------------------------------------------


def lightning_cli(args: list[str] | None = None, run: bool = True) -> "AVToolkitCLI":
    """The training CLI: parse ``args`` (default: the command line), instantiate, and run the subcommand.

    With ``run=False`` the arguments are parsed and the trainer, task and datamodule built, without a
    subcommand (handy in notebooks and tests). See :func:`avtoolkit.training_cli.lightning_cli`.
    """
    from avtoolkit.training_cli import lightning_cli as build

    return build(args, run)


def __getattr__(name: str) -> Any:
    """``AVToolkitCLI`` and ``LoggerSaveConfigCallback`` live in :mod:`avtoolkit.training_cli` (imports Lightning)."""
    if name in ("AVToolkitCLI", "LoggerSaveConfigCallback"):
        from avtoolkit import training_cli

        return getattr(training_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- errors ---------------------------------------------------------------------------------------------------


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...] | set[str] | dict[str, Any]) -> str:
    """`` did you mean X?`` (the closest candidates), or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=2, cutoff=0.6)
    return f" did you mean {' or '.join(close)}?" if close else ""


_WORKER = re.compile(r"Caught \w+ in DataLoader worker process (\d+)\.\nOriginal Traceback")


def user_error_message(error: BaseException) -> str | None:
    """The ``error: ...`` message of an error the user can fix (see the module doc), ``None`` for a bug."""
    if isinstance(error, UserError | MissingDependencyError):
        text = str(error)
    elif isinstance(error, argparse.ArgumentError):
        text = clean_parser_message(str(error))
    elif isinstance(error, PermissionError) or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    ):
        where = f": {error.filename}" if error.filename else ""
        text = f"{error.strerror or error}{where}"
    else:
        return None
    # An error raised in a DataLoader worker comes back with the worker's traceback in its message: keep the
    # message of the error itself (the last line naming its type; chained causes come before it).
    worker = _WORKER.match(text)
    if worker:
        name = re.escape(type(error).__name__)
        last = [*re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, re.M)][-1:]
        if last:
            text = text[last[0].end() :].strip() + f" (in DataLoader worker process {worker.group(1)})"
    return "error: " + text.strip()


def clean_parser_message(message: str) -> str:
    """A jsonargparse message without its noise: the Union bookkeeping, and given values cut to one short line."""
    kept = []
    for line in message.splitlines():
        stripped = line.strip()
        if stripped.startswith(("Subtypes:", "Given value type:", "- Expected a <class 'NoneType'>")):
            continue
        if stripped.startswith("Given value:") and len(line) > 160:
            line = line[:157] + "..."
        kept.append(line)
    return "\n".join(kept)


def _parse_error(
    error: argparse.ArgumentError, command: str, options: dict[str, Callable[..., Any]], argv: list[str]
) -> ConfigError:
    """A command's parse error with the closest valid subcommand or option, and where to find the options."""
    message = str(error)
    choice = re.match(r"argument subcommand: invalid choice: '([^']*)'", message)
    if choice:
        hint = did_you_mean(choice.group(1), options)
        return ConfigError(
            f"unknown command `{command} {choice.group(1)}`;{hint or ''} the commands: {', '.join(options)}"
            f" (avtoolkit {command} --help)"
        )
    chosen = next((name for name in argv if name in options), None)
    unknown = re.match(r"unrecognized arguments: (--[\w.-]+)", message)
    help_command = f"avtoolkit {command}" + (f" {chosen}" if chosen else "")
    if unknown:
        parameters = []
        for function in [options[chosen]] if chosen else list(options.values()):
            parameters += [f"--{name}" for name in inspect.signature(function).parameters]
        return ConfigError(
            f"unknown option {unknown.group(1)}:{did_you_mean(unknown.group(1), parameters) or ''} "
            f"(the options: {help_command} --help)"
        )
    return ConfigError(f"{clean_parser_message(message)}\n(the options: {help_command} --help)")


# -- main -----------------------------------------------------------------------------------------------------


def _help() -> str:
    def rows(pairs: dict[str, str]) -> list[str]:
        return [f"  {name:<20}{text}" for name, text in pairs.items()]

    data = {
        "data synth": "Generate a built-in synthetic dataset (music, s4, ms3, avss layouts)",
        "data prepare": "Prepare MUSIC / MUSIC-21 / VGGSound from downloaded videos and an id list",
        "data check": "Check a dataset tree against its layout",
        "data features": "Fill an experiment's feature caches ahead of training",
    }
    pretrain = {
        "pretrain vggish": "Pre-train VGGish on an S4-layout tree (a model's audio_weights)",
        "pretrain backbone": "Pre-train an image backbone on synthetic pictures (a model's backbone_weights)",
    }
    evaluation = {
        "robustness": "Evaluate checkpoints under negative audio, noise, corrupted frames and absent sources",
    }
    listing = {
        "list models": "The networks, one line each (their options: avtoolkit fit --model.help NAME)",
        "list configs": "The experiment configs, one line each",
    }
    lines = [
        "usage: avtoolkit COMMAND [options]        (avtoolkit COMMAND --help: the options of a command)",
        "",
        "avtoolkit: audio-visual segmentation and source separation on PyTorch Lightning.",
        "",
        "Training and evaluation (a config of `avtoolkit list configs`; the options: avtoolkit fit --help):",
        *rows(TRAINING_COMMANDS),
        "",
        "Datasets (avtoolkit data --help):",
        *rows(data),
        "",
        "Encoder pre-training (avtoolkit pretrain --help):",
        *rows(pretrain),
        "",
        "Robustness (avtoolkit robustness --help):",
        *rows(evaluation),
        "",
        "Discovery:",
        *rows(listing),
        "",
        "Options:",
        *rows(
            {
                "-h, --help": "Show this help and exit",
                "--version": "Show the version and exit",
                "--debug": f"Show the traceback of an error (or set {DEBUG_ENV}=1)",
            }
        ),
        "",
        "An error you can fix (option, config, file, data, weights, checkpoint) prints one `error:` message and",
        "exits with status 2; Ctrl-C exits with 130.",
    ]
    return "\n".join(lines)


def robustness(
    experiment: Path | list[Path] | None = None,
    ckpt_path: Path | list[Path] | None = None,
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    out: Path | None = None,
    seed: int = 0,
    backend: Literal["fast", "mir_eval"] = "fast",
    limit_batches: int | None = None,
    device: str | None = None,
) -> None:
    """Evaluate checkpoints on their test split, clean and under each corruption, and write a report with figures.

    Segmentation: negative audio (silence, noise at the clip's loudness, an off-screen sound; scored by FPR, the
    fraction of pixels predicted as foreground), audio noise at 20/10/0 dB SNR, corrupted frames (noise, blur,
    occlusion, black frames) at three severities. Separation: an absent-source query (its estimate's energy relative
    to the mixture), a noisy mixture, corrupted or blank query pictures, two queries of one class; DGFNet's gate σ.
    Writes report.md, metrics.json and one figure per corruption into reports/<experiment>/robustness.

    Args:
        experiment: The experiment config the checkpoints were trained with, or one config per checkpoint
            (required).
        ckpt_path: The checkpoint to evaluate, or a list of them (one comparison table; required).
        corruptions: Which corruptions to run (default: all of the task's; the report lists their names).
        severities: Severities from 0 (clean: reproduces the clean metrics) to 3 (default: 1 2 3).
        out: Report folder (default: reports/<experiment name>/robustness); replaced atomically.
        seed: Seed of the corruptions and of the donor clips.
        backend: BSS Eval implementation for separation: fast (within 0.01 dB of mir_eval) or mir_eval.
        limit_batches: Evaluate only the first N test batches (a quick look).
        device: Where the models run (default: cuda when available, else cpu).
    """
    if experiment is None or ckpt_path is None:
        missing = " and ".join(f"--{n}" for n, v in (("experiment", experiment), ("ckpt_path", ckpt_path)) if v is None)
        raise ConfigError(
            f"avtoolkit robustness needs {missing}: e.g. avtoolkit robustness --experiment "
            "configs/experiment/quickstart_sop.yaml --ckpt_path runs/quickstart_sop/checkpoints/best.ckpt"
        )
    from avtoolkit.robustness import run_robustness

    folder = run_robustness(experiment, ckpt_path, corruptions, severities, out, seed, backend, limit_batches, device)
    print(f"Report: {folder / 'report.md'}")


DATA_COMMANDS: list[Callable[..., None]] = [synth, prepare, check, features]
PRETRAIN_COMMANDS: dict[str, Callable[..., None]] = {"vggish": vggish, "backbone": backbone}
LIST_COMMANDS: list[Callable[..., None]] = [models, configs]


def _auto_cli(
    command: str, functions: dict[str, Callable[..., None]], description: str, argv: list[str], single: bool = False
) -> None:
    """Run ``functions`` as ``avtoolkit COMMAND SUBCOMMAND`` (or, with ``single``, its one function as ``COMMAND``)."""
    from jsonargparse import auto_cli

    components: Any = next(iter(functions.values())) if single else functions
    try:
        auto_cli(
            components,
            args=argv,
            description=description,
            version=__version__,
            prog=f"avtoolkit {command}",
            exit_on_error=False,
        )
    except argparse.ArgumentError as err:
        raise _parse_error(err, command, functions, argv) from err


def _run(argv: list[str]) -> None:
    command = argv[0] if argv else ""
    if command in ("-h", "--help"):
        print(_help())
        raise SystemExit(0)
    if command == "--version":
        print(f"avtoolkit {__version__}")
        raise SystemExit(0)
    if not command:
        print(_help())
        raise SystemExit(2)
    if command == "data":
        functions = {f.__name__: f for f in DATA_COMMANDS}
        _auto_cli(command, functions, "avtoolkit dataset commands", argv[1:])
    elif command == "pretrain":
        _auto_cli(command, PRETRAIN_COMMANDS, "avtoolkit encoder pre-training", argv[1:])
    elif command == "list":
        functions = {f.__name__: f for f in LIST_COMMANDS}
        _auto_cli(command, functions, "list the networks and the experiment configs", argv[1:])
    elif command == "robustness":
        _auto_cli(command, {"robustness": robustness}, "avtoolkit robustness suite", argv[1:], single=True)
    elif command in TRAINING_COMMANDS or command.startswith("-"):
        lightning_cli(argv)
    else:
        commands = [*TRAINING_COMMANDS, "data", "pretrain", "robustness", "list"]
        raise ConfigError(
            f"unknown command {command!r}:{did_you_mean(command, commands) or ''} the commands: {', '.join(commands)} "
            "(avtoolkit --help)"
        )


def debug_requested(argv: list[str]) -> bool:
    """Whether the traceback of user errors is wanted: ``--debug`` in ``argv`` (removed from it) or the env var."""
    flag = "--debug" in argv
    while "--debug" in argv:
        argv.remove("--debug")
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def main(args: list[str] | None = None) -> None:
    """Run the ``avtoolkit`` command with ``args`` (default: ``sys.argv[1:]``); see the module doc for errors."""
    argv = sys.argv[1:] if args is None else list(args)
    debug = debug_requested(argv)
    try:
        _run(argv)
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        detail = str(interrupt)
        print(f"interrupted{': ' + detail if detail else ''}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        message = user_error_message(err)
        if message is None or debug:
            raise
        sys.stdout.flush()
        print(message, file=sys.stderr)
        raise SystemExit(2) from None
