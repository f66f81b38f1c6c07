import pickle
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from avtoolkit.data.batch import (
    AUDIO,
    FRAMES,
    LABELS,
    MASK_VALID,
    MASKS,
    MIXTURE,
    MIXTURE_EMB,
    SAMPLE_INDEX,
    SOURCES,
    VISUAL_EMB,
    WAVEFORM,
    WAVEFORM_LENGTH,
)
from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
from avtoolkit.errors import ConfigError, DatasetError
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks.separation import AVSeparationTask


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


def test_batches_name_their_clips(music_tree, avsbench_trees):
    dm = SeparationDataModule(music_tree, window=8191, image_size=24, batch_size=2, num_workers=0)
    batch = first_batch(dm)
    names = dm.sample_names("train", batch[SAMPLE_INDEX].tolist())
    assert len(names) == 2
    for name, labels in zip(names, batch[LABELS], strict=True):
        files = name.split(" + ")  # the mixture's audio files, relative to the root, in source order
        assert all((music_tree / f).is_file() for f in files)
        assert [Path(f).parent.name for f in files] == [dm.class_names[i] for i in labels]
    test = first_batch(dm, "test", "test_dataloader")
    recipe = dm.datasets["test"].recipe(1)
    clips = dm.datasets["test"].clips
    assert dm.sample_names("test", test[SAMPLE_INDEX][1:].tolist()) == [
        " + ".join(str(clips[i].audio.relative_to(music_tree)) for i in recipe.clips)
    ]
    seg = SegmentationDataModule("s4", avsbench_trees["s4"], image_size=32, batch_size=2, num_workers=0)
    batch = first_batch(seg, "test", "test_dataloader")
    assert seg.sample_names("test", batch[SAMPLE_INDEX].tolist()) == seg.datasets["test"].names[:2]


@pytest.mark.parametrize("name", ["separation", "segmentation"])
def test_a_training_split_smaller_than_one_batch_is_an_error(name, music_tree, avsbench_trees):
    if name == "separation":  # 6 training clips
        dm = SeparationDataModule(music_tree, window=8191, image_size=24, batch_size=8, num_workers=0)
        root, n = music_tree, 6
    else:  # 3 training clips
        dm = SegmentationDataModule("s4", avsbench_trees["s4"], image_size=32, batch_size=4, num_workers=0)
        root, n = avsbench_trees["s4"], 3
    dm.setup("fit")
    expected = (
        f"the train split of {root} has {n} samples but batch_size is {dm.batch_size}: training drops an incomplete "
        f"batch, so there would be no training batch at all. Set data.init_args.batch_size to at most {n}"
    )
    with pytest.raises(DatasetError, match=re.escape(expected)):
        dm.train_dataloader()
    assert len(dm.val_dataloader()) == 1  # evaluation keeps the smaller batch


def tiny_separation_task() -> AVSeparationTask:
    model = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32)


class TrainingBatchSizes(Callback):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_validation_batch_start(self, *args: object) -> None:
        raise AssertionError("validated although training cannot start")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sizes.append(int(batch[MIXTURE].shape[0]))


def test_fit_stops_before_validating_when_the_training_split_is_smaller_than_one_batch(music_tree):
    dm = SeparationDataModule(music_tree, window=2047, frames_per_source=1, image_size=32, batch_size=8, num_workers=0)
    sizes = TrainingBatchSizes()
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False, callbacks=[sizes])
    with pytest.raises(DatasetError, match=r"has 6 samples but batch_size is 8"):
        trainer.fit(tiny_separation_task(), dm)
    assert sizes.sizes == []


def test_a_fast_dev_run_trains_on_one_smaller_batch_when_the_split_is_smaller(music_tree):
    dm = SeparationDataModule(music_tree, window=2047, frames_per_source=1, image_size=32, batch_size=8, num_workers=0)
    sizes = TrainingBatchSizes()
    sizes.on_validation_batch_start = lambda *args: None  # a fast_dev_run validates one batch after training
    trainer = Trainer(accelerator="cpu", fast_dev_run=True, enable_progress_bar=False, callbacks=[sizes])
    with pytest.warns(UserWarning, match="fast_dev_run: the train split .* has 6 samples, fewer than batch_size 8"):
        trainer.fit(tiny_separation_task(), dm)
    assert sizes.sizes == [6] and trainer.global_step == 1


def test_a_fixed_training_pool_can_be_sized_per_training_clip(music_tree):
    kwargs = {"window": 8191, "image_size": 24, "batch_size": 2, "num_workers": 0}
    per_clip = SeparationDataModule(music_tree, fixed_mixtures_per_clip=3, **kwargs)  # 6 training clips
    absolute = SeparationDataModule(music_tree, fixed_mixtures=18, **kwargs)
    per_clip.setup("fit")
    absolute.setup("fit")
    assert per_clip.training_pool_size == 18 and len(per_clip.datasets["train"]) == 18
    for index in (0, 17):  # the very pool `fixed_mixtures` of that size gives
        assert torch.equal(per_clip.datasets["train"][index][MIXTURE], absolute.datasets["train"][index][MIXTURE])
    with pytest.raises(ConfigError, match=r"sets both fixed_mixtures .* and fixed_mixtures_per_clip"):
        SeparationDataModule(music_tree, fixed_mixtures=4, fixed_mixtures_per_clip=2)
    with pytest.raises(ConfigError, match="fixed_mixtures_per_clip must be a positive number"):
        SeparationDataModule(music_tree, fixed_mixtures_per_clip=0)
