"""Embedding caches: computed once, keyed by the encoder identity, atomic, equal to computing directly."""

import json
import multiprocessing
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.data.embeddings import FrameEmbeddingCache, MixtureEmbeddingCache
from avtoolkit.data.music import Clip, frame_path, read_split
from avtoolkit.data.video import read_image

DIM = 8
SIZE = 32  # frame side given to the stub encoder (the fixture frames are 32×32)


class StubEncoder(nn.Module):
    """A cheap deterministic encoder: pooled pixels / samples → fixed random projection → unit norm.

    Counts its calls and the inputs it saw; can fail on a given call to interrupt a computation.
    """

    def __init__(self, tag: str = "a", fail_on_call: int | None = None) -> None:
        super().__init__()
        self.tag = tag
        self.project = nn.Linear(48, DIM)
        with torch.no_grad():
            self.project.weight.copy_(torch.randn(DIM, 48, generator=torch.Generator().manual_seed(len(tag))))
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.seen = 0

    @property
    def embedding_dim(self) -> int:
        return DIM

    def identity(self) -> str:
        return f"stub:{self.tag}"

    def forward(self, inputs: Tensor) -> Tensor:
        self.calls += 1
        self.seen += inputs.shape[0]
        if self.calls == self.fail_on_call:
            raise RuntimeError("interrupted")
        if inputs.ndim == 4:  # frames (N, 3, H, W)
            features = F.adaptive_avg_pool2d(inputs, 4).flatten(1)
        else:  # waveforms (B, L)
            features = F.adaptive_avg_pool1d(inputs[:, None].abs(), 48)[:, 0]
        return F.normalize(self.project(features), dim=-1)


@pytest.fixture(scope="module")
def clips(music_tree: Path) -> list[Clip]:
    return read_split(music_tree, "train")  # 6 clips of 52 frames at 8 fps → 7 embedded frames each (stride 8)


def frame_cache(root: Path, encoder: nn.Module, **kwargs: int) -> FrameEmbeddingCache:
    return FrameEmbeddingCache(root, encoder, **{"image_size": SIZE, "batch_size": 5, "num_workers": 2, **kwargs})


def test_frames_are_computed_once(tmp_path: Path, clips: list[Clip]):
    encoder = StubEncoder()
    cache = frame_cache(tmp_path, encoder)
    assert cache.ensure(clips + clips[:2], "cpu", progress=False) == 6  # repeats computed once
    assert encoder.seen == 6 * 7
    calls = encoder.calls
    assert cache.ensure(clips, "cpu", progress=False) == 0
    assert frame_cache(tmp_path, encoder).ensure(clips, "cpu", progress=False) == 0  # a new cache object too
    assert encoder.calls == calls
    assert [cache.load(clip).shape for clip in clips] == [(7, DIM)] * 6


def test_loading_equals_computing_directly(tmp_path: Path, clips: list[Clip]):
    encoder = StubEncoder()
    cache = frame_cache(tmp_path, encoder, stride=3)
    cache.ensure(clips[:2], "cpu", progress=False)
    for clip in clips[:2]:
        assert cache.embedded_frames(clip) == list(range(1, 53, 3))
        frames = torch.stack([read_image(frame_path(clip, k), SIZE) for k in cache.embedded_frames(clip)])
        direct = encoder(frames.float() / 255).detach().numpy()
        loaded = cache.load(clip)
        assert loaded.dtype == np.float32 and loaded.shape == (18, DIM)
        np.testing.assert_allclose(loaded, direct, atol=1e-3)  # stored as float16


def test_loading_equals_computing_directly_with_clip(tmp_path: Path, clips: list[Clip]):
    from avtoolkit.models.encoders.clip import CLIPImageEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = CLIPImageEncoder("ViT-S-32")
    cache = FrameEmbeddingCache(tmp_path, encoder, stride=40, image_size=64)  # frames 1 and 41
    cache.ensure(clips[:1], "cpu", progress=False)
    frames = torch.stack([read_image(frame_path(clips[0], k), 64) for k in (1, 41)]).float() / 255
    np.testing.assert_allclose(cache.load(clips[0]), encoder(frames).numpy(), atol=2e-3)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["encoder"] == encoder.identity() and manifest["stride"] == 40


def test_nearest_embedded_frame(tmp_path: Path, clips: list[Clip]):
    cache = frame_cache(tmp_path, StubEncoder())
    clip = clips[0]
    cache.ensure([clip], "cpu", progress=False)
    rows = cache.load(clip)
    assert [cache.row(clip, frame) for frame in (1, 4, 5, 9, 12, 13, 52)] == [0, 0, 1, 1, 1, 2, 6]
    np.testing.assert_array_equal(cache.at_time(clip, 1.0), rows[1])  # 8 fps, stride 8: one row per second
    np.testing.assert_array_equal(cache.at_time(clip, 2.4), rows[2])
    np.testing.assert_array_equal(cache.at_time(clip, 60.0), rows[6])
    np.testing.assert_array_equal(cache.at_frames(clip, [1, 17, 25]), rows[[0, 2, 3]])


