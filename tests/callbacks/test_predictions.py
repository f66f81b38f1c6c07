"""`avtoolkit predict` on your own media end to end: tiny networks, a generated MP4, what PredictionWriter writes."""

import re
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from fixtures.make_media import write_corrupt, write_picture, write_video
from torchvision.io import decode_image

from avtoolkit.callbacks.predictions import PredictionWriter
from avtoolkit.cli import lightning_cli, main
from avtoolkit.data.batch import MIXTURE
from avtoolkit.data.media import MediaSeparationDataModule
from avtoolkit.data.video import decode_audio_track

CONFIGS = Path(__file__).parents[2] / "configs" / "experiment"
WRITER = "--trainer.callbacks+=avtoolkit.callbacks.predictions.PredictionWriter"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "video": write_video(root / "clip.mp4"),  # 3 s, 48×64, 440 Hz tone
        "guitar": write_picture(root / "guitar.png", (200, 40, 40)),
        "flute": write_picture(root / "flute.jpg", (40, 40, 200)),
        "corrupt": write_corrupt(root / "broken.mp4"),
    }


def tiny_config(tmp_path: Path, quickstart: str, network: dict, task: dict, data: dict) -> Path:
    """A quick-start experiment with a tiny random-init network (its data section is replaced on the CLI)."""
    config = yaml.safe_load((CONFIGS / f"{quickstart}.yaml").read_text())
    config["trainer"].update(logger=False, default_root_dir=str(tmp_path))
    for callback in config["trainer"]["callbacks"]:
        callback["init_args"]["dirpath"] = str(tmp_path / "unused")
    config["model"]["init_args"]["model"]["init_args"].update(network)
    config["model"]["init_args"].update(task)
    config["data"]["init_args"].update(data)
    path = tmp_path / f"{quickstart}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def checkpoint(config: Path, path: Path, weights: dict[str, float]) -> Path:
    """A checkpoint of the config's network with some parameters set to constants (to know what it predicts)."""
    cli = lightning_cli(["--config", str(config)], run=False)
    state = cli.model.state_dict()
    for name, value in weights.items():
        state[name].fill_(value)
    cli.trainer.strategy.connect(cli.model)
    cli.trainer.save_checkpoint(path)
    return path


def segmentation_config(tmp_path: Path) -> Path:
    # Random init throughout (the quick start points audio_weights and backbone_weights at pre-trained files).
    network = {
        "backbone": "test_resnet",
        "backbone_weights": None,
        "audio_width": 0.0625,
        "audio_weights": None,
        "dim": 16,
    }
    return tiny_config(tmp_path, "quickstart_tpavi_s4", network, {}, {"image_size": 32, "num_workers": 0})


def separation_config(tmp_path: Path) -> Path:
    network = {"channels": 4, "unet_depth": 3, "unet_base_channels": 4, "unet_max_channels": 8}
    network.update(backbone="test_resnet", backbone_weights=None)
    task = {"n_fft": 254, "hop_length": 128, "warp_bins": 32}
    data = {"window": 4095, "image_size": 32, "batch_size": 4, "num_workers": 0}
    return tiny_config(tmp_path, "quickstart_sop", network, task, data)


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], float(stream.average_rate)


def predict(config: Path, datamodule: str, out: Path, *args: str) -> None:
    data = ["--data", f"avtoolkit.data.media.{datamodule}"]
    main(["predict", "--config", str(config), *data, *args, WRITER, "--trainer.callbacks.output_dir", str(out)])


def test_segmentation_writes_mask_overlays_as_pngs_and_an_mp4(media, tmp_path):
    config = segmentation_config(tmp_path)
    # A head that says "sounding" everywhere: every mask is all ones, so the checkpoint is seen to be used.
    ckpt = checkpoint(config, tmp_path / "seg.ckpt", {"model.head.3.weight": 0.0, "model.head.3.bias": 100.0})
    video = ["--data.video", str(media["video"]), "--data.frame_rate", "2", "--ckpt_path", str(ckpt)]
    predict(config, "MediaSegmentationDataModule", tmp_path / "out", *video)
    folder = tmp_path / "out" / "clip"
    names = [f"{i:06d}.png" for i in range(1, 7)]  # 3 s at 2 masks per second
    assert sorted(p.name for p in (folder / "overlays").iterdir()) == names
    assert sorted(p.name for p in (folder / "masks").iterdir()) == names
    overlays = [decode_image(str(folder / "overlays" / name)) for name in names]
    assert all(o.shape == (3, 48, 64) for o in overlays)  # the video's size (under overlay_height)
    assert all(int(o[1:].max()) <= 128 for o in overlays)  # 50 % of the class colour (128, 0, 0) everywhere
    masks = [decode_image(str(folder / "masks" / name)) for name in names]
    assert all(m.shape == (1, 48, 64) and bool((m == 255).all()) for m in masks)
    frames, rate = read_video(folder / "overlay.mp4")
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3) and rate == 2.0
    # In time order: video frame i is overlay PNG i (the square moves, so the frames differ).
    errors = torch.tensor(
        [[np.abs(f.astype(float) - o.permute(1, 2, 0).numpy()).mean() for o in overlays] for f in frames]
    )
    assert torch.equal(errors.argmin(1), torch.arange(6))
    assert not list(tmp_path.glob("out/**/*.tmp"))  # no temporary leftovers


