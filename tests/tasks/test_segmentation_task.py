"""AVSegmentationTask through the CLI on the tiny synthetic AVSBench data: fit, test, predict, reload."""

from pathlib import Path

import pytest
import torch
import yaml
from fixtures.tiny_models import TINY_FAVS

from avtoolkit.cli import lightning_cli, main
from avtoolkit.data.batch import AUDIO, FRAMES, MASK_VALID, MASKS
from avtoolkit.tasks.segmentation import AVSegmentationTask

CONFIGS = Path(__file__).parents[2] / "configs" / "experiment"


def tiny_config(tmp_path: Path, quickstart: str, root: Path, network: dict) -> Path:
    """A quick-start experiment shrunk to seconds: tiny network, 32-px frames, two batches."""
    config = yaml.safe_load((CONFIGS / f"{quickstart}.yaml").read_text())
    trainer = config["trainer"]
    trainer.update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1)
    trainer["default_root_dir"] = str(tmp_path)
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path)
    trainer["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    # Random-init audio: the quick starts' pre-trained VGGish has another width (and is not made in tests).
    config["model"]["init_args"]["model"]["init_args"].update(
        {"audio_weights": None, "backbone_weights": None, "freeze_audio": False, **network}
    )
    config["data"]["init_args"].update(root=str(root), image_size=32, batch_size=2, num_workers=0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_favs_fit_test_and_reload_through_the_cli(synthetic_trees, tmp_path):
    config = tiny_config(tmp_path, "quickstart_favs_s4", synthetic_trees["s4"], TINY_FAVS)
    main(["fit", "--config", str(config), "--model.init_args.backbone_lr_multiplier", "0.1"])
    best = tmp_path / "checkpoints" / "best.ckpt"
    assert best.is_file()
    main(["test", "--config", str(config), "--ckpt_path", str(best)])
    logged = {name for path in tmp_path.rglob("metrics.csv") for name in path.read_text().splitlines()[0].split(",")}
    assert {"val/mj", "val/mf", "test/mj", "train/loss_class", "train/stage1/mean_k_visual"} <= logged
    task = AVSegmentationTask.load_from_checkpoint(best)
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(task.state_dict()["model.query_embed.weight"], state["model.query_embed.weight"])


def test_backbone_learning_rate_multiplier(synthetic_trees, tmp_path):
    config = tiny_config(tmp_path, "quickstart_favs_s4", synthetic_trees["s4"], TINY_FAVS)
    cli = lightning_cli(["--config", str(config), "--model.init_args.backbone_lr_multiplier", "0.1"], run=False)
    optimizer = cli.model.configure_optimizers()
    rest, backbone = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.1 * rest["lr"])
    assert sum(p.numel() for p in backbone["params"]) == sum(p.numel() for p in cli.model.model.backbone.parameters())


def test_tpavi_predicts_masks_at_frame_size(synthetic_trees, tmp_path):
    network = {"backbone": "test_resnet", "audio_width": 0.0625, "dim": 16}
    config = tiny_config(tmp_path, "quickstart_tpavi_s4", synthetic_trees["s4"], network)
    cli = lightning_cli(["--config", str(config)], run=False)
    task, datamodule = cli.model, cli.datamodule
    datamodule.setup("test")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)
    assert batch[AUDIO].shape[2:] == (1, 96, 64)
    task.eval()
    with torch.no_grad():
        masks = task.predict_step(batch, 0)
        task.validation_step(batch, 0)
    assert masks.shape == batch[MASKS].shape == (*batch[FRAMES].shape[:2], 32, 32)
    assert set(masks.unique().tolist()) <= {0, 1}
    values = task.val_metrics.compute()
    assert int(values["n_frames"]) == int(batch[MASK_VALID].sum())