def test_another_encoder_or_setting_gets_its_own_entries(tmp_path: Path, clips: list[Clip]):
    first = frame_cache(tmp_path, StubEncoder("a"))
    first.ensure(clips[:2], "cpu", progress=False)
    other_encoder = StubEncoder("bb")  # another identity (e.g. other weights)
    other = frame_cache(tmp_path, other_encoder)
    assert other.folder != first.folder
    with pytest.raises(FileNotFoundError, match="call ensure"):
        other.load(clips[0])  # the first encoder's embeddings are not returned
    assert other.ensure(clips[:2], "cpu", progress=False) == 2
    assert not np.allclose(other.load(clips[0]), first.load(clips[0]))
    assert frame_cache(tmp_path, StubEncoder("a"), stride=4).folder != first.folder


def test_interrupted_run_leaves_only_complete_files(tmp_path: Path, clips: list[Clip]):
    encoder = StubEncoder(fail_on_call=4)  # batches of 5 frames, 7 frames per clip: dies inside the 3rd clip
    cache = frame_cache(tmp_path, encoder)
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.ensure(clips, "cpu", progress=False)
    files = sorted(cache.folder.rglob("*.npy"))
    assert len(files) == 2  # 15 frames done: clips 1 and 2 complete
    assert all(np.load(f).shape == (7, DIM) for f in files)
    leftovers = [p for p in cache.folder.rglob("*") if p.name.startswith(".")]
    assert not leftovers
    resumed = StubEncoder()
    assert frame_cache(tmp_path, resumed).ensure(clips, "cpu", progress=False) == 4
    assert resumed.seen == 4 * 7


def test_stale_file_is_recomputed(tmp_path: Path, clips: list[Clip]):
    cache = frame_cache(tmp_path, StubEncoder())
    cache.path(clips[0]).parent.mkdir(parents=True)
    np.save(cache.path(clips[0]), np.zeros((3, DIM), np.float16))  # e.g. from before the frames were re-extracted
    with pytest.raises(ValueError, match="call ensure"):
        cache.load(clips[0])
    assert cache.ensure(clips[:1], "cpu", progress=False) == 1
    assert cache.load(clips[0]).shape == (7, DIM)


def mixtures(keys: list[str]) -> Tensor:
    """Deterministic waveforms from keys (stands in for the mix-and-separate recipe)."""
    return torch.stack([torch.randn(400, generator=torch.Generator().manual_seed(int(key[3:]))) for key in keys])


def test_mixtures_are_computed_once_and_equal_direct(tmp_path: Path):
    encoder = StubEncoder()
    cache = MixtureEmbeddingCache(tmp_path, encoder, batch_size=4)
    keys = [f"mix{i}" for i in range(10)]
    assert cache.ensure(keys, mixtures, "cpu") == 10 and encoder.calls == 3
    assert cache.ensure(keys, mixtures, "cpu") == 0 and encoder.calls == 3
    found = cache.get_many(["mix3", "mix9", "absent"])
    assert set(found) == {"mix3", "mix9"} and len(cache) == 10
    direct = encoder(mixtures(["mix3", "mix9"])).detach().numpy()
    np.testing.assert_allclose(np.stack([found["mix3"], found["mix9"]]), direct, atol=1e-3)
    assert cache.missing(["mix1", "mix11", "mix11"]) == ["mix11"]
    np.testing.assert_array_equal(cache.get("mix3"), found["mix3"])
    with pytest.raises(KeyError, match=r"no embedding for mixture 'absent' in .*embeddings\.sqlite; fill the cache"):
        cache.get("absent")


def test_mixtures_of_another_encoder_are_not_returned(tmp_path: Path):
    first = MixtureEmbeddingCache(tmp_path, StubEncoder("a"))
    first.put_many({"mix1": np.ones(DIM)})
    other = MixtureEmbeddingCache(tmp_path, StubEncoder("bb"))
    assert other.folder != first.folder and other.get_many(["mix1"]) == {}
    assert json.loads((first.folder / "manifest.json").read_text())["encoder"] == "stub:a"


def test_mixture_writes_are_all_or_nothing(tmp_path: Path):
    cache = MixtureEmbeddingCache(tmp_path, StubEncoder(fail_on_call=2), batch_size=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.ensure([f"mix{i}" for i in range(6)], mixtures, "cpu")
    assert sorted(cache.get_many([f"mix{i}" for i in range(6)])) == ["mix0", "mix1", "mix2"]
    with pytest.raises(ValueError, match="shape"):
        cache.put_many({"mix7": np.ones(DIM), "mix8": np.ones(DIM + 1)})
    assert cache.get_many(["mix7", "mix8"]) == {}


def _put_same_entries(root: str, start: int) -> None:
    cache = MixtureEmbeddingCache(Path(root), StubEncoder())
    for i in range(start, start + 40):
        cache.put_many({f"mix{j}": np.full(DIM, j, np.float32) for j in range(i, i + 5)})


def test_two_processes_writing_the_same_entries(tmp_path: Path):
    cache = MixtureEmbeddingCache(tmp_path, StubEncoder())
    cache.put_many({"mix0": np.zeros(DIM)})  # the parent's connection exists before the fork
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_put_same_entries, args=(str(tmp_path), start)) for start in (0, 10)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    found = cache.get_many([f"mix{j}" for j in range(55)])
    assert len(found) == 54 and all(found[f"mix{j}"][0] == j for j in range(1, 54))
    assert len(pickle.loads(pickle.dumps(cache)).get_many(["mix5"])) == 1  # e.g. sent to spawned workers
