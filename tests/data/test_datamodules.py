import pickle

import pytest
import torch

from avtoolkit.data.batch import (
    AUDIO,
    FRAMES,
    LABELS,
    MASK_VALID,
    MASKS,
    MIXTURE,
    MIXTURE_EMB,
    SOURCES,
    VISUAL_EMB,
    WAVEFORM,
    WAVEFORM_LENGTH,
)
from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule


def first_batch(datamodule, stage="fit", loader="train_dataloader"):
    datamodule.setup(stage)
    batch = next(iter(getattr(datamodule, loader)()))
    return datamodule.on_after_batch_transfer(batch, 0)


def test_separation_batches(music_tree):
    dm = SeparationDataModule(music_tree, window=8191, image_size=24, batch_size=2, num_workers=0)
    batch = first_batch(dm)
    assert batch[MIXTURE].shape == (2, 8191) and batch[SOURCES].shape == (2, 2, 8191)
    assert batch[FRAMES].shape == (2, 2, 3, 3, 24, 24) and batch[FRAMES].dtype == torch.float32
    assert float(batch[FRAMES].min()) >= 0.0 and float(batch[FRAMES].max()) <= 1.0
    assert batch[LABELS].shape == (2, 2)
    assert dm.class_names == ("accordion", "cello", "violin")
    val_a = first_batch(dm, "validate", "val_dataloader")
    val_b = first_batch(dm, "validate", "val_dataloader")
    assert torch.equal(val_a[MIXTURE], val_b[MIXTURE])  # fixed evaluation mixtures
    assert len(dm.train_dataloader()) == 3  # 6 training clips, batches of 2, last incomplete one dropped


def test_separation_workers_give_the_same_evaluation_batches(music_tree):
    kwargs = {"window": 8191, "image_size": 24, "batch_size": 3}
    single = first_batch(SeparationDataModule(music_tree, num_workers=0, **kwargs), "test", "test_dataloader")
    workers = first_batch(SeparationDataModule(music_tree, num_workers=2, **kwargs), "test", "test_dataloader")
    assert all(torch.equal(single[k], workers[k]) for k in single)


@pytest.mark.parametrize(("name", "frames"), [("s4", 5), ("ms3", 5), ("avss", 10)])
def test_segmentation_batches_get_log_mel_on_the_device(avsbench_trees, name, frames):
    dm = SegmentationDataModule(name, avsbench_trees[name], image_size=32, batch_size=2, num_workers=0)
    batch = first_batch(dm, "test", "test_dataloader")
    assert batch[FRAMES].shape == (2, frames, 3, 32, 32) and batch[FRAMES].dtype == torch.float32
    assert batch[AUDIO].shape == (2, frames, 1, 96, 64)
    assert batch[WAVEFORM].shape == (2, frames * 16000)
    assert batch[MASKS].shape == (2, frames, 32, 32) and batch[MASK_VALID].shape == (2, frames)
    assert torch.isfinite(batch[AUDIO]).all()


class ColourEncoder(torch.nn.Module):
    """A stand-in frozen image encoder: mean colour, padded to 4 dims; counts its calls."""

    embedding_dim = 4
    calls = 0

    def identity(self) -> str:
        return "colour-v1"

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        ColourEncoder.calls += 1
        return torch.cat([frames.mean(dim=(-2, -1)), torch.ones(*frames.shape[:-3], 1)], -1)


class LoudnessEncoder(torch.nn.Module):
    """A stand-in frozen audio encoder: RMS and peak, at the data's rate."""

    embedding_dim = 2
    sample_rate = 11025

    def identity(self) -> str:
        return "loudness-v1"

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.stack([waveform.pow(2).mean(-1).sqrt(), waveform.abs().amax(-1)], -1)


