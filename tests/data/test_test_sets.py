"""Held-out-family test sets: a tree of the protocol is tested as two sets, each scored and reported apart."""

import json
from pathlib import Path

import pytest
import torch
from fixtures.tiny_models import TINY_FAVS
from lightning.pytorch import Trainer

from avtoolkit.callbacks import SegmentationReport, SeparationReport
from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
from avtoolkit.data.holdout import held_out_clips
from avtoolkit.metrics import SeparationMetrics
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

L = 2047  # 32 STFT frames at hop 64


def separation_datamodule(root: Path) -> SeparationDataModule:
    return SeparationDataModule(root, window=L, frames_per_source=1, image_size=32, batch_size=2, num_workers=0)


def tiny_separation_task() -> AVSeparationTask:
    torch.manual_seed(0)
    model = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32)


def trainer(*callbacks) -> Trainer:
    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=list(callbacks))


def test_the_test_split_of_a_protocol_tree_is_two_disjoint_sets(protocol_trees):
    root = protocol_trees["music"]
    held_out = held_out_clips(root)
    datamodule = separation_datamodule(root)
    assert datamodule.test_sets == ("test", "test_held_out")
    datamodule.setup("test")
    in_family = {clip.id for clip in datamodule.datasets["test"].clips}
    held = {clip.id for clip in datamodule.datasets["test_held_out"].clips}
    assert held == held_out and in_family and not in_family & held_out
    assert len(datamodule.test_dataloader()) == 2  # one loader per set
    segmentation = SegmentationDataModule("s4", protocol_trees["s4"], image_size=32, batch_size=2, num_workers=0)
    segmentation.setup("test")
    assert set(segmentation.datasets["test_held_out"].names) == held_out_clips(protocol_trees["s4"])
    assert not set(segmentation.datasets["test"].names) & held_out_clips(protocol_trees["s4"])


def test_a_tree_without_the_protocol_has_one_test_set(synthetic_trees):
    datamodule = separation_datamodule(synthetic_trees["music"])
    datamodule.setup("test")
    assert datamodule.test_sets == ("test",) and set(datamodule.datasets) == {"test"}
    assert not isinstance(datamodule.test_dataloader(), list)


def test_each_test_set_is_scored_logged_and_reported_apart(protocol_trees, tmp_path):
    datamodule = separation_datamodule(protocol_trees["music"])
    task = tiny_separation_task()
    report = SeparationReport(dirpath=str(tmp_path / "report"), n_examples=1)
    results = trainer(report).test(task, datamodule)
    assert len(results) == 2
    assert all(set(r) >= {f"{name}/sdr", f"{name}/loss"} for r, name in zip(results, datamodule.test_sets, strict=True))
    # Each set's numbers are those of its own mixtures, scored alone.
    task.eval()
    for name in datamodule.test_sets:
        alone = SeparationMetrics()
        with torch.no_grad():
            for batch in torch.utils.data.DataLoader(datamodule.datasets[name], batch_size=2):
                batch = datamodule.on_after_batch_transfer(batch, 0)
                alone.update(task(batch), batch["sources"], batch["mixture"], batch["labels"])
        logged = trainer().test(task, datamodule, verbose=False)[datamodule.test_sets.index(name)]
        assert logged[f"{name}/n_clips"] == len(datamodule.datasets[name])
        assert logged[f"{name}/sdr"] == pytest.approx(float(alone.compute()["sdr"]), abs=1e-3)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["n_clips"] == len(datamodule.datasets["test"])
    assert metrics["test_held_out"]["n_clips"] == len(datamodule.datasets["test_held_out"])
    text = (tmp_path / "report" / "report.md").read_text()
    held = metrics["test_held_out"]
    assert f"| `test_held_out` | {int(held['n_clips'])} | {held['sdr']:.3f} |" in text
    assert f"| `test` | {int(metrics['n_clips'])} | {metrics['sdr']:.3f} |" in text


def test_segmentation_report_has_a_row_per_test_set(protocol_trees, tmp_path):
    root = protocol_trees["s4"]
    datamodule = SegmentationDataModule("s4", root, image_size=32, batch_size=2, num_workers=0)
    torch.manual_seed(0)
    task = AVSegmentationTask(FAVS(num_classes=1, **TINY_FAVS))
    report = SegmentationReport(dirpath=str(tmp_path / "report"), n_examples=1)
    results = trainer(report).test(task, datamodule)
    assert results[1]["test_held_out/n_frames"] == 5 * len(held_out_clips(root))
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["test_held_out"]["mj"] == pytest.approx(results[1]["test_held_out/mj"], abs=1e-6)
    assert metrics["mj"] == pytest.approx(results[0]["test/mj"], abs=1e-6)
    assert "| `test_held_out` |" in (tmp_path / "report" / "report.md").read_text()
