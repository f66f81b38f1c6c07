"""The `avtoolkit` command: help, version, every shipped config, a real fit/test, the data commands."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from avtoolkit import __version__
from avtoolkit.cli import lightning_cli, main
from avtoolkit.errors import ConfigError
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

CONFIGS = Path(__file__).parents[1] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiment").glob("*.yaml"))
PARTS = {kind: sorted((CONFIGS / kind).glob("*.yaml")) for kind in ("model", "data", "trainer")}


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    expected = {
        ("--help",): "avtoolkit data --help",  # the training CLI points to the data commands
        ("fit", "--help"): "--model.help",
        ("data", "--help"): "synth",
        ("data", "synth", "--help"): "Generate a built-in synthetic dataset",
        ("data", "features", "--help"): "Fill the feature caches an experiment's datamodule reads",
    }
    for args, text in expected.items():
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        assert exit_info.value.code == 0
        assert text in " ".join(capsys.readouterr().out.split())


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "avtoolkit", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in result.stdout


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["class_path"].startswith("avtoolkit.")


@pytest.mark.parametrize("config", [p for p in EXPERIMENTS if p.stem.startswith("quickstart")], ids=lambda p: p.stem)
def test_quickstart_configs_build(config, quickstart_audio_weights, quickstart_backbone_weights, tmp_path, monkeypatch):
    # Each quick start as shipped, from a checkout where `make demo` made the weight files its config names
    # (here 1-step ones): a weight path the fixtures do not provide fails the build.
    weights = tmp_path / "data" / "weights"
    weights.mkdir(parents=True)
    for made in (quickstart_audio_weights, quickstart_backbone_weights):
        (weights / made.name).symlink_to(made)
    monkeypatch.chdir(tmp_path)
    cli = lightning_cli(["--config", str(config), "--trainer.logger", "false"], run=False)
    segmentation = "favs" in config.stem or "tpavi" in config.stem
    assert isinstance(cli.model, AVSegmentationTask if segmentation else AVSeparationTask)
    assert cli.datamodule is not None


def test_a_quickstart_without_its_weights_names_the_command_that_makes_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no data/weights
    command = re.escape("avtoolkit pretrain backbone data/weights/resnet18_synth_64.pt")
    for name in ("quickstart_sop", "quickstart_clipsep", "quickstart_hfra", "quickstart_dgfnet"):
        with pytest.raises(ConfigError, match=command):
            lightning_cli(["--config", str(CONFIGS / "experiment" / f"{name}.yaml")], run=False)


@pytest.mark.parametrize("kind", ["model", "data", "trainer"])
def test_config_parts_parse(kind, capsys):
    defaults = {"model": PARTS["model"][0], "data": PARTS["data"][0], "trainer": CONFIGS / "trainer" / "default.yaml"}
    for part in PARTS[kind]:
        # An overlay (e.g. trainer/wandb.yaml: `trainer:` at the top, appends callbacks) is a second --config.
        overlay = set(yaml.safe_load(part.read_text())) == {kind}
        chosen = {**defaults, kind: defaults[kind] if overlay else part}
        args = [f"--{k}={v}" for k, v in chosen.items()] + (["--config", str(part)] if overlay else [])
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *args, "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["class_path"].startswith("avtoolkit.")


def tiny_config(tmp_path: Path, root: Path) -> Path:
    """The quick-start experiment shrunk to seconds: tiny networks, short windows, a few batches."""
    config = yaml.safe_load((CONFIGS / "experiment" / "quickstart_sop.yaml").read_text())
    trainer = config["trainer"]
    # the quick start's logs, checkpoints and report follow trainer.default_root_dir
    trainer.update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, default_root_dir=str(tmp_path))
    network = config["model"]["init_args"]["model"]["init_args"]
    network.update(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8)
    network.update(backbone="test_resnet", backbone_weights=None)
    config["model"]["init_args"].update(n_fft=254, hop_length=128, warp_bins=32)
    config["data"]["init_args"].update(root=str(root), window=4095, image_size=32, batch_size=2, num_workers=0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_test_and_reload_through_the_cli(synthetic_music, tmp_path, capsys):
    config = tiny_config(tmp_path / "config", synthetic_music)
    out = tmp_path / "moved"  # one option moves every output of the run: logs, checkpoints, report
    main(["fit", "--config", str(config), "--trainer.default_root_dir", str(out)])
    best = out / "checkpoints" / "best.ckpt"
    assert best.is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert list(out.glob("logs/version_0/metrics.csv")) and sorted(tmp_path.iterdir()) == [tmp_path / "config", out]
    # fit ends with the best checkpoint, its score, and the command that tests it
    *_, line, hint = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"Best checkpoint: {re.escape(str(best.resolve()))} \(val/sdr = -?[\d.]+(e-?\d+)?\)", line)
    assert hint == f"Test it: avtoolkit test --config {config} --ckpt_path {best}"
    main(["test", "--config", str(config), "--ckpt_path", str(best), "--trainer.default_root_dir", str(out)])
    report = (out / "report" / "report.md").read_text()
    assert "| model |" in report and "SDRi" in report
    # test ends with the report's path (the last line of `make demo`)
    assert capsys.readouterr().out.splitlines()[-1] == f"Report: {(out / 'report' / 'report.md').resolve()}"
    assert sorted(tmp_path.iterdir()) == [tmp_path / "config", out]
    task = AVSeparationTask.load_from_checkpoint(best)  # the CLI saved the network's config
    assert isinstance(task, AVSeparationTask)
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(task.state_dict()["model.fusion.scale"], state["model.fusion.scale"])


def test_data_commands_generate_and_check(tmp_path, capsys):
    main(["data", "synth", "s4", str(tmp_path / "s4"), "--size", "tiny", "--workers", "1"])
    assert "s4 dataset ready" in capsys.readouterr().out
    main(["data", "check", "s4", str(tmp_path / "s4")])
    assert "error" not in capsys.readouterr().out.lower().split("errors")[0]


def test_check_exits_non_zero_on_a_broken_tree(tmp_path, capsys):
    from fixtures.make_avsbench import make_s4

    broken = make_s4(tmp_path / "s4", broken=["missing_frame"])
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", "s4", str(tmp_path / "s4")])
    assert exit_info.value.code == 1
    assert Path(broken["missing_frame"]).name in capsys.readouterr().out


def test_features_command_fills_the_caches_of_the_experiment_datamodule(avsbench_trees, tmp_path, capsys):
    data = {
        "class_path": "avtoolkit.data.datamodules.SegmentationDataModule",
        "init_args": {"dataset": "s4", "root": str(avsbench_trees["s4"]), "image_size": 32, "num_workers": 0},
    }
    experiment = tmp_path / "experiment.yaml"  # only the data section is built: the model is never instantiated
    experiment.write_text(yaml.safe_dump({"model": {"class_path": "not.a.Task"}, "data": data}))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "features", str(experiment), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert re.match(rf"error: {re.escape(str(experiment))}: .* set data\.init_args\.cache_dir", capsys.readouterr().err)
    overlay = tmp_path / "cache.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"init_args": {"cache_dir": str(tmp_path / "cache")}}}))
    command = ["data", "features", str(experiment), "--overlay", str(overlay), "--device", "cpu"]
    main(command)
    out = capsys.readouterr().out
    assert f"s4 tree {avsbench_trees['s4']}:" in out
    assert "log-mel: 7 entries, 7 computed now, 0 already cached" in out and str(tmp_path / "cache" / "log_mel") in out
    main(command)
    assert "log-mel: 7 entries, 0 computed now, 7 already cached" in capsys.readouterr().out
    trainer_only = tmp_path / "trainer.yaml"
    trainer_only.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "features", str(trainer_only)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {trainer_only} has no `data` section")
