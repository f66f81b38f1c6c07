"""Every error a user can fix is one `error:` message (what, where, how to fix) and exit status 2, no traceback."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from avtoolkit.cli import lightning_cli, main, user_error_message
from avtoolkit.errors import ConfigError, DatasetError

CONFIGS = Path(__file__).parents[1] / "configs" / "experiment"
SOP = CONFIGS / "quickstart_sop.yaml"
FAVS = CONFIGS / "quickstart_favs_s4.yaml"
NETWORK = "--model.init_args.model.init_args"


def user_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run `avtoolkit ARGS`, expect a user error: exit status 2 and one `error:` block on stderr; return it."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1, err
    assert "Traceback" not in err and "usage:" not in err, err
    return err


def test_a_typo_on_the_command_line_names_the_closest_option(capsys):
    err = user_error(capsys, ["fit", "--config", str(SOP), "--model.init_args.mask_threshhold", "0.5"])
    assert err.startswith("error: unknown option --model.init_args.mask_threshhold: AVSeparationTask has no option")
    assert "did you mean --model.init_args.mask_threshold?" in err
    err = user_error(capsys, ["fit", "--config", str(SOP), "--trainer.max_epocs", "3"])
    assert "unknown option --trainer.max_epocs: did you mean --trainer.max_epochs" in err
    err = user_error(capsys, ["fit", "--config", str(FAVS), f"{NETWORK}.backbone_weightz", "x.pt"])
    assert f"did you mean {NETWORK}.backbone_weights" in err and "avtoolkit fit --model.help FAVS" in err


def test_a_typo_in_a_config_file_names_the_file_line_and_closest_key(tmp_path, capsys):
    text = SOP.read_text().replace("    mask: binary\n", "    mask: binary\n    mask_threshhold: 0.5\n")
    config = tmp_path / "typo.yaml"
    config.write_text(text)
    line = text.splitlines().index("    mask_threshhold: 0.5") + 1
    err = user_error(capsys, ["fit", "--config", str(config)])
    assert f"unknown key 'mask_threshhold' ({config}, line {line}, under model)" in err
    assert "did you mean mask_threshold?" in err
    trainer_typo = yaml.safe_load(SOP.read_text())
    trainer_typo["trainer"]["max_epocs"] = 3
    config.write_text(yaml.safe_dump(trainer_typo))
    err = user_error(capsys, ["fit", "--config", str(config)])
    assert "unknown key trainer.max_epocs" in err and "did you mean trainer.max_epochs" in err


def test_a_missing_config_or_checkpoint_is_named_with_what_to_do(capsys):
    err = user_error(capsys, ["fit", "--config", str(CONFIGS / "quickstart_sopp.yaml")])
    assert f"config file not found: {CONFIGS / 'quickstart_sopp.yaml'}; did you mean quickstart_sop.yaml" in err
    err = user_error(capsys, ["test", "--config", str(SOP), "--ckpt_path", "runs/nowhere/best.ckpt"])
    assert err.startswith("error: checkpoint not found: runs/nowhere/best.ckpt (--ckpt_path).")
    assert f"train first, with avtoolkit fit --config {SOP}" in err


def test_a_bad_value_and_an_unknown_class_or_command(capsys):
    err = user_error(capsys, ["fit", "--config", str(SOP), "--trainer.max_epochs", "many"])
    assert "invalid value for trainer.max_epochs (on the command line): expected int or null, got 'many'" in err
    err = user_error(capsys, ["fit", "--config", str(SOP), "--model.init_args.model", "SoundOfPixelz"])
    assert "unknown class SoundOfPixelz (model.init_args.model): did you mean SoundOfPixels?" in err
    assert "did you mean fit?" in user_error(capsys, ["fitt", "--config", str(SOP)])
    err = user_error(capsys, ["data", "synth", "s4", "somewhere", "--sizes", "tiny"])
    assert "unknown option --sizes: did you mean --size" in err and "avtoolkit data synth --help" in err
    err = user_error(capsys, ["data", "synht", "s4", "somewhere"])
    assert err.startswith("error: unknown command `data synht`; did you mean synth?")


def test_missing_encoder_weights_are_listed_at_once_with_the_commands_that_make_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fresh clone: nothing generated yet
    err = user_error(capsys, ["fit", "--config", str(FAVS)])
    assert err.splitlines() == [
        "error: weight files named by the config do not exist:",
        "  data/weights/resnet18_synth_64.pt  (model.init_args.model.init_args.backbone_weights)",
        "  data/weights/vggish_s4_w025.pt     (model.init_args.model.init_args.audio_weights)",
        "Make them with (from the config's comments):",
        "  avtoolkit data synth s4 data/synthetic/s4 --size small --holdout true",
        "  avtoolkit pretrain vggish data/synthetic/s4 data/weights/vggish_s4_w025.pt --width 0.25",
        "  avtoolkit pretrain backbone data/weights/resnet18_synth_64.pt --held_out_pictures openclipart",
        "Or start from random weights: set the option to null "
        "(e.g. --model.init_args.model.init_args.backbone_weights null).",
    ]
    # Without commands in the config's comments, they are derived from the config.
    config = yaml.safe_load(FAVS.read_text())
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(config))
    err = user_error(capsys, ["fit", "--config", "bare.yaml", f"{NETWORK}.backbone_weights", "null"])
    assert "  avtoolkit pretrain vggish data/synthetic/s4 data/weights/vggish_s4_w025.pt --width 0.25" in err
    assert "backbone_weights" not in err.split("Make them")[0], "null is no file"


def test_null_on_the_command_line_is_none_for_a_nested_network(quickstart_audio_weights):
    cli = lightning_cli(
        [
            "--config",
            str(FAVS),
            f"{NETWORK}.backbone_weights",
            "null",
            f"{NETWORK}.audio_weights={quickstart_audio_weights}",
            "--trainer.logger",
            "false",
        ],
        run=False,
    )
    assert cli.config["model"]["init_args"]["model"]["init_args"]["backbone_weights"] is None


def test_debug_shows_the_traceback_and_a_bug_keeps_it(tmp_path, monkeypatch, capsys):
    err = user_error(capsys, ["pretrain", "vggish", str(tmp_path / "nowhere"), str(tmp_path / "w.pt")])
    assert str(tmp_path / "nowhere") in err and len(err.splitlines()) <= 3
    with pytest.raises(ConfigError, match=re.escape("did you mean --model.init_args.mask_threshold")):
        main(["fit", "--config", str(SOP), "--model.init_args.mask_threshhold", "0.5", "--debug"])
    monkeypatch.setenv("AVTOOLKIT_DEBUG", "1")
    with pytest.raises(DatasetError):
        main(["pretrain", "vggish", str(tmp_path / "nowhere"), str(tmp_path / "w.pt")])
    monkeypatch.delenv("AVTOOLKIT_DEBUG")

    def bug(*args, **kwargs):
        raise ValueError("a bug, not the user's")

    monkeypatch.setattr("avtoolkit.data.check.check_tree", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["data", "check", "s4", str(tmp_path)])


def test_help_lists_every_command_and_starts_without_torch():
    probe = (
        "import sys\n"
        "from avtoolkit.cli import main\n"
        "for args in (['--help'], ['data', '--help'], ['pretrain', '--help'], ['list', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, args\n"
        "print('heavy:', sorted(m for m in ('torch', 'lightning', 'timm', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "heavy: []"
    top = result.stdout.split("usage: avtoolkit data")[0]
    for command in ("fit", "validate", "test", "predict", "data synth", "data prepare", "data check"):
        assert f"\n  {command} " in top
    for command in ("data features", "pretrain vggish", "pretrain backbone", "list models", "list configs", "--debug"):
        assert f"\n  {command} " in top


def test_list_models_and_configs_one_line_each(tmp_path, monkeypatch, capsys):
    main(["list", "models"])
    out = capsys.readouterr().out
    for name in ("FAVS", "TPAVINet", "SoundOfPixels", "CLIPSep", "HFRA", "DGFNet"):
        [line] = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(line.split()) > 2, "with its description"
    monkeypatch.chdir(CONFIGS.parents[1])
    main(["list", "configs"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list(CONFIGS.glob("*.yaml"))) + 1 and all(len(line) <= 120 for line in lines)
    described = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in lines[:-1]}
    assert described["favs_s4_224"] == "FAVS on AVSBench S4 at 224² (paper: M_J 85.6 / M_F 92.2 with Swin-B)."
    assert lines[-1] == "Train with one: avtoolkit fit --config configs/experiment/NAME.yaml"
    monkeypatch.chdir(tmp_path)  # no configs/ here (an installed package has none): the checkout's are listed
    main(["list", "configs"])
    assert capsys.readouterr().out.startswith(f"(no configs/experiment in {tmp_path}: listing the source checkout's")
    err = user_error(capsys, ["list", "configs", "--folder", str(tmp_path / "mine")])
    assert f"no experiment configs in {tmp_path / 'mine'}" in err


def test_model_help_takes_a_task_or_a_network_by_its_short_name(capsys):
    for name, option in (("AVSegmentationTask", "--model.backbone_lr_multiplier"), ("FAVS", "--model.audio_weights")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--model.help", name])
        assert exit_info.value.code == 0
        assert option in capsys.readouterr().out


class BrokenClips(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            raise RuntimeError("low-level decoder message")
        except RuntimeError as err:
            raise DatasetError(f"cannot decode clip{index}.png: {err}. Re-create or remove it.") from err


def test_an_error_in_a_dataloader_worker_is_reported_as_its_own_message():
    with pytest.raises(DatasetError) as error:
        next(iter(torch.utils.data.DataLoader(BrokenClips(), num_workers=1)))
    assert "Traceback" in str(error.value)  # torch puts the worker's traceback in the message
    assert user_error_message(error.value) == (
        "error: cannot decode clip0.png: low-level decoder message. Re-create or remove it. "
        "(in DataLoader worker process 0)"
    )