def test_separation_writes_one_wav_per_picture_as_long_as_the_input(media, tmp_path):
    config = separation_config(tmp_path)
    # Masks of ones: each source is the whole mixture, so the stitched windows must give back the input.
    ckpt = checkpoint(config, tmp_path / "sep.ckpt", {"model.fusion.scale": 0.0, "model.fusion.bias": 100.0})
    images = f"[{media['guitar']}, {media['flute']}]"
    args = ["--data.video", str(media["video"]), "--data.images", images, "--ckpt_path", str(ckpt)]
    predict(config, "MediaSeparationDataModule", tmp_path / "out", *args)
    folder = tmp_path / "out" / "clip"
    assert sorted(p.name for p in folder.iterdir()) == ["flute.wav", "guitar.wav"]
    mixture = decode_audio_track(media["video"], 11025).numpy()
    for name in ("guitar", "flute"):
        wave, rate = sf.read(folder / f"{name}.wav", dtype="float32")
        assert rate == 11025 and wave.shape == mixture.shape  # the whole file, windows cross-faded
        np.testing.assert_allclose(wave, mixture, atol=1e-4)
    # Without pictures the video's frames show the one source (random-init network: only the files are checked).
    predict(config, "MediaSeparationDataModule", tmp_path / "alone", "--data.video", str(media["video"]))
    (wav,) = (tmp_path / "alone" / "clip").iterdir()
    assert wav.name == "clip.wav" and sf.info(str(wav)).frames == mixture.shape[0]


def test_bad_media_fails_before_predicting_with_the_file_named(media, tmp_path, capsys):
    config = separation_config(tmp_path)
    missing = f"[{media['guitar']}, {tmp_path / 'cello.png'}]"
    cases = [
        (["--data.video", str(media["corrupt"])], r"broken\.mp4.*corrupt"),
        (["--data.video", str(media["video"]), "--data.images", missing], r"cello\.png"),
    ]
    for args, named in cases:  # the command prints the DatasetError as one `error: ...` line and exits with 2
        with pytest.raises(SystemExit) as exit_info:
            predict(config, "MediaSeparationDataModule", tmp_path / "out", *args)
        assert exit_info.value.code == 2
        assert re.search(rf"^error: .*{named}", capsys.readouterr().err, re.MULTILINE)
    assert not (tmp_path / "out").exists()


def test_overlapping_windows_are_cross_faded_back_into_the_input(media, tmp_path):
    """The writer alone: an identity "network" (estimates = the window) gives the input back, any overlap."""
    for overlap in (0.0, 0.6):
        dm = MediaSeparationDataModule(media["video"], images=[media["guitar"]], window=1000, overlap=overlap)
        dm.setup("predict")
        writer = PredictionWriter(tmp_path / f"overlap{overlap}")
        trainer = SimpleNamespace(datamodule=dm)
        writer.on_predict_epoch_start(trainer, None)
        for i, batch in enumerate(dm.predict_dataloader()):
            estimates = torch.stack([batch[MIXTURE], -batch[MIXTURE]], 1)
            writer.write_on_batch_end(trainer, None, {"estimates": estimates}, None, batch, i, 0)
        dm.source_names = ["same", "negated"]
        writer.write_on_epoch_end(trainer, None, [], [])
        mixture = decode_audio_track(media["video"], 11025).numpy()
        same, _ = sf.read(tmp_path / f"overlap{overlap}" / "clip" / "same.wav", dtype="float32")
        negated, _ = sf.read(tmp_path / f"overlap{overlap}" / "clip" / "negated.wav", dtype="float32")
        np.testing.assert_allclose(same, mixture, atol=1e-6)
        np.testing.assert_allclose(negated, -mixture, atol=1e-6)
