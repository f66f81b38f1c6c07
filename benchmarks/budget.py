"""Shared by the benchmarks: the quick starts' data, and a quick-start config trained for a wall-clock budget."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule

from avtoolkit.cli import lightning_cli
from avtoolkit.data.synth import Holdout, Layout, generate
from avtoolkit.pretraining import pretrain_backbone, pretrain_vggish

CONFIGS = Path(__file__).parents[1] / "configs" / "experiment"
SYNTHETIC = Path("data/synthetic")
AUDIO_WEIGHTS = Path("data/weights/vggish_s4_w025.pt")  # the segmentation quick starts' audio_weights
BACKBONE_WEIGHTS = Path("data/weights/resnet18_synth_64.pt")  # every quick start's backbone weights
HOLDOUT = Holdout()  # the held-out families of the quick starts' data (`data synth ... --holdout true`)


def quickstart_data(layout: Layout) -> Path:
    """The small synthetic tree of ``layout`` under the held-out-family protocol, and the pre-trained encoders.

    Generated when missing (a no-op after): the tree (``--holdout true``: the default held-out families), the
    ResNet-18 backbone every quick start starts from (the stand-in for ImageNet weights; fresh synthetic pictures,
    never of the held-out picture family) and, for the segmentation layouts, the frozen VGGish (the stand-in for
    AudioSet weights; the S4 tree's training clips, never of the held-out sound family).
    """
    root = generate(layout, SYNTHETIC / layout, "small", holdout=HOLDOUT)
    if not BACKBONE_WEIGHTS.exists():
        result = pretrain_backbone(BACKBONE_WEIGHTS, "resnet18", image_size=64, held_out_pictures=HOLDOUT.pictures)
        print(
            f"pre-trained ResNet-18: the object named on {result.val_accuracy:.3f} of the validation pictures, "
            f"{result.held_out_accuracy:.3f} of the held-out family's"
        )
    if layout != "music" and not AUDIO_WEIGHTS.exists():
        result = pretrain_vggish(generate("s4", SYNTHETIC / "s4", "small", holdout=HOLDOUT), AUDIO_WEIGHTS, width=0.25)
        print(
            f"pre-trained VGGish: category accuracy {result.val_accuracy:.3f} (validation), "
            f"{result.held_out_accuracy:.3f} (held-out sound family)"
        )
    return root


def budgeted_run(
    quickstart: str,
    name: str,
    minutes: float | None,
    workdir: Path,
    reuse: bool,
    edit: Callable[[dict[str, Any]], None] | None = None,
    before_fit: Callable[[LightningModule, LightningDataModule], None] | None = None,
    steps: int | None = None,
) -> tuple[LightningModule, LightningDataModule, dict[str, Any]]:
    """Train ``configs/experiment/{quickstart}.yaml`` into ``workdir/name`` for a budget; load its best checkpoint.

    The budget is ``minutes`` of wall clock or ``steps`` optimiser steps (exactly one of them).

    The config's first callback must be the ModelCheckpoint (``filename: best``). ``edit`` changes the config
    (a dict) before it is built; ``before_fit`` runs on the built task and datamodule, before training or reuse.
    With ``reuse``, a best checkpoint already in ``workdir/name`` is loaded instead of training again.

    Returns:
        The task (with the best weights), the datamodule and the checkpoint.
    """
    config = yaml.safe_load((CONFIGS / f"{quickstart}.yaml").read_text())
    trainer = config["trainer"]
    if (minutes is None) == (steps is None):
        raise ValueError("budgeted_run needs exactly one budget: minutes or steps")
    if steps is not None:
        trainer.update(max_epochs=10_000, max_steps=steps)
    else:
        assert minutes is not None
        seconds = round(60 * minutes)
        hms = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        trainer.update(max_epochs=10_000, max_time=hms)
    trainer["default_root_dir"] = str(workdir / name)
    trainer["logger"]["init_args"]["save_dir"] = str(workdir / name)
    # Only the checkpoint callback: a budgeted run writes nothing into the quick start's report folder.
    [checkpoint] = [c for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    checkpoint["init_args"]["dirpath"] = str(workdir / name / "checkpoints")
    trainer["callbacks"] = [checkpoint]
    if edit is not None:
        edit(config)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = lightning_cli(["--config", str(path)], run=False)
    task, datamodule = cli.model, cli.datamodule
    if before_fit is not None:
        before_fit(task, datamodule)
    best = workdir / name / "checkpoints" / "best.ckpt"
    if not (reuse and best.is_file()):
        best.unlink(missing_ok=True)
        cli.trainer.fit(task, datamodule)
        if not best.is_file():
            budget = f"{minutes} min" if steps is None else f"{steps} steps"
            raise RuntimeError(f"{name}: no validation ran within {budget}; give it more time")
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    task.load_state_dict(checkpoint["state_dict"])
    return task, datamodule, checkpoint
