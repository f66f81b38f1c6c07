"""The guards every task attaches: a non-finite training loss stops the run; a fast_dev_run writes no checkpoint."""

import math
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from avtoolkit.data.batch import FRAMES, LABELS, SAMPLE_INDEX
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.errors import ConfigError, DatasetError
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.separation import AVSeparationTask

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_task() -> AVSeparationTask:
    model = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32)


def tiny_data(root: Path, cls: type[SeparationDataModule] = SeparationDataModule) -> SeparationDataModule:
    """6 training clips in batches of 2: 3 steps an epoch."""
    return cls(root, window=2047, frames_per_source=1, image_size=32, batch_size=2, num_workers=0)


class FramesWithNaN(SeparationDataModule):
    """Every training batch's second mixture gets a NaN in its frames (an input the loss then propagates)."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.trainer is not None and self.trainer.training:
            batch[FRAMES][1, 0, 0, 0, 0, 0] = math.nan
        return batch


class FirstBatch(Callback):
    """Keeps the first training batch's sample indices and labels."""

    def __init__(self) -> None:
        self.indices: list[int] | None = None
        self.labels: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.labels is None:
            index = batch.get(SAMPLE_INDEX)
            self.indices, self.labels = None if index is None else index.tolist(), batch[LABELS].cpu()


def fit(task, data, checkpoints: Path, *callbacks: Callback) -> Trainer:
    seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=checkpoints, save_top_k=-1, save_last=True, every_n_train_steps=1)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint, *callbacks],
    )
    trainer.fit(task, data)
    return trainer


def mixture_files(data: SeparationDataModule, index: int, epoch: int = 0) -> list[str]:
    """The audio files of training mixture ``index`` (drawn from the key the training sampler gives it)."""
    dataset = data.datasets["train"]
    recipe = dataset.recipe(index, (0, epoch))  # (seed_everything's seed, epoch)
    return [str(dataset.clips[i].audio.relative_to(data.root)) for i in recipe.clips]


def test_a_non_finite_loss_stops_the_run_before_any_checkpoint_naming_the_clips(music_tree, tmp_path):
    task = tiny_task()
    with torch.no_grad():
        next(task.model.parameters()).fill_(math.nan)  # the network diverged; its inputs are fine
    data, first = tiny_data(music_tree), FirstBatch()
    with pytest.raises(ConfigError) as error:
        fit(task, data, tmp_path / "checkpoints", first)
    message = str(error.value)
    assert "the loss of training step 0 (epoch 0, batch 0) is nan although the batch's inputs are finite" in message
    assert "model.init_args.optimizer.init_args.lr" in message and "trainer.gradient_clip_val" in message
    assert first.indices is not None and first.labels is not None
    for index, labels in zip(first.indices, first.labels, strict=True):
        files = mixture_files(data, index)
        assert " + ".join(files) in message
        # the named files are the batch's: their classes are the batch's labels
        assert [Path(f).parent.name for f in files] == [data.class_names[i] for i in labels]
    assert not list((tmp_path / "checkpoints").glob("*"))  # stopped before the first checkpoint


def test_non_finite_inputs_are_a_dataset_error_naming_the_sample_and_the_input(music_tree, tmp_path):
    data, first = tiny_data(music_tree, FramesWithNaN), FirstBatch()
    with pytest.raises(DatasetError) as error:
        fit(tiny_task(), data, tmp_path / "checkpoints", first)
    message = str(error.value)
    assert message.startswith("the loss of training step 0 (epoch 0, batch 0) is nan: NaN or infinite values in")
    assert first.indices is not None
    poisoned, clean = mixture_files(data, first.indices[1]), mixture_files(data, first.indices[0])
    assert re.search(re.escape(" + ".join(poisoned)) + r": frames\b", message)
    assert " + ".join(clean) not in message  # only the sample with non-finite inputs is named
    assert not list((tmp_path / "checkpoints").glob("*"))


def test_a_fast_dev_run_writes_no_checkpoint(music_tree, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    trainer = Trainer(
        accelerator="cpu",
        fast_dev_run=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/sdr", save_last=True)],
    )
    trainer.fit(tiny_task(), tiny_data(music_tree))
    assert trainer.global_step == 1  # it did train
    assert not list(checkpoints.glob("*"))  # nothing a later `fit --ckpt_path last` could resume from
