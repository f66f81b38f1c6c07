"""MediaLogger and W&B tracking: real offline W&B runs through the CLI, CSV files, TensorBoard, rank zero only."""

import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image

from avtoolkit.callbacks import MediaLogger
from avtoolkit.callbacks.media import (
    AUDIO,
    OVERLAYS,
    SPECTROGRAMS,
    Media,
    _segmentation_examples,
    overlay_image,
    palette,
    render_separation,
    write_media,
)
from avtoolkit.cli import main
from avtoolkit.data.audio import Spectrogram
from avtoolkit.data.batch import FRAMES, MASK_VALID, MASKS

CONFIGS = Path(__file__).parents[2] / "configs"
WANDB_CONFIG = CONFIGS / "trainer" / "wandb.yaml"
# Quick-start experiments shrunk to seconds: (network, task, data) init_args overrides.
TINY = {
    "quickstart_tpavi_s4": (
        {"backbone": "test_resnet", "backbone_weights": None, "audio_width": 0.0625, "audio_weights": None, "dim": 16},
        {},
        {},
    ),
    "quickstart_sop": (
        {"channels": 4, "unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}
        | {"backbone": "test_resnet", "backbone_weights": None},
        {"n_fft": 254, "hop_length": 128, "warp_bins": 32},
        {"window": 4095},
    ),
}


def tiny_experiment(tmp_path: Path, name: str, root: Path, media: bool = False) -> Path:
    """One training and one validation batch of 2 examples; logs and checkpoints under ``tmp_path``."""
    config = yaml.safe_load((CONFIGS / "experiment" / f"{name}.yaml").read_text())
    network, task, data = TINY[name]
    trainer = config["trainer"]
    trainer.update(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.update(log_every_n_steps=1, default_root_dir=str(tmp_path), enable_progress_bar=False)
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path)
    checkpoint = trainer["callbacks"][0]
    checkpoint["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    trainer["callbacks"] = [checkpoint] + ([{"class_path": "avtoolkit.callbacks.MediaLogger"}] if media else [])
    config["model"]["init_args"]["model"]["init_args"].update(network)
    config["model"]["init_args"].update(task)
    config["data"]["init_args"].update(root=str(root), image_size=32, batch_size=2, num_workers=0, **data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wandb_records(run_dir: Path) -> list:
    """The records of an offline run's ``.wandb`` file (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("*.wandb")
    data, block, position, pending, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # the tail of a block too short for a header is padding
            position += block - position % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk, position = data[position + 7 : position + 7 + length], position + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def finished_records(run_dir: Path, timeout: float = 30.0) -> list:
    """The run's records once W&B's service has written its exit record (it writes after ``finish`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(run_dir)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"no exit record in {run_dir} after {timeout} s"
        time.sleep(0.2)


def history_keys(records: list) -> set[str]:
    return {
        item.key or item.nested_key[0]  # media are nested: ("val_media/overlays", "_type"), ...
        for record in records
        if record.WhichOneof("record_type") == "history"
        for item in record.history.item
    }


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode, every file it writes under ``tmp_path``; the run is finished afterwards."""
    wandb = pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    yield wandb
    wandb.finish()


@pytest.mark.parametrize("name", ["quickstart_tpavi_s4", "quickstart_sop"])
def test_offline_wandb_run_has_media_config_and_metrics(name, offline_wandb, avsbench_trees, music_tree, tmp_path):
    root = avsbench_trees["s4"] if "s4" in name else music_tree
    experiment = tiny_experiment(tmp_path, name, root)
    args = ["fit", "--config", str(experiment), "--config", str(WANDB_CONFIG)]
    main([*args, "--trainer.logger.init_args.save_dir", str(tmp_path)])
    offline_wandb.finish()

    (run,) = tmp_path.glob("wandb/offline-run-*")
    media = run / "files" / "media"
    if "s4" in name:
        overlays = sorted((media / "images" / OVERLAYS).parent.glob("overlays_*.png"))
        assert len(overlays) == 2  # n_examples
        image = np.asarray(Image.open(overlays[0]).convert("RGB"))
        assert image.shape[0] == 3 * 32 + 4 * 2  # frame, prediction and truth rows of 32-px frames
        expected = {"val_media/overlays", "val/mj", "val/mf", "val/loss", "train/loss"}
    else:
        assert len(list((media / "images" / SPECTROGRAMS).parent.glob("spectrograms_*.png"))) == 2
        wavs = sorted((media / "audio" / AUDIO).parent.glob("audio_*.wav"))
        assert len(wavs) == 2 * (1 + 2 + 2)  # per mixture: itself, 2 estimates, 2 truths
        wave, rate = sf.read(wavs[0])
        assert rate == 11025 and wave.shape == (4095,) and np.abs(wave).max() <= 1.0
        expected = {"val_media/spectrograms", "val_media/audio", "val/sdr", "val/sdri", "val/loss", "train/loss"}

    records = finished_records(run)
    assert expected <= history_keys(records)
    config = {
        item.key: json.loads(item.value_json)
        for record in records
        if record.WhichOneof("record_type") == "config"
        for item in record.config.update
    }
    parsed = config["config"]  # the full parsed config, from LoggerSaveConfigCallback
    assert parsed["model"]["class_path"].startswith("avtoolkit.tasks.")
    assert parsed["data"]["init_args"]["root"] == str(root)
    assert parsed["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    callbacks = [callback["class_path"] for callback in parsed["trainer"]["callbacks"]]
    assert callbacks == ["lightning.pytorch.callbacks.ModelCheckpoint", "avtoolkit.callbacks.MediaLogger"]
    assert "model" in config and "optimizer" in config  # the task's own hyperparameters, logged by Lightning
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()  # the experiment's callbacks were kept


def test_wandb_overlay_keeps_every_experiment_setting_but_the_logger(capsys):
    experiment = CONFIGS / "experiment" / "quickstart_sop.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(experiment), "--config", str(WANDB_CONFIG), "--print_config"])
    assert exit_info.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert trainer["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert trainer["logger"]["init_args"]["name"] is None  # not the CSV logger's "logs"
    assert trainer["logger"]["init_args"]["project"] == "avtoolkit"
    assert trainer["logger"]["init_args"]["log_model"] is False
    names = [callback["class_path"].rsplit(".", 1)[-1] for callback in trainer["callbacks"]]
    assert names == ["ModelCheckpoint", "SeparationReport", "MediaLogger"]
    assert trainer["max_epochs"] == 20 and trainer["default_root_dir"] == "runs/quickstart_sop"


def test_csv_logger_gets_media_files_and_the_config(music_tree, tmp_path):
    main(["fit", "--config", str(tiny_experiment(tmp_path, "quickstart_sop", music_tree, media=True))])
    folder = tmp_path / "logs" / "version_0" / "media" / "epoch_000"
    names = {path.name for path in folder.iterdir()}
    assert {"spectrograms_example1.png", "spectrograms_example2.png", "example1_mixture.wav"} <= names
    assert len([name for name in names if name.endswith(".wav")]) == 2 * 5
    assert sum("estimate" in name for name in names) == sum("truth" in name for name in names) == 2 * 2
    image = Image.open(folder / "spectrograms_example1.png")
    assert image.mode == "RGB" and image.width > image.height
    hparams = yaml.safe_load((tmp_path / "logs" / "version_0" / "hparams.yaml").read_text())
    assert hparams["config"]["data"]["init_args"]["root"] == str(music_tree)


# -- units: rendering, writers, cadence, rank zero ----------------------------------------------------------------


def example_media() -> Media:
    return Media(
        images={OVERLAYS: [("example1", np.full((8, 12, 3), 200, np.uint8))]},
        audio=[("example1 mixture", np.linspace(-0.5, 0.5, 800, dtype=np.float32))],
        sample_rate=8000,
    )


def test_overlay_image_draws_prediction_and_truth_over_valid_frames():
    frames = torch.zeros(3, 3, 4, 4)
    prediction = torch.ones(3, 4, 4, dtype=torch.long)
    truth = torch.zeros(3, 4, 4, dtype=torch.long)
    image = overlay_image(frames, prediction, truth, torch.tensor([True, False, True]), num_classes=1)
    assert image.shape == (3 * 4 + 4 * 2, 2 * 4 + 3 * 2, 3) and image.dtype == np.uint8  # 2 valid frames
    panel = image[2 + 4 + 2 : 2 + 4 + 2 + 4, 2 : 2 + 4]  # second row (prediction), first column
    assert np.allclose(panel, palette(2)[1] * 0.5, atol=1)  # half the mask colour over a black frame
    assert (image[-2 - 4 : -2, 2 : 2 + 4] == 0).all()  # an empty truth leaves the frame as it is


def test_render_separation_audio_captions_and_headroom():
    example = {
        "mixture": torch.randn(1024),
        "sources": torch.randn(2, 1024) * 3,  # louder than full scale
        "estimates": torch.randn(2, 1024),
        "labels": torch.tensor([1, 0]),
    }
    media = render_separation([example], 8000, Spectrogram(128, 64, None), ["cello", "violin"])
    captions = [caption for caption, _ in media.audio]
    assert captions == [
        "example1 mixture",
        "example1 violin estimate",
        "example1 cello estimate",
        "example1 violin truth",
        "example1 cello truth",
    ]
    assert max(float(np.abs(wave).max()) for _, wave in media.audio) == pytest.approx(1.0)
    ((caption, image),) = media.images[SPECTROGRAMS]
    assert caption == "example1" and image.ndim == 3 and image.shape[2] == 3


def test_validation_outputs_are_used_when_the_step_returns_them():
    def not_called(*args):
        raise AssertionError("the task must not run again")

    task = SimpleNamespace(num_classes=1, scores=not_called, forward=not_called)
    batch = {
        FRAMES: torch.rand(3, 2, 3, 4, 4),
        MASKS: torch.zeros(3, 2, 4, 4, dtype=torch.long),
        MASK_VALID: torch.ones(3, 2, dtype=torch.bool),
    }
    scores = torch.full((3, 2, 1, 4, 4), 5.0)
    examples = _segmentation_examples(task, batch, {"scores": scores}, wanted=2)
    assert len(examples) == 2 and bool((examples[0]["prediction"] == 1).all())


def test_files_without_a_logger_and_with_csv(tmp_path):
    trainer = SimpleNamespace(loggers=[], default_root_dir=str(tmp_path), current_epoch=3, global_step=7)
    write_media(trainer, example_media())
    assert {p.name for p in (tmp_path / "media" / "epoch_003").iterdir()} == {
        "overlays_example1.png",
        "example1_mixture.wav",
    }
    csv = CSVLogger(tmp_path / "csv")
    write_media(SimpleNamespace(**{**vars(trainer), "loggers": [csv]}), example_media())
    wave, rate = sf.read(Path(csv.log_dir) / "media" / "epoch_003" / "example1_mixture.wav")
    assert rate == 8000 and wave.shape == (800,)


def test_tensorboard_gets_images_and_audio(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    trainer = SimpleNamespace(loggers=[logger], default_root_dir=str(tmp_path), current_epoch=0, global_step=7)
    write_media(trainer, example_media())
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "audio": 0})
    events.Reload()
    assert events.Tags()["images"] == [f"{OVERLAYS}/example1"]
    assert events.Tags()["audio"] == [f"{AUDIO}/example1_mixture"]
    (image,) = events.Images(f"{OVERLAYS}/example1")
    assert image.step == 7 and (image.width, image.height) == (12, 8)
    assert not (tmp_path / "media").exists()


def stub_trainer(is_global_zero: bool, sanity_checking: bool = False) -> SimpleNamespace:
    return SimpleNamespace(is_global_zero=is_global_zero, sanity_checking=sanity_checking)


def test_only_rank_zero_logs():
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"rank > 0 touched the task ({name})")

    callback = MediaLogger(every_n_epochs=1)
    trainer, task = stub_trainer(is_global_zero=False), Untouchable()
    callback.on_validation_epoch_start(trainer, task)
    callback.on_validation_batch_end(trainer, task, None, {}, 0)
    callback.on_validation_epoch_end(trainer, task)
    assert not callback.active and callback.examples == []


def test_cadence_skips_sanity_checks_and_survives_a_resume():
    callback = MediaLogger(every_n_epochs=2)
    active = []
    for sanity in (True, False, False, False, False):
        callback.on_validation_epoch_start(stub_trainer(True, sanity), None)
        active.append(callback.active)
    assert active == [False, False, True, False, True]
    resumed = MediaLogger(every_n_epochs=2)
    resumed.load_state_dict(callback.state_dict())
    resumed.on_validation_epoch_start(stub_trainer(True), None)
    assert not resumed.active  # the 5th run


def test_bad_arguments_and_tasks_are_clear_errors():
    with pytest.raises(ValueError, match="n_examples"):
        MediaLogger(n_examples=0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        MediaLogger(every_n_epochs=0)
    with pytest.raises(TypeError, match="AVSegmentationTask or an AVSeparationTask, got LightningModule"):
        MediaLogger().setup(SimpleNamespace(), LightningModule(), "fit")
