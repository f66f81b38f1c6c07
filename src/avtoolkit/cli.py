"""The ``avtoolkit`` command.

``avtoolkit fit|validate|test|predict --config ...`` is a thin :class:`~lightning.pytorch.cli.LightningCLI`
over the toolkit's tasks and datamodules; ``avtoolkit data ...`` holds the dataset commands (generate the
built-in synthetic datasets, check a dataset tree), ``avtoolkit pretrain vggish`` pre-trains the audio encoder.
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
        workers: Processes to use (default: all cores).
    """
    from avtoolkit.data.synth import generate

    path = generate(layout, root, size, seed, soundfont, emoji_font, clipart_dir, workers)
    print(f"{layout} dataset ready at {path}")


def check(layout: Literal["music", "s4", "ms3", "avss"], root: Path) -> None:
    """Check a dataset tree against its layout and print a report; exit status 1 if it has errors.

    Args:
        layout: music (MUSIC-style prepared layout), s4, ms3 or avss (AVSBench layouts).
        root: Dataset root.
    """
    from avtoolkit.data.check import check_tree

    report = check_tree(root, layout)
    print(report.format())
    if not report.ok:
        raise SystemExit(1)


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
        auto_cli([synth, check], args=argv[1:], description="avtoolkit dataset commands", version=__version__)
        return
    if argv[:1] == ["pretrain"]:
        auto_cli({"vggish": vggish}, args=argv[1:], description="avtoolkit encoder pre-training", version=__version__)
        return
    lightning_cli(args)
