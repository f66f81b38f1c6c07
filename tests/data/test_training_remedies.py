"""The optional training remedies: negative audio (segmentation) and absent-source queries (mix-and-separate).

Each test builds the datamodule with the remedy and checks what it does against the plain samples: which audio a
sample hears, what its target becomes, which picture queries an absent source, how often, with which draws.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny_models import TINY_FAVS
from lightning.pytorch import Callback, Trainer

from avtoolkit.data.avsbench import AVSSDataset, S4Dataset
from avtoolkit.data.batch import (
    AUDIO,
    FRAMES,
    LABELS,
    MASK_VALID,
    MASKS,
    MIXTURE,
    SAMPLE_INDEX,
    SOURCES,
    WAVEFORM,
    WAVEFORM_LENGTH,
)
from avtoolkit.data.datamodules import NegativeAudio, SegmentationDataModule, SeparationDataModule
from avtoolkit.data.mixing import MixAndSeparate
from avtoolkit.data.music import frame_index, frame_path
from avtoolkit.data.video import read_image
from avtoolkit.errors import ConfigError
from avtoolkit.losses.segmentation import MaskClassificationCriterion, PixelCriterion
from avtoolkit.models.segmentation.favs import FAVS
from avtoolkit.models.segmentation.tpavi import TPAVINet
from avtoolkit.models.separation.sop import SoundOfPixels
from avtoolkit.tasks import separation as separation_module
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

pytestmark = pytest.mark.usefixtures("one_thread")

SEG = {"image_size": 32, "batch_size": 1, "num_workers": 0}
SEP = {"window": 8191, "frames_per_source": 2, "image_size": 24, "batch_size": 2, "num_workers": 0}


def training_batches(datamodule) -> list[dict[str, torch.Tensor]]:
    """One epoch of training batches, prepared as on the device."""
    datamodule.setup("fit")
    return [datamodule.on_after_batch_transfer(batch, 0) for batch in datamodule.train_dataloader()]


def plain_dataset(name: str, root: Path, split: str = "train") -> S4Dataset | AVSSDataset:
    if name == "s4":
        return S4Dataset(root, split, 32)
    return AVSSDataset(root, split, 32)


def sounding(sample: dict[str, torch.Tensor], name: str, dataset) -> set:
    """What sounds in a plain sample, read independently of the code under test: S4 category, AVSS mask classes."""
    if name == "s4":
        return {dataset.category_names[int(sample[LABELS])]}
    return set(sample[MASKS][sample[MASK_VALID]].unique().tolist()) - {0}


# -- negative audio (segmentation) -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s4", "avss"])
def test_at_ratio_one_every_training_sample_hears_an_offscreen_sound_and_has_empty_masks(avsbench_trees, name):
    root = avsbench_trees[name]
    dm = SegmentationDataModule(name, root, negative_audio_ratio=1.0, **SEG)
    batches = training_batches(dm)
    sampler = dm._train_sampler
    assert sampler is not None and sampler.draw_keys  # the draws come from the sampler's (seed, epoch) key
    plain = plain_dataset(name, root)
    assert len(batches) == len(plain)
    heard = set()
    for batch in batches:
        index = int(batch[SAMPLE_INDEX][0])
        own = plain[index]
        donor = dm.datasets["train"].donor(index, (sampler.seed, sampler.epoch))
        assert donor is not None and donor != index
        other = plain[donor]
        assert sounding(own, name, plain).isdisjoint(sounding(other, name, plain))  # off screen
        assert torch.equal(batch[WAVEFORM][0], other[WAVEFORM]) and not torch.equal(batch[WAVEFORM][0], own[WAVEFORM])
        assert int(batch[WAVEFORM_LENGTH][0]) == int(other[WAVEFORM_LENGTH])
        assert not batch[MASKS].any()  # all background (AVSS: class 0)
        assert bool(own[MASKS][own[MASK_VALID]].any())  # ... where the clip had foreground
        assert torch.equal(batch[MASK_VALID][0], own[MASK_VALID])  # the same frames are trained on
        assert torch.equal(batch[FRAMES][0], own[FRAMES].float() / 255)
        assert int(batch[LABELS][0]) == int(own[LABELS])  # the clip's own category
        heard.add(donor)
    assert len(heard) > 1
    names = dm.sample_names("train", [int(batches[0][SAMPLE_INDEX][0])])
    assert "with the audio of" in names[0] and "(negative audio)" in names[0]


def test_at_ratio_zero_the_training_samples_are_the_plain_ones(avsbench_trees):
    root = avsbench_trees["s4"]
    dm = SegmentationDataModule("s4", root, negative_audio_ratio=0.0, **SEG)
    dm.setup("fit")
    assert not isinstance(dm.datasets["train"], NegativeAudio)
    plain = plain_dataset("s4", root)
    for batch in dm.train_dataloader():
        sample = plain[int(batch[SAMPLE_INDEX][0])]
        assert all(torch.equal(batch[key][0], sample[key]) for key in sample)


def test_negative_audio_follows_the_ratio_and_is_drawn_per_seed_epoch_and_sample(avsbench_trees):
    root = avsbench_trees["s4"]
    a = SegmentationDataModule("s4", root, negative_audio_ratio=0.3, **SEG)
    b = SegmentationDataModule("s4", root, negative_audio_ratio=0.3, **SEG)
    a.setup("fit")
    b.setup("fit")
    da, db = a.datasets["train"], b.datasets["train"]
    keys = [(i, seed, epoch) for i in range(len(da)) for seed in (0, 7) for epoch in range(200)]
    draws = [da.donor(i, (seed, epoch)) for i, seed, epoch in keys]
    assert draws == [db.donor(i, (seed, epoch)) for i, seed, epoch in keys]  # another instance draws the same
    rate = sum(d is not None for d in draws) / len(draws)
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(draws))
    by_epoch = {
        (i, seed): {draws[k] is not None for k, key in enumerate(keys) if key[:2] == (i, seed)} for i, seed, _ in keys
    }
    assert all(decisions == {True, False} for decisions in by_epoch.values())  # redrawn every epoch
    by_seed = (
        [draws[k] for k, key in enumerate(keys) if key[1] == 0],
        [draws[k] for k, key in enumerate(keys) if key[1] == 7],
    )
    assert by_seed[0] != by_seed[1]


def test_negative_audio_batches_are_the_same_in_two_instances_and_with_workers(avsbench_trees):
    root = avsbench_trees["s4"]
    kwargs = {**SEG, "negative_audio_ratio": 0.5}
    single = SegmentationDataModule("s4", root, **kwargs)
    workers = SegmentationDataModule("s4", root, **{**kwargs, "num_workers": 2})
    for epoch in (0, 1):
        single.setup("fit")
        workers.setup("fit")
        loaders = single.train_dataloader(), workers.train_dataloader()
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        for x, y in zip(*loaders, strict=True):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_validation_and_test_samples_are_never_altered(avsbench_trees):
    root = avsbench_trees["s4"]
    remedied = SegmentationDataModule("s4", root, negative_audio_ratio=1.0, **SEG)
    plain = SegmentationDataModule("s4", root, **SEG)
    for stage, loader in (("validate", "val_dataloader"), ("test", "test_dataloader")):
        remedied.setup(stage)
        plain.setup(stage)
        for x, y in zip(getattr(remedied, loader)(), getattr(plain, loader)(), strict=True):
            assert all(torch.equal(x[k], y[k]) for k in y)
            assert x[MASKS].any()


def test_negative_audio_reads_the_donors_cached_log_mel(avsbench_trees, tmp_path):
    root = avsbench_trees["s4"]
    plain = SegmentationDataModule("s4", root, negative_audio_ratio=1.0, **SEG)
    cached = SegmentationDataModule("s4", root, negative_audio_ratio=1.0, cache_dir=tmp_path, **SEG)
    cached.prepare_data()
    for x, y in zip(training_batches(plain), training_batches(cached), strict=True):
        assert int(x[SAMPLE_INDEX]) == int(y[SAMPLE_INDEX]) and not y[MASKS].any()
        torch.testing.assert_close(y[AUDIO], x[AUDIO], rtol=1e-5, atol=1e-5)  # the donor's log-mel, from the cache


def test_a_ratio_outside_zero_one_is_a_config_error(avsbench_trees, music_tree):
    with pytest.raises(ConfigError, match=r"negative_audio_ratio .* in \[0, 1\]; got 1.5"):
        SegmentationDataModule("s4", avsbench_trees["s4"], negative_audio_ratio=1.5)
    with pytest.raises(ConfigError, match=r"absent_source_ratio .* in \[0, 1\]; got -0.1"):
        SeparationDataModule(music_tree, absent_source_ratio=-0.1)


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.batches.append(batch)


def one_training_step(task, datamodule) -> Losses:
    losses = Losses()
    trainer = Trainer(accelerator="cpu", fast_dev_run=1, enable_progress_bar=False, callbacks=[losses])
    trainer.fit(task, datamodule)
    assert trainer.global_step == 1
    assert all(torch.isfinite(p).all() for p in task.parameters())
    return losses


@pytest.mark.parametrize("name", ["s4", "avss"])
def test_one_training_step_on_negative_samples_gives_a_finite_loss(avsbench_trees, name):
    torch.manual_seed(0)
    if name == "s4":
        model = FAVS(num_classes=1, **TINY_FAVS)
        task = AVSegmentationTask(model, criterion=MaskClassificationCriterion(num_points=None))
    else:
        classes = len(AVSSDataset(avsbench_trees[name], "train", 32).class_names)
        model = TPAVINet(num_classes=classes, backbone="test_resnet", audio_width=0.0625, dim=16)
        task = AVSegmentationTask(model, criterion=PixelCriterion())
    dm = SegmentationDataModule(name, avsbench_trees[name], negative_audio_ratio=1.0, **{**SEG, "batch_size": 2})
    losses = one_training_step(task, dm)
    assert not losses.batches[0][MASKS].any()  # the step trained on empty targets only
    assert len(losses.losses) == 1 and math.isfinite(losses.losses[0])


# -- absent-source queries (mix-and-separate) --------------------------------------------------------------


def query_frames(dataset: MixAndSeparate, clip: int, start: int, flip: bool) -> torch.Tensor:
    """The frames of ``clip`` in the window from ``start``, read from disk (uint8, flipped if asked)."""
    c = dataset.clips[clip]
    times = (
        start + (np.arange(dataset.frames_per_source) + 0.5) * dataset.window / dataset.frames_per_source
    ) / c.sample_rate
    frames = torch.stack([read_image(frame_path(c, frame_index(c, float(t))), dataset.image_size) for t in times])
    return frames.flip(-1) if flip else frames


def test_at_ratio_one_every_training_mixture_queries_an_absent_class_whose_target_is_silent(music_tree):
    remedied = SeparationDataModule(music_tree, absent_source_ratio=1.0, **SEP)
    plain = SeparationDataModule(music_tree, **SEP)
    remedied.setup("fit")
    plain.setup("fit")
    dataset, reference = remedied.datasets["train"], plain.datasets["train"]
    slots = set()
    for index in range(len(dataset)):
        key = (index, 3, 1)  # (index, seed, epoch), as the training sampler yields
        recipe, sample, mixture = dataset.recipe(index, key[1:]), dataset[key], reference[key]
        slot = recipe.absent
        assert slot is not None and recipe.query is not None
        slots.add(slot)
        present = set(mixture[LABELS].tolist())  # every class heard in the mixture
        assert int(sample[LABELS][slot]) not in present  # the picture is of a class that is not heard
        assert int(sample[LABELS][slot]) == dataset.clips[recipe.query].label_index
        assert torch.equal(sample[MIXTURE], mixture[MIXTURE])  # the mixture is unchanged
        assert not sample[SOURCES][slot].any() and mixture[SOURCES][slot].abs().sum() > 0  # silent target
        expected = query_frames(dataset, recipe.query, recipe.query_start, recipe.query_flip)
        assert torch.equal(sample[FRAMES][slot], expected) and not torch.equal(expected, mixture[FRAMES][slot])
        for other in set(range(dataset.n_sources)) - {slot}:  # the other sources are as they were
            assert torch.equal(sample[SOURCES][other], mixture[SOURCES][other])
            assert torch.equal(sample[FRAMES][other], mixture[FRAMES][other])
            assert int(sample[LABELS][other]) == int(mixture[LABELS][other])
    assert slots == {0, 1}  # either source may be the absent one
    batch = training_batches(remedied)[0]
    name = remedied.sample_names("train", batch[SAMPLE_INDEX].tolist())[0]
    assert ": absent]" in name and "queried with" in name


def test_absent_queries_follow_the_ratio_and_keep_the_other_mixtures_bit_identical(music_tree):
    half = SeparationDataModule(music_tree, absent_source_ratio=0.25, **SEP)
    again = SeparationDataModule(music_tree, absent_source_ratio=0.25, **SEP)
    zero = SeparationDataModule(music_tree, absent_source_ratio=0.0, **SEP)
    for dm in (half, again, zero):
        dm.setup("fit")
    keys = [(i, seed, epoch) for i in range(len(half.datasets["train"])) for seed in (0, 5) for epoch in range(150)]
    recipes = [half.datasets["train"].recipe(i, (seed, epoch)) for i, seed, epoch in keys]
    assert recipes == [again.datasets["train"].recipe(i, (seed, epoch)) for i, seed, epoch in keys]
    rate = sum(r.absent is not None for r in recipes) / len(recipes)
    assert abs(rate - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(recipes))
    plain = [zero.datasets["train"].recipe(i, (seed, epoch)) for i, seed, epoch in keys]
    assert all(r.absent is None for r in plain)
    assert [(r.clips, r.starts, r.gains, r.flips) for r in recipes] == [
        (r.clips, r.starts, r.gains, r.flips) for r in plain
    ]
    kept = next(k for k, r in zip(keys, recipes, strict=True) if r.absent is None)
    x, y = half.datasets["train"][kept], zero.datasets["train"][kept]
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)  # bit-identical to ratio 0


def test_absent_queries_are_the_same_in_two_instances_and_with_workers(music_tree):
    single = SeparationDataModule(music_tree, absent_source_ratio=0.5, **SEP)
    workers = SeparationDataModule(music_tree, absent_source_ratio=0.5, **{**SEP, "num_workers": 2})
    for x, y in zip(training_batches(single), training_batches(workers), strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_evaluation_mixtures_never_query_an_absent_source(music_tree):
    remedied = SeparationDataModule(music_tree, absent_source_ratio=1.0, **SEP)
    plain = SeparationDataModule(music_tree, **SEP)
    for stage, loader in (("validate", "val_dataloader"), ("test", "test_dataloader")):
        remedied.setup(stage)
        plain.setup(stage)
        for x, y in zip(getattr(remedied, loader)(), getattr(plain, loader)(), strict=True):
            assert all(torch.equal(x[k], y[k]) for k in y)
            assert (x[SOURCES].abs().sum(-1) > 0).all()
    with pytest.raises(ValueError, match="for training sets only"):
        MixAndSeparate(remedied.datasets["test"].clips, window=8191, train=False, absent_source_ratio=0.5)


def test_absent_queries_need_a_class_outside_the_mixture(music_tree):
    dm = SeparationDataModule(music_tree, n_sources=3, absent_source_ratio=0.5, **SEP)  # 3 classes in the tree
    with pytest.raises(Exception, match="need a class that is not in the mixture"):
        dm.setup("fit")


def tiny_separation_task(mask: str) -> AVSeparationTask:
    torch.manual_seed(0)
    model = SoundOfPixels(channels=4, unet_depth=3, unet_base_channels=4, unet_max_channels=8, backbone="test_resnet")
    return AVSeparationTask(model, n_fft=126, hop_length=64, warp_bins=32, mask=mask)


@pytest.mark.parametrize("mask", ["binary", "ratio"])
def test_a_silent_source_has_a_zero_finite_mask_target_and_a_finite_loss(music_tree, monkeypatch, mask):
    dm = SeparationDataModule(music_tree, absent_source_ratio=1.0, **SEP)
    batch = training_batches(dm)[0]
    silent = batch[SOURCES].abs().sum(-1) == 0
    assert silent.sum(1).eq(1).all()  # one silent source per mixture
    targets: list[torch.Tensor] = []
    for loss in ("weighted_bce", "weighted_l1"):
        original = getattr(separation_module, loss)

        def recording(prediction, target, weight, original=original):
            targets.append(target)
            return original(prediction, target, weight)

        monkeypatch.setattr(separation_module, loss, recording)
    task = tiny_separation_task(mask)
    output, spectra = task._separate(batch)
    value = task._mask_loss(output.mask_logits, batch, spectra["mixture_warped"])
    (target,) = targets
    assert torch.isfinite(target).all() and not target[silent].any()  # the silent source's mask is all zeros
    assert target[~silent].any()
    value.backward()
    assert torch.isfinite(value) and all(p.grad is None or torch.isfinite(p.grad).all() for p in task.parameters())


def test_one_training_step_with_absent_queries_gives_a_finite_loss(music_tree):
    dm = SeparationDataModule(music_tree, absent_source_ratio=1.0, **SEP)
    losses = one_training_step(tiny_separation_task("ratio"), dm)
    assert (losses.batches[0][SOURCES].abs().sum(-1) == 0).any()
    assert len(losses.losses) == 1 and math.isfinite(losses.losses[0])
