"""Two CPU processes (DDP over gloo, launched by torchrun) give the metrics of one.

Segmentation (M_J, M_F) and separation (SDR/SIR/SAR) are evaluated on splits of 3 clips, an odd number that
Lightning's own distributed sampler would pad by repeating a clip; the counters must equal the split sizes. The
same processes also train through the CLI with ``configs/trainer/ddp.yaml`` (plain DDP, which refuses parameters
without a gradient): the separation quick start, and the FAVS baseline with the SFM plug-ins on.

This file is also the worker:
``torchrun --nproc_per_node 2 tests/test_distributed.py OUT MUSIC S4 CONFIG SEGMENTATION_CONFIG``.
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything

from avtoolkit.cli import main
from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
from avtoolkit.losses.segmentation import PixelCriterion
from avtoolkit.models.segmentation.tpavi import TPAVINet
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

ROOT = Path(__file__).parents[1]
N_CLIPS = 3  # per evaluation split: odd, so two processes cannot split it evenly
EVAL = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def cases(music: Path, s4: Path) -> dict[str, tuple[AVSeparationTask | AVSegmentationTask, LightningDataModule]]:
    """Tiny tasks (random init, seeded) and their datamodules, batches of 2."""
    seed_everything(0)
    sop = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    separation = AVSeparationTask(sop, n_fft=126, hop_length=64, warp_bins=32, mask="ratio", test_backend="mir_eval")
    tpavi = TPAVINet(num_classes=1, backbone="test_resnet", audio_width=0.0625, dim=16)
    segmentation = AVSegmentationTask(tpavi, criterion=PixelCriterion())
    return {
        "separation": (
            separation,
            SeparationDataModule(music, window=2047, frames_per_source=1, image_size=32, batch_size=2, num_workers=0),
        ),
        "segmentation": (segmentation, SegmentationDataModule("s4", s4, image_size=32, batch_size=2, num_workers=0)),
    }


def evaluate(
    task: AVSeparationTask | AVSegmentationTask, datamodule: LightningDataModule, **trainer
) -> dict[str, float]:
    """Validation and test metrics of ``task`` (one dict; ``val/`` and ``test/`` keys)."""
    run = Trainer(**EVAL, **trainer)
    return {**run.validate(task, datamodule, verbose=False)[0], **run.test(task, datamodule, verbose=False)[0]}


def worker(out: Path, music: Path, s4: Path, config: Path, segmentation_config: Path) -> None:
    """One of the two DDP processes: evaluate the saved weights, then train through the CLI."""
    torch.set_num_threads(1)
    results = {}
    for name, (task, datamodule) in cases(music, s4).items():
        task.load_state_dict(torch.load(out / f"{name}.pt"))
        results[name] = evaluate(task, datamodule, devices=2, strategy="ddp")
    ddp = ROOT / "configs" / "trainer" / "ddp.yaml"
    # SyncBatchNorm needs a GPU to synchronise; on CPU the part is used as is otherwise.
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.sync_batchnorm=false"]
    main(["fit", "--config", str(config), "--trainer", str(ddp), *cpu])
    main(["fit", "--config", str(segmentation_config), "--trainer", str(ddp), *cpu])
    if int(os.environ["RANK"]) == 0:
        world_size = torch.distributed.get_world_size()
        (out / "results.json").write_text(json.dumps({"world_size": world_size, "metrics": results}))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def s4_odd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny S4 tree whose val and test splits hold 3 clips each."""
    from fixtures import make_avsbench

    root = tmp_path_factory.mktemp("s4_odd")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(make_avsbench, "SPLIT_SIZES", {"train": 3, "val": N_CLIPS, "test": N_CLIPS})
        make_avsbench.make_s4(root)
    return root


@pytest.fixture(scope="module")
def runs(
    one_thread: None, music_tree: Path, s4_odd: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, float]]:
    """One process in this one, then the same weights in two torchrun processes."""
    from fixtures.tiny_models import TINY_FAVS

    from tasks.test_segmentation_task import tiny_config as tiny_segmentation_config
    from test_cli import tiny_config

    out = tmp_path_factory.mktemp("ddp")
    single = {}
    for name, (task, datamodule) in cases(music_tree, s4_odd).items():
        torch.save(task.state_dict(), out / f"{name}.pt")
        single[name] = evaluate(task, datamodule, devices=1)
    fit_dir = out / "fit"
    fit_dir.mkdir()
    config = tiny_config(fit_dir, music_tree)
    segmentation_dir = out / "fit_segmentation"
    segmentation_dir.mkdir()
    sfm = {**TINY_FAVS, "use_fded": False, "use_scmc": False, "ars_stages": [8, 16, 32], "msau": True}
    segmentation_config = tiny_segmentation_config(segmentation_dir, "quickstart_favs_baseline_s4", s4_odd, sfm)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [*command, __file__, str(out), str(music_tree), str(s4_odd), str(config), str(segmentation_config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    two = json.loads((out / "results.json").read_text())
    assert two["world_size"] == 2
    with open(next(fit_dir.rglob("metrics.csv"))) as f:
        fitted = [row for row in csv.DictReader(f) if row.get("val/n_clips")]
    with open(next(segmentation_dir.rglob("metrics.csv"))) as f:
        segmentation = [row for row in csv.DictReader(f) if row.get("val/n_frames")]
    return {"single": single, "two": two["metrics"], "fit": fitted[-1], "fit_segmentation": segmentation[-1]}


@pytest.mark.parametrize("name", ["segmentation", "separation"])
def test_two_processes_give_the_metrics_of_one(runs, name):
    single, two = runs["single"][name], runs["two"][name]
    # The dataset-level metrics (torchmetrics states, synchronised). Not the losses, logged per step: Lightning
    # 2.6 floors the integer sample count when it averages them over processes with unequal shares
    # (Lightning-AI/pytorch-lightning#21859), which inflates them here by 1.5.
    keys = {key for key in single if "loss" not in key}
    assert keys and keys <= set(two)
    first = "val/mj" if name == "segmentation" else "val/sdr"
    assert 0 < abs(single[first]) < 100  # a real number, not a degenerate 0 or NaN
    for key in sorted(keys):
        assert two[key] == pytest.approx(single[key], rel=1e-6, abs=1e-6), key


@pytest.mark.parametrize(
    ("name", "counter", "per_clip"), [("segmentation", "n_frames", 5), ("separation", "n_clips", 1)]
)
def test_every_evaluation_sample_is_counted_once(runs, name, counter, per_clip):
    for stage in ("val", "test"):
        assert runs["single"][name][f"{stage}/{counter}"] == N_CLIPS * per_clip
        assert runs["two"][name][f"{stage}/{counter}"] == N_CLIPS * per_clip  # padding would give 4 clips


def test_ddp_trainer_part_trains_through_the_cli(runs):
    assert float(runs["fit"]["val/n_clips"]) == N_CLIPS  # each process validated its own clips
    assert math.isfinite(float(runs["fit"]["val/sdr"]))


def test_plain_ddp_trains_a_network_with_the_sfm_plug_ins(runs):
    # ARS and MSAU are on the loss's path: plain DDP (no unused-parameter search) accepts the network
    assert float(runs["fit_segmentation"]["val/n_frames"]) == N_CLIPS * 5
    assert math.isfinite(float(runs["fit_segmentation"]["val/mj"]))


if __name__ == "__main__":
    worker(*(Path(arg) for arg in sys.argv[1:6]))
