"""Audio feature caches and compute_features from the datamodule: once, keyed, atomic, equal to on the fly."""

import copy
import json
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn

from avtoolkit.data import features
from avtoolkit.data.audio import VGGishLogMel
from avtoolkit.data.avsbench import read_clip_audio
from avtoolkit.data.avsbench_layout import SegClip, avsbench_clips
from avtoolkit.data.datamodules import SegmentationDataModule, SeparationDataModule
from avtoolkit.data.features import (
    CacheError,
    LogMelCache,
    VGGishEmbeddingCache,
    log_mel_settings,
)
from avtoolkit.data.precompute import compute_features, datamodule_from_config
from avtoolkit.models.encoders.vggish import VGGish

WIDTH = 0.0625  # the tiny VGGish of the model tests (4 to 32 channels)
LAYOUTS = [("s4", 7, 5), ("ms3", 7, 5), ("avss", 10, 10)]  # layout, clips in the tiny tree, examples per clip


def tiny_vggish(seed: int, width: float = WIDTH) -> VGGish:
    torch.manual_seed(seed)
    return VGGish(None, width)


class CountingVGGish(nn.Module):
    """Wraps a VGGish: counts forward calls, can fail on one."""

    def __init__(self, vggish: VGGish, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.vggish = vggish
        self.calls = 0
        self.fail_on_call = fail_on_call

    @property
    def embedding_dim(self) -> int:
        return 128

    def forward(self, log_mel: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("interrupted")
        return self.vggish(log_mel)


@pytest.mark.parametrize(("layout", "n_clips", "n_examples"), LAYOUTS)
def test_log_mel_is_computed_once_and_equals_the_on_the_fly_log_mel(
    avsbench_trees, tmp_path, monkeypatch, layout, n_clips, n_examples
):
    reads: list[str] = []
    monkeypatch.setattr(
        features, "read_clip_audio", lambda clip, n: reads.append(clip.name) or read_clip_audio(clip, n)
    )
    root = avsbench_trees[layout]
    clips = avsbench_clips(root, layout)
    assert len(clips) == n_clips
    cache = LogMelCache(tmp_path, root, layout, batch_size=4)
    assert cache.ensure(clips + clips[:2], "cpu", progress=False) == n_clips  # repeats computed once
    assert len(reads) == n_clips
    assert LogMelCache(tmp_path, root, layout).ensure(clips, "cpu", progress=False) == 0  # a new object too
    assert len(reads) == n_clips
    log_mel = VGGishLogMel(*log_mel_settings(layout))
    for clip in clips:
        waveform, length = read_clip_audio(clip, n_examples * 16000)
        direct = log_mel(waveform[None], torch.tensor([length]))[0]
        cached = cache.load(clip)
        assert cached.dtype == np.float32 and cached.shape == (n_examples, 1, 96, 64)
        torch.testing.assert_close(torch.from_numpy(cached), direct, rtol=1e-5, atol=1e-5)
    assert cache.path(clips[0]).suffix == ".npy" and cache.path(clips[0]).is_relative_to(cache.folder)


def test_keys_follow_the_settings_and_the_tree_not_its_place(avsbench_trees, tmp_path):
    s4 = LogMelCache(tmp_path, avsbench_trees["s4"], "s4")
    assert LogMelCache(tmp_path, avsbench_trees["s4"], "s4", batch_size=3).folder == s4.folder  # not a setting
    avss = LogMelCache(tmp_path, avsbench_trees["avss"], "avss")
    assert LogMelCache(tmp_path, avsbench_trees["avss"], "avss", avss_frames=5).folder != avss.folder
    manifest = json.loads((avss.folder / "manifest.json").read_text())
    assert manifest["layout"] == "avss" and manifest["examples"] == 10 and manifest["pad"] == "zero"
    assert manifest["shape"] == [10, 1, 96, 64] and manifest["dtype"] == "float32"
    assert manifest["dataset"]["metadata"] == "metadata.csv"
    # A moved copy of the tree keeps its key; another tree (other metadata) gets its own.
    copy = shutil.copytree(avsbench_trees["s4"], tmp_path / "moved" / "s4")
    assert LogMelCache(tmp_path, copy, "s4").folder == s4.folder
    metadata = copy / "s4_meta_data.csv"
    metadata.write_text("".join(metadata.read_text().splitlines(keepends=True)[:-1]))  # one clip less
    assert LogMelCache(tmp_path, copy, "s4").folder != s4.folder


def test_vggish_embeddings_are_keyed_by_the_weights_and_computed_once(avsbench_trees, tmp_path):
    root = avsbench_trees["ms3"]
    clips = avsbench_clips(root, "ms3")
    log_mel = LogMelCache(tmp_path, root, "ms3")
    vggish = tiny_vggish(0)
    counting = CountingVGGish(vggish)
    cache = VGGishEmbeddingCache(log_mel, counting, batch_size=4)
    assert cache.ensure(clips, "cpu", progress=False) == 7  # fills the log-mel first
    assert counting.calls == 2 and log_mel.missing(clips) == []
    assert cache.ensure(clips, "cpu", progress=False) == 0 and counting.calls == 2
    with torch.no_grad():
        direct = vggish(torch.from_numpy(log_mel.load(clips[3])))[1]
    torch.testing.assert_close(torch.from_numpy(cache.load(clips[3])), direct)
    assert cache.load_many(clips[:2]).shape == (2, 5, 128)
    # The same weights in another object share the entries; other weights or another width do not.
    reference = VGGishEmbeddingCache(log_mel, vggish).folder
    assert VGGishEmbeddingCache(log_mel, copy.deepcopy(vggish)).folder == reference
    other = VGGishEmbeddingCache(log_mel, tiny_vggish(1))
    assert other.folder != reference
    assert VGGishEmbeddingCache(log_mel, tiny_vggish(0, width=0.125)).folder not in (reference, other.folder)
    assert other.missing(clips) == clips
    manifest = json.loads((other.folder / "manifest.json").read_text())
    assert manifest["log_mel"] == log_mel.folder.name and "VGGish|state:" in manifest["encoder"]
    restored = pickle.loads(pickle.dumps(cache))  # readers in workers: no network travels
    assert restored.vggish is None and np.array_equal(restored.load(clips[0]), cache.load(clips[0]))


def test_interrupted_runs_leave_no_partial_entry(avsbench_trees, tmp_path, monkeypatch):
    root = avsbench_trees["s4"]
    clips = avsbench_clips(root, "s4")

    def failing(clip: SegClip, n_samples: int) -> tuple[Tensor, int]:
        if clip.name == clips[2].name:
            raise RuntimeError("interrupted")
        return read_clip_audio(clip, n_samples)

    monkeypatch.setattr(features, "read_clip_audio", failing)
    cache = LogMelCache(tmp_path, root, "s4", batch_size=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.ensure(clips, "cpu", progress=False)
    files = sorted(cache.folder.rglob("*.npy"))
    assert files == sorted(cache.path(clip) for clip in clips[:2])  # the first batch only, complete
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files or folders left
    monkeypatch.setattr(features, "read_clip_audio", read_clip_audio)
    assert cache.ensure(clips, "cpu", progress=False) == 5

    counting = CountingVGGish(tiny_vggish(0), fail_on_call=2)
    embeddings = VGGishEmbeddingCache(cache, counting, batch_size=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        embeddings.ensure(clips, "cpu", progress=False)
    assert sorted(embeddings.folder.rglob("*.npy")) == sorted(embeddings.path(clip) for clip in clips[:3])
    assert not [p for p in tmp_path.rglob(".*")]
    assert embeddings.ensure(clips, "cpu", progress=False) == 4


def test_damaged_entries_name_the_file_and_the_fix(avsbench_trees, tmp_path):
    root = avsbench_trees["s4"]
    clips = avsbench_clips(root, "s4")
    cache = LogMelCache(tmp_path, root, "s4")
    with pytest.raises(FileNotFoundError, match=r"no cached log-mel .* prepare_data\(\)"):
        cache.load(clips[0])
    cache.ensure(clips, "cpu", progress=False)
    truncated, reshaped = cache.path(clips[0]), cache.path(clips[1])
    truncated.write_bytes(truncated.read_bytes()[:1000])  # e.g. a disk that filled up under another tool
    np.save(reshaped, np.zeros((3, 1, 96, 64), np.float32))
    for path in (truncated, reshaped):
        clip = clips[0] if path == truncated else clips[1]
        with pytest.raises(CacheError) as error:
            cache.load(clip)
        assert str(path) in str(error.value) and f"delete {cache.folder}" in str(error.value)
    assert cache.missing(clips) == clips[:2]  # and filling the cache again repairs them
    assert cache.ensure(clips, "cpu", progress=False) == 2
    assert cache.load(clips[0]).shape == (5, 1, 96, 64)


def test_compute_features_fills_what_the_segmentation_datamodule_reads(avsbench_trees, tmp_path, monkeypatch):
    root = avsbench_trees["avss"]
    datamodule = SegmentationDataModule("avss", root, cache_dir=tmp_path, num_workers=0)
    counting = CountingVGGish(tiny_vggish(0))
    summary = compute_features(datamodule, vggish=counting, device="cpu", progress=False)
    assert [(c.name, c.entries, c.computed) for c in summary.caches] == [
        ("log-mel", 10, 10),
        ("VGGish embeddings", 10, 10),
    ]
    assert datamodule.log_mel_cache is not None and summary.caches[0].folder == datamodule.log_mel_cache.folder
    assert summary.layout == "avss" and summary.root == root
    again = compute_features(
        SegmentationDataModule("avss", root, cache_dir=tmp_path), vggish=counting, device="cpu", progress=False
    )
    assert [c.computed for c in again.caches] == [0, 0] and counting.calls == 1
    assert "10 entries, 0 computed now, 10 already cached" in again.format()
    v2 = SegmentationDataModule("avss", root, avss_subsets=("v2",), cache_dir=tmp_path)
    assert [(c.entries, c.computed) for c in compute_features(v2, device="cpu", progress=False).caches] == [(3, 0)]
    # The training run finds everything: its prepare_data reads no audio.
    monkeypatch.setattr(features, "read_clip_audio", lambda clip, n: pytest.fail(f"{clip.name} computed again"))
    SegmentationDataModule("avss", root, cache_dir=tmp_path).prepare_data()
    with pytest.raises(ValueError, match=r"no cache_dir.* set data\.init_args\.cache_dir"):
        compute_features(SegmentationDataModule("avss", root), device="cpu")
    with pytest.raises(TypeError, match="SegmentationDataModule or a SeparationDataModule"):
        compute_features(LightningDataModule())


class MeanColour(nn.Module):
    """A stand-in frozen image encoder (mean colour and a constant); counts the frames it saw."""

    embedding_dim = 4
    seen = 0

    def identity(self) -> str:
        return "mean-colour-v1"

    def forward(self, frames: Tensor) -> Tensor:
        MeanColour.seen += frames.shape[0]
        return torch.cat([frames.mean(dim=(-2, -1)), torch.ones(frames.shape[0], 1)], -1)


class Loudness(nn.Module):
    """A stand-in frozen audio encoder (RMS and peak); counts the mixtures it saw."""

    embedding_dim = 2
    sample_rate = 11025
    seen = 0

    def identity(self) -> str:
        return "loudness-v1"

    def forward(self, waveform: Tensor) -> Tensor:
        Loudness.seen += waveform.shape[0]
        return torch.stack([waveform.pow(2).mean(-1).sqrt(), waveform.abs().amax(-1)], -1)


def test_compute_features_of_a_music_tree_fills_what_the_datamodule_reads(music_tree, tmp_path):
    settings = {"window": 8191, "image_size": 24, "fixed_mixtures": 4, "num_workers": 0}

    def datamodule(**encoders: nn.Module) -> SeparationDataModule:
        return SeparationDataModule(music_tree, cache_dir=tmp_path, **settings, **encoders)

    summary = compute_features(
        datamodule(visual_encoder=MeanColour(), mixture_encoder=Loudness()), device="cpu", progress=False
    )
    reports = {c.name: (c.entries, c.computed) for c in summary.caches}
    assert reports["frame embeddings"][0] == reports["frame embeddings"][1] > 0
    assert reports["mixture embeddings"][0] == reports["mixture embeddings"][1] >= 4
    seen = MeanColour.seen, Loudness.seen
    datamodule(visual_encoder=MeanColour(), mixture_encoder=Loudness()).prepare_data()  # the same keys: nothing new
    assert (MeanColour.seen, Loudness.seen) == seen
    again = compute_features(datamodule(visual_encoder=MeanColour()), device="cpu", progress=False)
    assert [(c.name, c.computed) for c in again.caches] == [("frame embeddings", 0)]
    with pytest.raises(ValueError, match=r"no frozen encoder.* data\.init_args\.visual_encoder"):
        compute_features(datamodule())
    with pytest.raises(ValueError, match="vggish applies to a SegmentationDataModule"):
        compute_features(datamodule(visual_encoder=MeanColour()), vggish=tiny_vggish(0))


def test_datamodule_from_config_builds_only_the_data_section(avsbench_trees, tmp_path):
    parts = tmp_path / "configs"
    (parts / "data").mkdir(parents=True)
    (parts / "experiment").mkdir()
    data = {
        "class_path": "avtoolkit.data.datamodules.SegmentationDataModule",
        "init_args": {"dataset": "s4", "root": str(avsbench_trees["s4"]), "image_size": 32},
    }
    (parts / "data" / "s4.yaml").write_text(yaml.safe_dump(data))
    experiment = parts / "experiment" / "s4.yaml"  # the data part by a path relative to the file, as in configs/
    never_built = {"class_path": "not.a.Module"}  # the task and the trainer are not built
    experiment.write_text(yaml.safe_dump({"model": never_built, "trainer": never_built, "data": "../data/s4.yaml"}))
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"init_args": {"cache_dir": str(tmp_path / "cache")}}}))
    trainer_only = tmp_path / "ddp.yaml"
    trainer_only.write_text(yaml.safe_dump({"trainer": {"devices": 2}}))
    built = datamodule_from_config([experiment, overlay, trainer_only])
    assert isinstance(built, SegmentationDataModule)
    assert (built.dataset, built.image_size, built.cache_dir) == ("s4", 32, tmp_path / "cache")  # merged, later wins
    assert datamodule_from_config([experiment]).cache_dir is None
    with pytest.raises(ValueError, match=re.escape(f"{trainer_only} has no `data` section")):
        datamodule_from_config([trainer_only])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        datamodule_from_config([tmp_path / "missing.yaml"])
    overlay.write_text(yaml.safe_dump({"data": {"init_args": {"cache_folder": "x"}}}))
    with pytest.raises(ValueError, match=re.escape(f"the data section of {experiment}, {overlay} is not a valid")):
        datamodule_from_config([experiment, overlay])
