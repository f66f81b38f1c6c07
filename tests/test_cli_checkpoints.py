"""`avtoolkit test --ckpt_path` with a checkpoint of another network: an error naming both, and nothing written."""

from pathlib import Path

import pytest
import yaml
from fixtures.tiny_models import TINY_DGFNET

from avtoolkit.cli import main
from avtoolkit.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs" / "experiment"
TINY_UNET = {"channels": 4, "unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}
TINY_NETWORKS = {
    "quickstart_sop": {**TINY_UNET, "backbone": "test_resnet", "backbone_weights": None},
    "quickstart_dgfnet": {
        **TINY_DGFNET,
        **TINY_UNET,
        "visual_dim": 8,
        "visual_encoder": {
            "class_path": "avtoolkit.models.encoders.visual.PooledFrameEncoder",
            "init_args": {"backbone": "test_resnet", "out_channels": 8, "activation": "none"},
        },
    },
}


def tiny_config(name: str, folder: Path, root: Path) -> Path:
    """A separation quick start shrunk to seconds, writing under ``folder``."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    trainer = config["trainer"]
    trainer.update(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False, default_root_dir=str(folder))
    trainer["callbacks"][0]["init_args"]["dirpath"] = str(folder / "checkpoints")
    trainer["callbacks"][1]["init_args"]["dirpath"] = str(folder / "report")
    config["model"]["init_args"]["model"]["init_args"].update(TINY_NETWORKS[name])
    config["model"]["init_args"].update(n_fft=254, hop_length=128, warp_bins=32)
    config["data"]["init_args"].update(root=str(root), window=4095, image_size=32, batch_size=2, num_workers=0)
    folder.mkdir(parents=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.usefixtures("one_thread")
def test_testing_a_checkpoint_of_another_network_names_both_and_writes_nothing(music_tree, tmp_path, capsys):
    sop, dgfnet = (tiny_config(name, tmp_path / name, music_tree) for name in ("quickstart_sop", "quickstart_dgfnet"))
    main(["fit", "--config", str(sop)])
    main(["fit", "--config", str(dgfnet)])
    own, other = (tmp_path / name / "checkpoints" / "best.ckpt" for name in ("quickstart_sop", "quickstart_dgfnet"))
    main(["test", "--config", str(sop), "--ckpt_path", str(own)])
    report = tmp_path / "quickstart_sop" / "report" / "report.md"
    written = report.read_text()
    assert "Model: `SoundOfPixels`" in written
    capsys.readouterr()
    with pytest.raises((ConfigError, SystemExit)) as error:
        main(["test", "--config", str(sop), "--ckpt_path", str(other)])
    message = str(error.value) if isinstance(error.value, ConfigError) else capsys.readouterr().err
    message = " ".join(message.split())
    assert f"checkpoint {other} holds a DGFNet network (avtoolkit.models.separation.dgfnet.DGFNet)" in message
    assert "the config builds a SoundOfPixels network (avtoolkit.models.separation.sop.SoundOfPixels)" in message
    assert report.read_text() == written  # the SoP report is not overwritten