def test_embedding_caches_are_filled_once_and_feed_the_batches(music_tree, tmp_path):
    dm = SeparationDataModule(
        music_tree,
        window=8191,
        image_size=24,
        batch_size=2,
        num_workers=0,
        fixed_mixtures=4,
        visual_encoder=ColourEncoder(),
        mixture_encoder=LoudnessEncoder(),
        cache_dir=tmp_path,
    )
    dm.prepare_data()
    calls = ColourEncoder.calls
    dm.prepare_data()  # a second run finds everything cached
    assert ColourEncoder.calls == calls
    train = first_batch(dm)
    assert FRAMES not in train and train[VISUAL_EMB].shape == (2, 2, 4) and train[MIXTURE_EMB].shape == (2, 2)
    # the cached loudness is the loudness of the very mixture in the batch (float16 storage)
    rms = train[MIXTURE].pow(2).mean(-1).sqrt()
    torch.testing.assert_close(train[MIXTURE_EMB][:, 0], rms, atol=1e-3, rtol=1e-3)
    test = first_batch(dm, "test", "test_dataloader")
    assert test[MIXTURE_EMB].shape == (2, 2)
    # spawn-started workers (macOS, Windows) receive the dataset pickled: it must survive that
    dataset = pickle.loads(pickle.dumps(dm.datasets["train"]))
    restored, original = dataset[0], dm.datasets["train"][0]
    torch.testing.assert_close(torch.as_tensor(restored[MIXTURE_EMB]), torch.as_tensor(original[MIXTURE_EMB]))
    torch.testing.assert_close(torch.as_tensor(restored[VISUAL_EMB]), torch.as_tensor(original[VISUAL_EMB]))


def test_a_mixture_encoder_at_another_rate_is_rejected(music_tree, tmp_path):
    encoder = LoudnessEncoder()
    encoder.sample_rate = 48000
    with pytest.raises(ValueError, match="expects 48000 Hz audio but the data is at 11025 Hz"):
        SeparationDataModule(music_tree, mixture_encoder=encoder, cache_dir=tmp_path)


@pytest.mark.parametrize("name", ["s4", "ms3", "avss"])
def test_segmentation_log_mel_cache_gives_the_same_batches(avsbench_trees, tmp_path, monkeypatch, name):
    kwargs = {"image_size": 32, "batch_size": 3, "num_workers": 0}
    plain = SegmentationDataModule(name, avsbench_trees[name], **kwargs)
    cached = SegmentationDataModule(name, avsbench_trees[name], cache_dir=tmp_path, **kwargs)
    cached.prepare_data()
    assert cached.log_mel_cache is not None and len(list(cached.log_mel_cache.folder.rglob("*.npy"))) > 0

    def on_the_device(*args: object) -> None:
        raise AssertionError("the log-mel was computed on the device although it is cached")

    monkeypatch.setattr(cached.log_mel, "forward", on_the_device)
    for stage, loader in (("fit", "train_dataloader"), ("test", "test_dataloader")):
        plain.setup(stage)
        cached.setup(stage)
        for a, b in zip(getattr(plain, loader)(), getattr(cached, loader)(), strict=True):
            a, b = plain.on_after_batch_transfer(a, 0), cached.on_after_batch_transfer(b, 0)
            assert b.keys() == a.keys() - {WAVEFORM, WAVEFORM_LENGTH}  # with a cache no audio is read
            torch.testing.assert_close(b[AUDIO], a[AUDIO], rtol=1e-5, atol=1e-5)  # float32 cache: rounding only
            assert all(torch.equal(a[key], b[key]) for key in b if key != AUDIO)
    dataset = cached.datasets["test"]
    restored = pickle.loads(pickle.dumps(dataset))  # spawn-started workers receive it pickled
    assert torch.equal(restored[0][AUDIO], dataset[0][AUDIO])


def test_segmentation_cache_is_built_on_first_use(tmp_path):
    dm = SegmentationDataModule("s4", tmp_path / "not-here-yet", cache_dir=tmp_path / "cache")  # e.g. a parsed config
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="metadata file not found"):
        dm.prepare_data()
