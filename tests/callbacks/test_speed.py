"""The speed switches on the CPU: bf16 mixed precision, channels-last weights, torch.compile, for each headline model.

Each switch must train the tiny networks to a finite loss through Lightning, leave the state dict's keys as they
are (checkpoints load into a plain task), and — for channels-last and compile, which change only how the network
computes — give the same outputs as the plain network.
"""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from fixtures.tiny_models import TINY_DGFNET, TINY_FAVS
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from avtoolkit.callbacks.speed import ChannelsLast, Compile
from avtoolkit.cli import main
from avtoolkit.data.datamodules import BaseAVDataModule, SegmentationDataModule, SeparationDataModule
from avtoolkit.losses.segmentation import MaskClassificationCriterion
from avtoolkit.models.encoders.visual import PooledFrameEncoder
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.separation.dgfnet import DGFNet
from avtoolkit.models.separation.hfra import HFRA
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

pytestmark = pytest.mark.usefixtures("one_thread")

UNET = {"unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}
CONFIGS = Path(__file__).parents[2] / "configs"


def favs(trees: dict[str, Path], music: Path) -> tuple[LightningModule, BaseAVDataModule]:
    task = AVSegmentationTask(FAVS(num_classes=1, **TINY_FAVS), criterion=MaskClassificationCriterion(num_points=None))
    return task, SegmentationDataModule("s4", trees["s4"], image_size=32, batch_size=2, num_workers=0)


def separation(model: torch.nn.Module, music: Path) -> tuple[LightningModule, BaseAVDataModule]:
    task = AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32)
    data = SeparationDataModule(music, window=2047, frames_per_source=1, image_size=32, batch_size=2, num_workers=0)
    return task, data


def frame_encoder() -> PooledFrameEncoder:
    return PooledFrameEncoder("test_resnet", out_channels=8)


BUILDERS: dict[str, Callable[[dict[str, Path], Path], tuple[LightningModule, BaseAVDataModule]]] = {
    "favs": favs,
    "sop": lambda trees, music: separation(SoundOfPixels(channels=4, backbone="test_resnet", **UNET), music),
    "hfra": lambda trees, music: separation(
        HFRA(visual_dim=8, middle_channels=4, channels=8, visual_encoder=frame_encoder(), **UNET), music
    ),
    "dgfnet": lambda trees, music: separation(
        DGFNet(visual_dim=8, visual_encoder=frame_encoder(), **TINY_DGFNET, **UNET),
        music,
    ),
}


class LossRecorder(Callback):
    """Keeps every training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def train(task: LightningModule, data: BaseAVDataModule, precision: str = "32-true", callbacks=()) -> list[float]:
    """Two training steps from the same random state; the losses."""
    seed_everything(0)
    recorder = LossRecorder()
    trainer = Trainer(
        max_steps=2,
        limit_val_batches=0,
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, recorder],
    )
    trainer.fit(task, data)
    return recorder.losses


@pytest.mark.parametrize("name", BUILDERS)
def test_bf16_mixed_precision_trains_every_headline_model(name, avsbench_trees, music_tree):
    task, data = BUILDERS[name](avsbench_trees, music_tree)
    losses = train(task, data, precision="bf16-mixed")
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in task.parameters())  # mixed: the weights stay float32


SWITCHES: dict[str, Callable[[], Callback]] = {
    "channels_last": ChannelsLast,
    "compile": lambda: Compile(backend="aot_eager"),  # traced and run through AOTAutograd; no code generated
}
# FAVS recompiles for each expert's share of frames (data-dependent shapes): a minute on 2 cores.
SLOW = {("favs", "compile")}


@pytest.mark.parametrize(
    ("name", "switch"),
    [
        pytest.param(name, switch, marks=[pytest.mark.slow] if (name, switch) in SLOW else [])
        for name in BUILDERS
        for switch in SWITCHES
    ],
)
def test_channels_last_and_compile_change_how_not_what(name, switch, avsbench_trees, music_tree):
    """The same training losses as the plain network, and the same state-dict keys; weights stored NHWC."""
    plain_task, data = BUILDERS[name](avsbench_trees, music_tree)
    initial = {k: v.clone() for k, v in plain_task.state_dict().items()}
    plain = train(plain_task, data)
    task, data = BUILDERS[name](avsbench_trees, music_tree)
    task.load_state_dict(initial)
    assert train(task, data, callbacks=[SWITCHES[switch]()]) == pytest.approx(plain, rel=1e-4, abs=1e-5)
    assert list(task.state_dict()) == list(initial)
    if switch == "channels_last":
        kernels = [m.weight for m in task.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
        assert kernels and all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels)


def test_compile_with_inductor_matches_eager(avsbench_trees, music_tree):
    """Generated kernels (inductor, the default backend; C++ on the CPU) give the plain network's losses."""
    plain_task, data = BUILDERS["sop"](avsbench_trees, music_tree)
    initial = {k: v.clone() for k, v in plain_task.state_dict().items()}
    plain = train(plain_task, data)
    task, data = BUILDERS["sop"](avsbench_trees, music_tree)
    task.load_state_dict(initial)
    assert train(task, data, callbacks=[Compile()]) == pytest.approx(plain, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("overlay", ["bf16", "channels_last", "compile"])
def test_overlays_stack_on_an_experiment(overlay, capsys):
    """Each switch is an overlay config: a second --config on top of any experiment."""
    experiment = CONFIGS / "experiment" / "quickstart_favs_s4.yaml"
    with pytest.raises(SystemExit) as exit_info:
        part = CONFIGS / "trainer" / f"{overlay}.yaml"
        main(["fit", "--config", str(experiment), "--config", str(part), "--print_config"])
    assert exit_info.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    callbacks = [c["class_path"] for c in trainer["callbacks"]]
    assert "lightning.pytorch.callbacks.ModelCheckpoint" in callbacks  # the experiment's own are kept
    expected = {
        "bf16": trainer["precision"] == "bf16-mixed",
        "channels_last": "avtoolkit.callbacks.ChannelsLast" in callbacks,
        "compile": "avtoolkit.callbacks.Compile" in callbacks,
    }
    assert expected[overlay]
