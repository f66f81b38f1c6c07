"""Test-wide settings (offline libraries, small thread pools) and shared dataset fixtures."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
# The committed fixture-tree scripts (tests/data/fixtures) are importable from every test folder.
sys.path.insert(0, str(Path(__file__).parent / "data"))

from fixtures.make_avsbench import make_avss, make_ms3, make_s4  # noqa: E402
from fixtures.make_music import make_music  # noqa: E402


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module's runs: on a small shared machine, spinning thread pools slow them a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def music_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny prepared MUSIC-layout tree (3 classes; 6.5 s noisy-tone clips, 32×32 frames)."""
    root = tmp_path_factory.mktemp("music")
    make_music(root)
    return root


@pytest.fixture(scope="session")
def avsbench_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny S4, MS3 and AVSS trees in the official layouts."""
    base = tmp_path_factory.mktemp("avsbench")
    for name, make in (("s4", make_s4), ("ms3", make_ms3), ("avss", make_avss)):
        make(base / name)
    return {name: base / name for name in ("s4", "ms3", "avss")}


@pytest.fixture(scope="session")
def synthetic_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The built-in synthetic datasets, size tiny, in every layout (real instrument sounds and pictures)."""
    from avtoolkit.data.synth import LAYOUTS, generate

    base = tmp_path_factory.mktemp("synth")
    return {layout: generate(layout, base / layout, "tiny", workers=1, progress=False) for layout in LAYOUTS}


@pytest.fixture(scope="session")
def protocol_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny synthetic music and S4 trees of the held-out-family protocol (the default held-out families)."""
    from avtoolkit.data.synth import Holdout, generate

    base = tmp_path_factory.mktemp("protocol")
    return {
        layout: generate(layout, base / layout, "tiny", workers=1, progress=False, holdout=Holdout())
        for layout in ("music", "s4")
    }


@pytest.fixture(scope="session")
def quickstart_audio_weights(synthetic_trees: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quarter-width VGGish state dict, as the segmentation quick starts load (one step of pre-training)."""
    from avtoolkit.pretraining import pretrain_vggish

    out = tmp_path_factory.mktemp("weights") / "vggish_s4_w025.pt"
    return pretrain_vggish(synthetic_trees["s4"], out, width=0.25, steps=1, batch_size=2, num_workers=0).path


@pytest.fixture(scope="session")
def quickstart_backbone_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-18 state dict, as the segmentation quick starts load (one step of pre-training on 2 pictures)."""
    from avtoolkit.pretraining import pretrain_backbone

    out = tmp_path_factory.mktemp("weights") / "resnet18_synth_64.pt"
    return pretrain_backbone(out, "resnet18", 64, images=2, steps=1, batch_size=2, workers=1, progress=False).path


@pytest.fixture(scope="session")
def synthetic_music(synthetic_trees: dict[str, Path]) -> Path:
    """The tiny synthetic MUSIC-layout dataset."""
    return synthetic_trees["music"]
