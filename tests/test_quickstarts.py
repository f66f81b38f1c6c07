"""Every quick start, unchanged, runs as a ``fast_dev_run`` on the tiny synthetic trees through the command.

The configs write ``runs/``, ``reports/`` and ``data/cache/`` and read ``data/weights/`` relative to the working
directory: each run works in its own folder, where the segmentation quick starts find the 1-step pre-trained
encoders of the session fixtures under the names they load.
"""

import sqlite3
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Trainer

from avtoolkit.cli import main

CONFIGS = Path(__file__).parents[1] / "configs" / "experiment"
QUICKSTARTS = sorted(CONFIGS.glob("quickstart_*.yaml"))
SLOW = {"quickstart_hfra"}  # its frozen CLAP embeddings are computed first: about 60 s


def quickstart_cases() -> list:
    return [pytest.param(p, marks=[pytest.mark.slow] if p.stem in SLOW else [], id=p.stem) for p in QUICKSTARTS]


@pytest.fixture
def workdir(tmp_path, monkeypatch, quickstart_audio_weights, quickstart_backbone_weights) -> Path:
    weights = tmp_path / "data" / "weights"
    weights.mkdir(parents=True)
    for source in (quickstart_audio_weights, quickstart_backbone_weights):
        (weights / source.name).symlink_to(source)  # the names the quick starts load
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("config", quickstart_cases())
def test_fast_dev_run_of_every_quick_start_on_the_tiny_trees(config, synthetic_trees, workdir, monkeypatch):
    trainers: list[Trainer] = []
    fit = Trainer.fit

    def recorded_fit(self: Trainer, *args: object, **kwargs: object) -> None:
        trainers.append(self)
        fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recorded_fit)
    data = yaml.safe_load(config.read_text())["data"]["init_args"]
    root = synthetic_trees[data.get("dataset", "music")]  # a batch is larger than the tiny training splits
    main(["fit", "--config", str(config), "--data.init_args.root", str(root), "--trainer.fast_dev_run", "true"])
    assert len(trainers) == 1 and trainers[0].global_step == 1  # it trained (one batch of the whole split)
    assert not list(workdir.rglob("*.ckpt"))  # a smoke test leaves nothing to resume from
    if data.get("fixed_mixtures_per_clip"):  # HFRA: the CLAP pool is sized from the tree (4 × its 8 training clips)
        (database,) = workdir.glob("data/cache/mixtures/*/embeddings.sqlite")
        with sqlite3.connect(database) as connection:
            entries = connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        assert entries == 4 * 8 + 4 + 4  # training pool, val and test mixtures
