"""A checkpoint of another network is refused, naming it, before anything is restored, evaluated or written."""

import re
from pathlib import Path

import pytest
import torch
from fixtures.tiny_models import TINY_DGFNET, TINY_FAVS
from lightning.pytorch import Callback, Trainer, seed_everything

from avtoolkit.callbacks import SeparationReport
from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
from avtoolkit.errors import ConfigError
from avtoolkit.losses.segmentation import MaskClassificationCriterion
from avtoolkit.models.encoders.visual import PooledFrameEncoder
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.separation.dgfnet import DGFNet
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

pytestmark = pytest.mark.usefixtures("one_thread")
UNET = {"unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}


def sop(channels: int = 4) -> AVSeparationTask:
    model = SoundOfPixels(channels=channels, backbone="test_resnet", **UNET)
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32)


def dgfnet() -> AVSeparationTask:
    encoder = PooledFrameEncoder("test_resnet", out_channels=8, activation="none")
    model = DGFNet(visual_dim=8, visual_encoder=encoder, **{**TINY_DGFNET, **UNET})
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32)


def favs() -> AVSegmentationTask:
    return AVSegmentationTask(FAVS(num_classes=1, **TINY_FAVS), criterion=MaskClassificationCriterion(num_points=None))


def separation_data(root: Path) -> SeparationDataModule:
    return SeparationDataModule(root, window=2047, frames_per_source=1, image_size=32, batch_size=2, num_workers=0)


def trainer(*callbacks: Callback) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )


def checkpoint(task, data, path: Path) -> Path:
    """One training step of ``task``, saved to ``path``."""
    seed_everything(0)
    run = trainer()
    run.fit(task, data)
    run.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(music_tree, avsbench_trees, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    s4 = SegmentationDataModule("s4", avsbench_trees["s4"], image_size=32, batch_size=1, num_workers=0)
    return {
        "sop": checkpoint(sop(), separation_data(music_tree), folder / "sop.ckpt"),
        "dgfnet": checkpoint(dgfnet(), separation_data(music_tree), folder / "dgfnet.ckpt"),
        "favs": checkpoint(favs(), s4, folder / "favs.ckpt"),
    }


class CountTestBatches(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_test_batch_start(self, *args: object) -> None:
        self.batches += 1


@pytest.mark.parametrize(
    ("held", "message"),
    [
        (
            "dgfnet",
            "holds a DGFNet network (avtoolkit.models.separation.dgfnet.DGFNet), but the config builds a "
            "SoundOfPixels network (avtoolkit.models.separation.sop.SoundOfPixels)",
        ),
        (
            "favs",
            "holds a FAVS network (avtoolkit.models.segmentation.favs.FAVS) in an AVSegmentationTask "
            "(avtoolkit.tasks.segmentation.AVSegmentationTask), but the config builds a SoundOfPixels network "
            "(avtoolkit.models.separation.sop.SoundOfPixels) in an AVSeparationTask",
        ),
    ],
)
def test_a_checkpoint_of_another_network_is_refused_before_anything_is_evaluated(
    held, message, checkpoints, music_tree, tmp_path
):
    counter = CountTestBatches()
    run = trainer(counter, SeparationReport(dirpath=str(tmp_path / "report")))
    with pytest.raises(ConfigError, match=f"^checkpoint {re.escape(str(checkpoints[held]))} {re.escape(message)}"):
        run.test(sop(), separation_data(music_tree), ckpt_path=checkpoints[held], weights_only=False)
    assert counter.batches == 0 and not (tmp_path / "report").exists()


def test_weights_of_other_shapes_are_refused_naming_them(checkpoints, music_tree, tmp_path):
    run = trainer(SeparationReport(dirpath=str(tmp_path / "report")))
    with pytest.raises(ConfigError) as error:
        run.test(sop(channels=8), separation_data(music_tree), ckpt_path=checkpoints["sop"], weights_only=False)
    message = str(error.value)
    assert message.startswith(
        f"checkpoint {checkpoints['sop']} holds weights that do not fit the configured SoundOfPixels network "
        "(avtoolkit.models.separation.sop.SoundOfPixels): "
    )
    assert "5 tensors of other shapes (model.unet.up.0.2.weight [4, 8, 3, 3] in the checkpoint, [8, 8, 3, 3]" in message
    assert not (tmp_path / "report").exists()


def test_the_checkpoint_of_the_configured_network_is_restored(checkpoints, music_tree, tmp_path):
    task = sop()
    run = trainer(SeparationReport(dirpath=str(tmp_path / "report")))
    run.test(task, separation_data(music_tree), ckpt_path=checkpoints["sop"], weights_only=False)
    saved = torch.load(checkpoints["sop"], map_location="cpu", weights_only=False)
    assert saved["avtoolkit"] == {
        "task": "avtoolkit.tasks.separation.AVSeparationTask",
        "network": "avtoolkit.models.separation.sop.SoundOfPixels",
    }
    for key, value in saved["state_dict"].items():
        assert torch.equal(task.state_dict()[key], value), key
    assert (tmp_path / "report" / "report.md").is_file()
