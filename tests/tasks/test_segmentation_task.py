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


def test_parameter_groups_follow_the_mask2former_recipe(synthetic_trees, tmp_path):
    network = {**TINY_FAVS, "ars_stages": [8], "msau": True}
    config = tiny_config(tmp_path, "quickstart_favs_s4", synthetic_trees["s4"], network)
    cli = lightning_cli(["--config", str(config), "--model.init_args.backbone_lr_multiplier", "0.1"], run=False)
    task = cli.model
    optimizer = task.configure_optimizers()
    base_lr, decay = optimizer.defaults["lr"], optimizer.defaults["weight_decay"]
    assert decay > 0
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    named = dict(task.model.named_parameters())
    assert len(group_of) == len(named)  # every parameter in exactly one group
    model = task.model
    ars = model.backbone.ars_modules()[0].ars

    def lr_and_decay(parameter: torch.nn.Parameter) -> tuple[float, float]:
        return group_of[id(parameter)]["lr"], group_of[id(parameter)]["weight_decay"]

    # the pre-trained backbone at 0.1 × the rate; ARS, inserted into it, is new: the full rate
    assert lr_and_decay(model.backbone.backbone.conv1[0].weight) == (pytest.approx(0.1 * base_lr), decay)
    assert lr_and_decay(ars.saliency_net[0].weight) == (base_lr, decay)
    # no weight decay on norms, embeddings and the identity-at-initialisation scalars
    assert lr_and_decay(model.backbone.backbone.bn1.weight) == (pytest.approx(0.1 * base_lr), 0.0)
    no_decay = [
        ars.alpha_raw,
        model.msau.mix,
        model.stages[0].fded_visual.weights,
        model.query_embed.weight,
        model.decoder.query_position.weight,
        model.pixel_decoder.level_embed,
        model.decoder.decoder_norm.weight,
        model.audio.project[1].weight,  # GroupNorm
    ]
    for parameter in no_decay:
        assert lr_and_decay(parameter) == (base_lr, 0.0)
    assert lr_and_decay(model.decoder.class_head.weight) == (base_lr, decay)


def test_avsbench_batch_size_reaches_the_metrics(synthetic_trees, tmp_path):
    config = tiny_config(tmp_path, "quickstart_favs_s4", synthetic_trees["s4"], TINY_FAVS)
    args = ["--model.init_args.protocol", "avsbench", "--model.init_args.avsbench_batch_size", "4"]
    task = lightning_cli(["--config", str(config), *args], run=False).model
    assert task.val_metrics.avsbench_batch_size == task.test_metrics.avsbench_batch_size == 4


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
