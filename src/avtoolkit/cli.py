"""The ``avtoolkit`` command.

``avtoolkit fit|validate|test|predict --config ...`` is a thin :class:`~lightning.pytorch.cli.LightningCLI`
over the toolkit's tasks and datamodules; ``avtoolkit data ...`` holds the dataset commands (generate the
built-in synthetic datasets, prepare MUSIC/VGGSound from downloaded videos, check a dataset tree, fill an
experiment's feature caches);
``avtoolkit pretrain vggish|backbone`` pre-trains the audio encoder or an image backbone.
"""

import sys
from pathlib import Path
from typing import Literal

import yaml
from jsonargparse import auto_cli
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from avtoolkit import __version__
from avtoolkit.data.datamodules import BaseAVDataModule
from avtoolkit.tasks.base import BaseAVTask

DESCRIPTION = (
    "avtoolkit: audio-visual segmentation and source separation on PyTorch Lightning. "
    "Train/evaluate with `avtoolkit fit|validate|test|predict --config configs/experiment/NAME.yaml`; "
    "dataset commands: `avtoolkit data --help`; encoder pre-training: `avtoolkit pretrain --help`."
)


class AVToolkitCLI(LightningCLI):
    """LightningCLI with the toolkit's task and datamodule base classes (any subclass via ``class_path``)."""


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save the parsed config next to the logs, and give it to every attached logger.

    Each logger receives the whole config (a plain dict) as the ``config`` hyperparameter through its own
    ``log_hyperparams``: W&B shows it in the run's config, TensorBoard in its hparams, CSV writes it to
    ``hparams.yaml``. (A separate key: the task's own hyperparameters, logged by Lightning, also have a ``model``.)
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Send the parsed config to the loggers (called on rank zero only)."""
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def synth(
    layout: Literal["music", "s4", "ms3", "avss"],
    root: Path,
    size: Literal["tiny", "small"] = "small",
    seed: int = 0,
    soundfont: Path | None = None,
    emoji_font: Path | None = None,
    clipart_dir: Path | None = None,
    workers: int | None = None,
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
    """
    from avtoolkit.data.synth import generate

    path = generate(layout, root, size, seed, soundfont, emoji_font, clipart_dir, workers)
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
    from avtoolkit.data.errors import DatasetError
    from avtoolkit.data.prepare import prepare_separation

    try:
        report = prepare_separation(
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
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
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
    except (ValueError, FileNotFoundError) as err:  # DatasetError is a ValueError
        raise SystemExit(f"error: {err}") from err
    try:
        summary = compute_features(datamodule, vggish=encoder, device=device)
    except ValueError as err:  # no cache configured, or a tree that does not match its layout
        raise SystemExit(f"error: {names}: {err}") from err
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
    print(
        f"VGGish (width {width}) written to {result.path}: {result.n_categories} categories, "
        f"validation accuracy {result.val_accuracy:.3f} after {result.steps} steps"
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
) -> None:
    """Pre-train an image backbone to name the objects of fresh synthetic pictures (no ImageNet here).

    Writes a timm state dict for the segmentation models' ``backbone_weights`` (same backbone and image size).

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
    """
    from avtoolkit.pretraining import pretrain_backbone

    result = pretrain_backbone(out, backbone, image_size, images, steps, batch_size, lr, seed, workers)
    print(
        f"{backbone} ({image_size} px) written to {result.path}: {result.n_categories} object classes, "
        f"validation accuracy (every object named, no other) {result.val_accuracy:.3f} after {result.steps} steps"
    )


def lightning_cli(args: list[str] | None = None, run: bool = True) -> AVToolkitCLI:
    """The training CLI: parse ``args`` (default: the command line), instantiate, and run the subcommand.

    With ``run=False`` the arguments are parsed and the trainer, task and datamodule built, without a
    subcommand (handy in notebooks and tests).
    """
    return AVToolkitCLI(
        BaseAVTask,
        BaseAVDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION, "version": __version__},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run the ``avtoolkit`` command with ``args`` (default: ``sys.argv[1:]``)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["data"]:
        auto_cli(
            [synth, prepare, check, features],
            args=argv[1:],
            description="avtoolkit dataset commands",
            version=__version__,
        )
        return
    if argv[:1] == ["pretrain"]:
        auto_cli(
            {"vggish": vggish, "backbone": backbone},
            args=argv[1:],
            description="avtoolkit encoder pre-training",
            version=__version__,
        )
        return
    lightning_cli(args)
