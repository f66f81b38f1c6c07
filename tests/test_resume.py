"""Exact resume: a run killed mid-epoch and resumed from ``last.ckpt`` ends where an uninterrupted run ends.

Mid-epoch means the data order must pick up at the next batch of the same shuffled epoch, and the random
mix-and-separate draws of the remaining samples must be the ones the uninterrupted run made.
"""

from pathlib import Path

import pytest
import torch
from fixtures.tiny_models import TINY_FAVS
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
from avtoolkit.losses.segmentation import MaskClassificationCriterion
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

BATCHES_PER_EPOCH = 3
CRASH_AT_STEP = 4  # epoch 1, after its first batch


pytestmark = pytest.mark.usefixtures("one_thread")


class KilledError(Exception):
    """The run was stopped from outside."""


class KillAtStep(Callback):
    """Stop the run before a given step, as a killed job would (the last checkpoint is the step before)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise KilledError


def separation(root: Path) -> tuple[AVSeparationTask, SeparationDataModule]:
    """Sound of Pixels, tiny; 6 training clips in batches of 2, read by 2 worker processes."""
    model = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    task = AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32, mask="ratio")
    data = SeparationDataModule(root, window=2047, frames_per_source=1, image_size=32, batch_size=2, num_workers=2)
    return task, data


def segmentation(root: Path) -> tuple[AVSegmentationTask, SegmentationDataModule]:
    """FAVS, tiny (FDED and SCMC on); 3 training clips in batches of 1.

    The set loss on full masks: its default random point sampling draws from the process's RNG, which Lightning
    does not save (see the module docstring).
    """
    model = FAVS(num_classes=1, **TINY_FAVS)
    task = AVSegmentationTask(model, criterion=MaskClassificationCriterion(num_points=None))
    return task, SegmentationDataModule("s4", root, image_size=32, batch_size=1, num_workers=0)


def fit(build, root: Path, dirpath: Path, kill_at: int | None = None, ckpt_path: str | None = None) -> Trainer:
    """Two seeded epochs, a checkpoint (and ``last.ckpt``) after every step."""
    seed_everything(0)
    task, data = build(root)
    checkpoint = ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=1)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint] + ([] if kill_at is None else [KillAtStep(kill_at)]),
    )
    trainer.fit(task, data, ckpt_path=ckpt_path, weights_only=False)  # our own checkpoint: it holds the optimizer class
    return trainer


@pytest.mark.parametrize("name", ["separation", "segmentation"])
def test_a_run_resumed_mid_epoch_ends_like_an_uninterrupted_one(name, music_tree, avsbench_trees, tmp_path):
    build, root = (separation, music_tree) if name == "separation" else (segmentation, avsbench_trees["s4"])
    full = fit(build, root, tmp_path / "full")
    assert full.num_training_batches == BATCHES_PER_EPOCH and full.global_step == 2 * BATCHES_PER_EPOCH

    with pytest.raises(KilledError):
        fit(build, root, tmp_path / "resumed", kill_at=CRASH_AT_STEP)
    last = torch.load(tmp_path / "resumed" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == CRASH_AT_STEP and CRASH_AT_STEP % BATCHES_PER_EPOCH != 0  # mid-epoch
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]

    resumed = fit(build, root, tmp_path / "resumed", ckpt_path="last")
    assert resumed.global_step == full.global_step
    full_weights, resumed_weights = full.lightning_module.state_dict(), resumed.lightning_module.state_dict()
    for key, value in full_weights.items():
        assert torch.equal(resumed_weights[key], value), key
    metrics = {key for key in full.callback_metrics if key.startswith("val/")}
    assert metrics
    for key in metrics:
        assert torch.equal(resumed.callback_metrics[key], full.callback_metrics[key]), key
