"""One LightningDataModule per task family, on a small shared base.

Workers read and crop; :meth:`BaseAVDataModule.on_after_batch_transfer` does the device-side preparation
(uint8 frames → float in [0, 1]; for segmentation the VGGish log-mel of the audio, unless it comes from a cache).
Every batch of a split carries ``SAMPLE_INDEX``, which :meth:`BaseAVDataModule.sample_names` turns into the names
of the clips the samples are made of (for messages that must say which clips, whatever the task).

Two optional training remedies teach a model to stay silent when nothing on screen matches the sound (the failures
the robustness suite measures): negative audio for segmentation (``negative_audio_ratio``, :class:`NegativeAudio`)
and absent-source queries for mix-and-separate (``absent_source_ratio``,
:class:`~avtoolkit.data.mixing.MixAndSeparate`). Both alter training samples only, drawn per ``(seed, epoch,
index)``; validation and test are never altered.
"""

import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from avtoolkit.data.audio import VGGishLogMel
from avtoolkit.data.avsbench import AVSSDataset, MS3Dataset, S4Dataset, read_clip_audio
from avtoolkit.data.avsbench_layout import SegClip, avsbench_clips, decode_palette_array
from avtoolkit.data.batch import AUDIO, FRAMES, MASKS, SAMPLE_INDEX, WAVEFORM, WAVEFORM_LENGTH
from avtoolkit.data.embeddings import FrameEmbeddingCache, MixtureEmbeddingCache
from avtoolkit.data.features import CachedLogMel, CacheReport, ClipDatasetWrapper, LogMelCache, log_mel_settings
from avtoolkit.data.holdout import TEST_SETS, held_out_clips
from avtoolkit.data.mask_files import read_rgb_mask_array
from avtoolkit.data.mixing import MixAndSeparate
from avtoolkit.data.music import Clip, class_names, read_split
from avtoolkit.data.samplers import EvaluationSampler, ResumableDataLoader, ResumableSampler
from avtoolkit.errors import ConfigError, DatasetError

Split = Literal["train", "val", "test", "test_held_out"]
"""A datamodule's datasets: the tree's three splits, and on a tree of the held-out-family protocol the held-out-family
clips of its test split (``test`` then holds its in-family clips; see :mod:`avtoolkit.data.holdout`)."""
FileSplit = Literal["train", "val", "test"]
_STAGE_SPLITS: dict[str, tuple[Split, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "predict": ("test",),
}


def file_split(split: Split) -> FileSplit:
    """The split of the tree's files a datamodule split reads: ``test`` for both test sets."""
    return "test" if split == "test_held_out" else split


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Indexed(Dataset[dict[str, Tensor]]):
    """A split's dataset whose samples also carry ``SAMPLE_INDEX``, their index in it (a sampler's draw key too)."""

    def __init__(self, dataset: Dataset[dict[str, Tensor]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Tensor]:
        sample = self.dataset[index]  # a tuple: a draw key (ResumableSampler)
        sample[SAMPLE_INDEX] = torch.tensor(index[0] if isinstance(index, tuple) else index)
        return sample


_NEGATIVE_AUDIO_STREAM = 3
"""Tag of the negative-audio draws in their generator's seed (other draws of a sample use other tags)."""


class NegativeAudio(ClipDatasetWrapper):
    """A segmentation training split where a fraction of the samples hear an off-screen sound (negative audio).

    With probability ``ratio`` a sample's audio is replaced by the audio of another clip of the split whose
    sounding categories share nothing with this clip's, and its target becomes empty: ``MASKS`` all background (0),
    ``MASK_VALID`` unchanged (the same frames are trained on), so the model learns not to segment when the sound
    comes from no object in view. Everything else (frames, ``LABELS``: the clip's own category) is the clip's.

    Categories, as the official layouts give them: S4, the clip's category; AVSS, the classes in its ground-truth
    masks (decoded at full resolution, once per process); MS3 has none, so any other clip qualifies, and its sound
    may come from a kind of object that is also on screen. Objects shown but silent are not in the layouts either,
    so a donor's sound may be of a kind shown silent in these frames (the synthetic sets show silent distractors).
    A clip without a qualifying donor keeps its own audio and masks (a warning names it, once per process).

    Draws: indexed by a key ``(index, seed, epoch)`` (what :class:`~avtoolkit.data.samplers.ResumableSampler`
    yields with draw keys) whether the sample is negative and its donor are seeded from the key, so they depend
    neither on the worker processes nor on where a run was resumed; by a bare ``int``, from torch's RNG (as
    :class:`~avtoolkit.data.mixing.MixAndSeparate` does).

    Args:
        dataset: The training split: an S4/MS3/AVSS dataset, or a :class:`~avtoolkit.data.features.CachedLogMel`
            of one (the donor's cached log-mel then replaces ``AUDIO``; otherwise its waveform replaces
            ``WAVEFORM`` and ``WAVEFORM_LENGTH``).
        ratio: Probability in [0, 1] that a sample is negative.
    """

    def __init__(self, dataset: S4Dataset | MS3Dataset | AVSSDataset | CachedLogMel, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"the negative-audio ratio is a probability in [0, 1], got {ratio}")
        self.dataset = dataset
        self.ratio = ratio
        base = dataset.dataset if isinstance(dataset, CachedLogMel) else dataset
        if not isinstance(base, S4Dataset | MS3Dataset | AVSSDataset):
            raise TypeError(f"negative audio needs an S4, MS3 or AVSS dataset, got {type(base).__name__}")
        self._base = base
        self._categories: dict[int, frozenset[str]] = {}
        self._warned: set[int] = set()

    def categories(self, index: int) -> frozenset[str]:
        """The sounding categories of clip ``index`` (empty: unknown, MS3)."""
        clip = self.clips[index]
        if isinstance(self._base, S4Dataset):
            return frozenset({str(clip.category)})
        if isinstance(self._base, MS3Dataset):
            return frozenset()
        if index not in self._categories:
            names = self._base.class_names
            classes: set[int] = set()
            for path in clip.masks:
                if path is not None:
                    indices = decode_palette_array(read_rgb_mask_array(path), len(names), path)
                    classes.update(np.unique(indices).tolist())
            self._categories[index] = frozenset(names[c] for c in classes - {0})
        return self._categories[index]

    def _generator(self, index: int, key: tuple[int, ...] | None) -> np.random.Generator:
        if key is not None:
            return np.random.default_rng([index, _NEGATIVE_AUDIO_STREAM, *key])
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def donor(self, index: int, key: tuple[int, ...] | None = None) -> int | None:
        """The clip whose audio sample ``index`` hears, ``None`` when it keeps its own (draws seeded by ``key``)."""
        rng = self._generator(index, key)
        if not rng.random() < self.ratio:
            return None
        own = self.categories(index)
        for candidate in rng.permutation(len(self.clips)).tolist():
            if candidate != index and not own & self.categories(candidate):
                return int(candidate)
        if index not in self._warned:
            self._warned.add(index)
            warnings.warn(
                f"negative audio: no other training clip shares no category with clip {self.clips[index].name!r} "
                f"({', '.join(sorted(own))}); it keeps its own audio and masks",
                stacklevel=2,
            )
        return None

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Tensor]:
        """Sample ``index``, or ``index[0]`` with its draws seeded by ``index[1:]`` (see the class docstring)."""
        i, key = (index[0], tuple(index[1:])) if isinstance(index, tuple) else (index, None)
        sample = self.dataset[i]
        donor = self.donor(i, key)
        if donor is None:
            return sample
        clip = self.clips[donor]
        if isinstance(self.dataset, CachedLogMel):
            sample[AUDIO] = torch.from_numpy(self.dataset.cache.load(clip))
        else:
            waveform, length = read_clip_audio(clip, self._base.n_samples)
            sample[WAVEFORM], sample[WAVEFORM_LENGTH] = waveform, torch.tensor(length)
        sample[MASKS] = torch.zeros_like(sample[MASKS])  # nothing in these frames sounds
        return sample


class BaseAVDataModule(LightningDataModule):
    """Split set-up, one DataLoader factory, and device-side batch preparation.

    Training drops the last incomplete batch, so a training split with fewer samples (per process) than
    ``batch_size`` has no batch at all: that is a :class:`~avtoolkit.errors.DatasetError` when training starts,
    except in a ``fast_dev_run`` (a smoke test of the set-up), which trains on one smaller batch of the whole split.
    Evaluation keeps the last batch, so a small val/test split is one smaller batch.

    Args:
        batch_size: Samples per batch (per process under DDP).
        num_workers: DataLoader worker processes (0 reads in the main process).
    """

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.datasets: dict[Split, Dataset[dict[str, Tensor]]] = {}
        self._train_sampler: ResumableSampler | None = None
        self._held_out: set[str] | None = None

    def build_dataset(self, split: Split) -> Dataset[dict[str, Tensor]]:
        """The dataset of one split (implemented by each datamodule)."""
        raise NotImplementedError

    @property
    def test_sets(self) -> tuple[Split, ...]:
        """The sets the test split is evaluated in, apart, each logged under its own name as prefix.

        ``("test",)``; on a tree of the held-out-family protocol ``("test", "test_held_out")``: the in-family clips,
        then the held-out-family clips (:mod:`avtoolkit.data.holdout`).
        """
        return TEST_SETS if self.held_out_names() else ("test",)

    def held_out_names(self) -> set[str]:
        """The names of the tree's held-out-family test clips (empty without the protocol, or without a ``root``)."""
        if self._held_out is None:
            root = getattr(self, "root", None)
            self._held_out = set() if root is None else held_out_clips(root)
        return self._held_out

    def keeps(self, split: Split, clip_name: str) -> bool:
        """Whether the clip of that name, in the files of ``split``, belongs to the dataset ``split``."""
        if split == "test":
            return clip_name not in self.held_out_names()
        if split == "test_held_out":
            return clip_name in self.held_out_names()
        return True

    def setup(self, stage: str) -> None:
        """Build the datasets the stage needs (once); for ``fit`` under a trainer, check there is a training batch."""
        for split in self.test_sets if stage == "test" else _STAGE_SPLITS[stage]:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)
        if stage == "fit" and self.trainer is not None:
            self._train_batch_size()  # fail here, before validation sanity steps, not when training starts

    def _draw_keys(self, split: Split) -> bool:
        """Whether the split's samples are indexed with a draw key (see :class:`ResumableSampler`)."""
        return False

    def _train_batch_size(self, warn: bool = False) -> int:
        """The training batch size: ``batch_size``, or in a ``fast_dev_run`` the split's share if that is smaller.

        Raises:
            DatasetError: the training split has fewer samples per process than one batch (outside a fast_dev_run).
        """
        world = 1 if self.trainer is None else self.trainer.world_size
        n = len(self.datasets["train"])  # type: ignore[arg-type]
        per_process = math.ceil(n / world)
        if per_process >= self.batch_size:
            return self.batch_size
        root = getattr(self, "root", None)
        split = "the train split" + ("" if root is None else f" of {root}")
        share = "" if world == 1 else f" ({per_process} per process on {world} processes)"
        if self.trainer is not None and getattr(self.trainer, "fast_dev_run", False):
            if warn:
                warnings.warn(
                    f"fast_dev_run: {split} has {n} samples{share}, fewer than batch_size {self.batch_size}; this "
                    f"smoke test trains on one batch of {per_process}. A real run stops with an error: lower "
                    "data.init_args.batch_size or add training clips.",
                    stacklevel=3,
                )
            return per_process
        raise DatasetError(
            f"{split} has {n} samples{share} but batch_size is {self.batch_size}: training drops an incomplete "
            f"batch, so there would be no training batch at all. Set data.init_args.batch_size to at most "
            f"{per_process}, or add training clips."
        )

    def _loader_options(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _loader(self, split: Split) -> DataLoader[dict[str, Tensor]]:
        """The split's loader, this process's share of it under several processes.

        Training: a resumable shuffled order (see :class:`~avtoolkit.data.samplers.ResumableSampler`), seeded
        by ``seed_everything``'s seed, split across processes. Evaluation: in order; under DDP each process
        takes its own contiguous batches, so no sample is evaluated twice (Lightning's sampler would pad).
        """
        world, rank = (1, 0) if self.trainer is None else (self.trainer.world_size, self.trainer.global_rank)
        options = self._loader_options()
        dataset = _Indexed(self.datasets[split])
        if split == "train":
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            sampler = ResumableSampler(dataset, world, rank, seed, self._draw_keys(split))
            self._train_sampler = sampler
            options["batch_size"] = self._train_batch_size(warn=True)
            return ResumableDataLoader(dataset, sampler=sampler, drop_last=True, **options)
        if world > 1:
            strategy = self.trainer.strategy if self.trainer is not None else None
            if isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy):
                evaluation = EvaluationSampler(dataset, world, rank, self.batch_size, split)
                return DataLoader(dataset, sampler=evaluation, **options)
            warnings.warn(
                f"{type(strategy).__name__} runs every evaluation step on all processes together, so Lightning pads "
                f"the {split} split: up to {world - 1} samples are counted twice in the metrics. Evaluate with DDP "
                "or on one device for exact numbers.",
                stacklevel=2,
            )
        return DataLoader(dataset, shuffle=False, **options)

    def dataloader(self, split: Split) -> DataLoader[dict[str, Tensor]]:
        """The loader of one split or test set (built by :meth:`setup`), as the trainer gets it."""
        return self._loader(split)

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Shuffled training batches (the last incomplete batch dropped)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Validation batches in a fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[dict[str, Tensor]] | list[DataLoader[dict[str, Tensor]]]:
        """Test batches in a fixed order: one loader per test set (:attr:`test_sets`)."""
        loaders = [self._loader(split) for split in self.test_sets]
        return loaders[0] if len(loaders) == 1 else loaders

    def predict_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Prediction batches (the ``test`` set; Lightning splits them across processes without padding)."""
        return DataLoader(self.datasets["test"], **self._loader_options())

    def sample_names(self, split: Split, indices: Iterable[int]) -> list[str]:
        """What each sample of a split is made of, by name (a batch's ``SAMPLE_INDEX``), for messages.

        The default: the dataset's ``names`` (one clip per sample), else ``"sample i"``.
        """
        names = getattr(self.datasets.get(split), "names", None)
        return [str(names[i]) if names is not None else f"sample {i}" for i in map(int, indices)]

    def _sampler_in_use(self) -> ResumableSampler | None:
        """The training sampler yielding draw keys that the training loader in use reads from, if any."""
        loader = getattr(self.trainer, "train_dataloader", None) if self.trainer is not None else None
        sampler = getattr(loader, "sampler", self._train_sampler if loader is None else None)
        return sampler if isinstance(sampler, ResumableSampler) and sampler.draw_keys else None

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """On the device: frames to float in [0, 1]."""
        if FRAMES in batch and batch[FRAMES].dtype == torch.uint8:
            batch[FRAMES] = batch[FRAMES].float().div_(255.0)
        return batch


class SeparationDataModule(BaseAVDataModule):
    """Mix-and-separate batches from a prepared MUSIC / MUSIC-21 / VGGSound-style tree (``avtoolkit data prepare``).

    Frozen encoders can be precomputed into on-disk caches (in ``prepare_data``, once, keyed by the encoder and
    its weights): a ``visual_encoder`` turns every source's frames into a cached embedding (batches then carry
    ``visual_emb`` instead of ``frames``); a ``mixture_encoder`` (CLAP) embeds every fixed mixture — evaluation
    mixtures, and training mixtures when ``fixed_mixtures`` makes them a fixed pool (batches then carry
    ``mixture_emb``). Without caches the models run their encoders on the fly. A fixed training pool is sized
    either absolutely (``fixed_mixtures``) or per usable training clip (``fixed_mixtures_per_clip``), so that one
    config fits trees of any size (4 per clip: 880 mixtures on the small synthetic tree, 32 on the tiny one).

    With ``absent_source_ratio`` a fraction of the training mixtures query one source with the picture of a class
    absent from the mixture, whose target is then silence (see :class:`~avtoolkit.data.mixing.MixAndSeparate`): the
    model learns to output silence for an instrument that is not heard (the robustness suite's ``absent_query``
    case). Validation and test mixtures are never altered.

    Args:
        root: Dataset root holding ``{train,val,test}.csv``, ``audio/`` and ``frames/``.
        n_sources: Clips mixed per sample.
        sample_rate: Expected audio rate in Hz (files at another rate are an error).
        window: Samples per training/evaluation window (65535 ≈ 6 s at 11025 Hz gives 256 STFT frames at hop 256).
        frames_per_source: Frames per source, evenly spaced in the window.
        image_size: Side of the square frames.
        fps: Frame rate of the frame folders.
        same_class_partners: Allow mixing two clips of the same class.
        seed: Seed of the fixed evaluation mixtures (and of a fixed training pool).
        fixed_mixtures: Train on a fixed pool of this many random mixtures (cacheable) instead of fresh ones.
        fixed_mixtures_per_clip: Train on a fixed pool of this many random mixtures per usable training clip (one
            at least as long as ``window``); instead of ``fixed_mixtures``.
        visual_encoder: Frozen image encoder (e.g. ``CLIPImageEncoder``) whose frame embeddings are cached.
        mixture_encoder: Frozen audio encoder (e.g. ``CLAPAudioEncoder``) whose mixture embeddings are cached;
            its ``sample_rate`` must be the data's.
        cache_dir: Folder of the embedding caches.
        embedding_stride: Embed every n-th frame (8 at 8 fps: one embedding per second).
        absent_source_ratio: Fraction (probability per mixture, in [0, 1]) of the training mixtures in which one
            source, chosen at random, is queried with the picture of a training clip of a class in none of the
            mixture's sources, and its target becomes silence (zeros; the mixture is unchanged, ``labels`` gives
            the queried class). Drawn per (seed, epoch, sample), or per pool mixture with a fixed pool; 0 (default)
            leaves the training mixtures as they are.
        batch_size: Mixtures per batch.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        root: str | Path,
        n_sources: int = 2,
        sample_rate: int = 11025,
        window: int = 65535,
        frames_per_source: int = 3,
        image_size: int = 224,
        fps: float = 8.0,
        same_class_partners: bool = False,
        seed: int = 0,
        fixed_mixtures: int | None = None,
        fixed_mixtures_per_clip: int | None = None,
        visual_encoder: nn.Module | None = None,
        mixture_encoder: nn.Module | None = None,
        cache_dir: str | Path = "data/cache",
        embedding_stride: int = 8,
        absent_source_ratio: float = 0.0,
        batch_size: int = 16,
        num_workers: int = 2,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters(ignore=["visual_encoder", "mixture_encoder"])
        rate = getattr(mixture_encoder, "sample_rate", sample_rate)
        if rate != sample_rate:
            raise ValueError(
                f"mixture_encoder expects {rate} Hz audio but the data is at {sample_rate} Hz: set its sample_rate"
            )
        if fixed_mixtures is not None and fixed_mixtures_per_clip is not None:
            raise ConfigError(
                f"data.init_args sets both fixed_mixtures ({fixed_mixtures}) and fixed_mixtures_per_clip "
                f"({fixed_mixtures_per_clip}): keep one (the pool size, or the pool size per training clip)"
            )
        for name, value in (("fixed_mixtures", fixed_mixtures), ("fixed_mixtures_per_clip", fixed_mixtures_per_clip)):
            if value is not None and value < 1:
                raise ConfigError(f"data.init_args.{name} must be a positive number of mixtures, got {value}")
        if not 0.0 <= absent_source_ratio <= 1.0:
            raise ConfigError(
                f"data.init_args.absent_source_ratio is the fraction of training mixtures with an absent-source "
                f"query, in [0, 1]; got {absent_source_ratio}"
            )
        self.absent_source_ratio = absent_source_ratio
        self.fixed_mixtures = fixed_mixtures
        self.fixed_mixtures_per_clip = fixed_mixtures_per_clip
        self._pool_size: int | None = None
        self.frame_cache = (
            None
            if visual_encoder is None
            else FrameEmbeddingCache(cache_dir, visual_encoder, embedding_stride, image_size)  # type: ignore[arg-type]
        )
        self.mixture_cache = None if mixture_encoder is None else MixtureEmbeddingCache(cache_dir, mixture_encoder)  # type: ignore[arg-type]
        self.root = Path(root)
        self.n_sources = n_sources
        self.sample_rate = sample_rate
        self.window = window
        self.frames_per_source = frames_per_source
        self.image_size = image_size
        self.fps = fps
        self.same_class_partners = same_class_partners
        self.seed = seed

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names; ``LABELS`` index into them."""
        return class_names(self.root)

    @property
    def training_pool_size(self) -> int | None:
        """Mixtures of the fixed training pool (``None``: fresh random mixtures every epoch).

        ``fixed_mixtures``, or ``fixed_mixtures_per_clip`` × the training clips at least ``window`` long.
        """
        if self.fixed_mixtures_per_clip is None:
            return self.fixed_mixtures
        if self._pool_size is None:
            clips = read_split(self.root, "train", self.sample_rate, self.fps)
            usable = sum(clip.n_samples >= self.window for clip in clips)
            self._pool_size = self.fixed_mixtures_per_clip * max(usable, 1)  # no usable clip: the dataset says so
        return self._pool_size

    def training_visual_embeddings(self) -> Tensor:
        """Every cached frame embedding of the training clips, ``(n, D)`` float32 (fills missing cache entries).

        What a model standardises its frozen visual vectors with (mean and spread over the training clips).

        Raises:
            ValueError: the datamodule has no ``visual_encoder``, so there are no frozen embeddings.
        """
        if self.frame_cache is None:
            raise ValueError(
                "standardize_visual needs frozen visual embeddings: give the datamodule a visual_encoder "
                "(e.g. data.init_args.visual_encoder: CLIPImageEncoder), or set the model's standardize_visual: false"
            )
        clips = read_split(self.root, "train", self.sample_rate, self.fps)
        self.frame_cache.ensure(clips, _default_device(), progress=False)
        return torch.from_numpy(np.concatenate([self.frame_cache.load(clip) for clip in clips]))

    def _mixtures(self, split: Split, with_embeddings: bool) -> MixAndSeparate:
        train = split == "train"
        frame_cache, mixture_cache = self.frame_cache, self.mixture_cache
        pool = self.training_pool_size if train else None
        fixed = not train or pool is not None
        clips = read_split(self.root, file_split(split), self.sample_rate, self.fps)
        return MixAndSeparate(
            [clip for clip in clips if self.keeps(split, clip.id)],
            n_sources=self.n_sources,
            window=self.window,
            frames_per_source=self.frames_per_source,
            image_size=self.image_size,
            train=train,
            same_class_partners=self.same_class_partners,
            seed=self.seed,
            fixed_mixtures=pool,
            frame_embedding=frame_cache.mean_at_frames if with_embeddings and frame_cache is not None else None,
            mixture_embedding=mixture_cache.get if with_embeddings and mixture_cache is not None and fixed else None,
            absent_source_ratio=self.absent_source_ratio if train else 0.0,
        )

    def build_dataset(self, split: Split) -> MixAndSeparate:
        """Mix-and-separate over the split's clips (random for train, fixed for val/test)."""
        return self._mixtures(split, with_embeddings=True)

    def _draw_keys(self, split: Split) -> bool:
        """Fresh training mixtures are drawn from their sampler key (exact resume, worker-independent)."""
        return split == "train" and self.training_pool_size is None

    def sample_names(self, split: Split, indices: Iterable[int]) -> list[str]:
        """The audio files of each mixture (``a.wav + b.wav``, relative to ``root``), for messages.

        Training mixtures drawn fresh are named from the draw key of the sampler in use (the current epoch's);
        without one (another sampler, e.g. Lightning's for ``overfit_batches``) their partners were drawn at
        random, so only the indexed clip is named. An absent-source query is named too
        (``[source k queried with c.wav: absent]``).
        """
        dataset = self.datasets.get(split)
        if not isinstance(dataset, MixAndSeparate):
            return super().sample_names(split, indices)
        random_draws = split == "train" and self.training_pool_size is None
        sampler = self._sampler_in_use() if random_draws else None
        key = None if sampler is None else (sampler.seed, sampler.epoch)
        names = []
        for index in map(int, indices):
            if random_draws and key is None:
                first = self._clip_name(dataset.clips[index % len(dataset.clips)])
                names.append(f"{first} + {self.n_sources - 1} partner(s) drawn at random")
                continue
            recipe = dataset.recipe(index, key)
            name = " + ".join(self._clip_name(dataset.clips[i]) for i in recipe.clips)
            if recipe.absent is not None and recipe.query is not None:
                query = self._clip_name(dataset.clips[recipe.query])
                name += f" [source {recipe.absent + 1} queried with {query}: absent]"
            names.append(name)
        return names

    def _clip_name(self, clip: Clip) -> str:
        try:
            return str(clip.audio.relative_to(self.root))
        except ValueError:
            return str(clip.audio)

    def prepare_data(self) -> None:
        """Fill the embedding caches (once; later runs find them complete)."""
        self.fill_caches()

    def fill_caches(self, device: torch.device | str | None = None, progress: bool = True) -> list[CacheReport]:
        """Compute what the embedding caches lack (nothing without encoders).

        Frame embeddings of every clip of every split; mixture embeddings of every fixed mixture (val/test, and the
        training pool when ``fixed_mixtures`` is set), with the keys the batches look them up by.

        Args:
            device: Where the encoders run; ``None``: CUDA when available, else the CPU.
            progress: Show progress bars.

        Returns:
            Per cache (none without encoders): its folder, the entries the tree needs, how many were computed now.
        """
        device = _default_device() if device is None else device
        reports = []
        if self.frame_cache is not None:
            clips: dict[tuple[str, str], Clip] = {}
            for split in ("train", "val", "test"):
                clips.update({(c.label, c.id): c for c in read_split(self.root, split, self.sample_rate, self.fps)})
            computed = self.frame_cache.ensure(list(clips.values()), device, progress)
            reports.append(CacheReport("frame embeddings", self.frame_cache.folder, len(clips), computed))
        if self.mixture_cache is not None:
            entries = computed = 0
            for split in ("train", "val", *self.test_sets):
                if split == "train" and self.training_pool_size is None:
                    continue  # fresh random training mixtures are not cacheable
                mixtures = self._mixtures(split, with_embeddings=False)  # the very mixtures the batches look up
                all_recipes = [mixtures.recipe(i) for i in range(len(mixtures))]
                recipes = {recipe.key(mixtures.clips, self.window): recipe for recipe in all_recipes}

                def waveforms(keys: list[str], mixtures: MixAndSeparate = mixtures, recipes: dict = recipes) -> Tensor:
                    return torch.stack([mixtures.sources(recipes[key]).sum(0) for key in keys])

                entries += len(recipes)
                computed += self.mixture_cache.ensure(list(recipes), waveforms, device, progress=progress)
            reports.append(CacheReport("mixture embeddings", self.mixture_cache.folder, entries, computed))
        return reports


class SegmentationDataModule(BaseAVDataModule):
    """AVSBench S4 / MS3 / AVSS batches in the official layouts, with the VGGish log-mel of each clip's audio.

    The log-mel (``AUDIO``) is computed on the batch's device from the waveform, or, with ``cache_dir``, computed
    once per clip into an on-disk cache (:class:`~avtoolkit.data.features.LogMelCache`, filled by
    :meth:`prepare_data` or ahead of time by :func:`~avtoolkit.data.precompute.compute_features`) and read by the
    workers, which then read no audio. Both give the same batches (up to float32 rounding), except that cached
    batches carry no ``WAVEFORM``/``WAVEFORM_LENGTH``.

    With ``negative_audio_ratio`` a fraction of the training samples hear another training clip's sound, of a
    category absent from their frames, and have empty masks (:class:`NegativeAudio`): the model learns not to
    segment when the sound comes from off screen (the robustness suite's ``negative_offscreen`` case). Validation
    and test samples are never altered.

    Args:
        dataset: Which benchmark layout ``root`` holds.
        root: Dataset root (the folder with ``s4_meta_data.csv``, ``ms3_meta_data.csv`` or ``metadata.csv``).
        image_size: Side of the square frames and masks.
        avss_subsets: AVSS subsets to read (v1s, v1m, v2).
        avss_frames: Frames per AVSS clip (v1 clips are zero-padded to it; padded frames are never evaluated).
        cache_dir: Folder of the feature caches (the log-mel goes to ``{cache_dir}/log_mel/{key}``); ``None``
            computes the log-mel on the device for every batch.
        negative_audio_ratio: Fraction (probability per sample, in [0, 1]) of the training samples whose audio
            is replaced by negative audio: the sound of another training clip whose categories share nothing with
            this clip's (S4: its category; AVSS: the classes in its masks; MS3 has no categories: any other clip),
            with the masks emptied (all background; the same frames trained on). Drawn per (seed, epoch, sample);
            0 (default) leaves the training samples as they are.
        batch_size: Clips per batch.
        num_workers: DataLoader workers (and threads reading audio when the cache is filled).
    """

    def __init__(
        self,
        dataset: Literal["s4", "ms3", "avss"],
        root: str | Path,
        image_size: int = 224,
        avss_subsets: tuple[Literal["v1s", "v1m", "v2"], ...] = ("v1s", "v1m", "v2"),
        avss_frames: int = 10,
        cache_dir: str | Path | None = None,
        negative_audio_ratio: float = 0.0,
        batch_size: int = 4,
        num_workers: int = 2,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        if not 0.0 <= negative_audio_ratio <= 1.0:
            raise ConfigError(
                f"data.init_args.negative_audio_ratio is the fraction of training samples given negative audio, "
                f"in [0, 1]; got {negative_audio_ratio}"
            )
        self.negative_audio_ratio = negative_audio_ratio
        self.dataset = dataset
        self.root = Path(root)
        self.image_size = image_size
        self.avss_subsets = avss_subsets
        self.avss_frames = avss_frames
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._log_mel_cache: LogMelCache | None = None
        # One 0.96 s window per frame; S4/MS3 repeat the last window when audio is short, AVSS zero-pads.
        self.log_mel = VGGishLogMel(*log_mel_settings(dataset, avss_frames))

    @property
    def log_mel_cache(self) -> LogMelCache | None:
        """The on-disk log-mel cache, ``None`` without ``cache_dir``.

        Built on first use, so a datamodule can be configured (e.g. a config parsed) where the tree is absent.
        """
        if self.cache_dir is not None and self._log_mel_cache is None:
            self._log_mel_cache = LogMelCache(
                self.cache_dir, self.root, self.dataset, self.avss_frames, num_workers=max(1, self.num_workers)
            )
        return self._log_mel_cache

    def build_dataset(self, split: Split) -> Dataset[dict[str, Tensor]]:
        """The split of the chosen benchmark (its samples carry the cached log-mel when there is a cache).

        The training split is a :class:`NegativeAudio` when ``negative_audio_ratio`` is above 0.
        """
        dataset: S4Dataset | MS3Dataset | AVSSDataset
        files = file_split(split)
        if self.dataset == "s4":
            dataset = S4Dataset(self.root, files, self.image_size)
        elif self.dataset == "ms3":
            dataset = MS3Dataset(self.root, files, self.image_size)
        else:
            dataset = AVSSDataset(self.root, files, self.image_size, self.avss_subsets, self.avss_frames)
        if split.startswith("test"):
            dataset = dataset.only(lambda name: self.keeps(split, name), f" ({split} set)")
        cache = self.log_mel_cache
        readable = dataset if cache is None else CachedLogMel(dataset, cache)
        if split == "train" and self.negative_audio_ratio > 0:
            return NegativeAudio(readable, self.negative_audio_ratio)
        return readable

    def _draw_keys(self, split: Split) -> bool:
        """Negative audio is drawn from the sampler's key (exact resume, worker-independent)."""
        return split == "train" and self.negative_audio_ratio > 0

    def sample_names(self, split: Split, indices: Iterable[int]) -> list[str]:
        """Clip names; a training sample given negative audio also names the clip its audio comes from.

        The draws are read from the key of the sampler in use (the current epoch's); without one (another sampler,
        e.g. Lightning's for ``overfit_batches``) they were made at random, and the name says so.
        """
        indices = list(map(int, indices))
        names = super().sample_names(split, indices)
        dataset = self.datasets.get(split)
        if not isinstance(dataset, NegativeAudio):
            return names
        sampler = self._sampler_in_use()
        if sampler is None:
            return [f"{name} (its audio possibly another clip's, drawn at random)" for name in names]
        donors = [dataset.donor(i, (sampler.seed, sampler.epoch)) for i in indices]
        return [
            name if donor is None else f"{name} with the audio of {dataset.names[donor]} (negative audio)"
            for name, donor in zip(names, donors, strict=True)
        ]

    def all_clips(self) -> list[SegClip]:
        """Every clip of every split (for AVSS, of the chosen subsets), in metadata order."""
        return avsbench_clips(self.root, self.dataset, self.avss_frames, self.avss_subsets)

    def prepare_data(self) -> None:
        """Fill the log-mel cache, if any, for every clip of every split (once; later runs find it complete)."""
        self.fill_caches()

    def fill_caches(self, device: torch.device | str | None = None, progress: bool = True) -> list[CacheReport]:
        """Compute the log-mel of the clips the cache lacks (nothing without ``cache_dir``).

        Args:
            device: Where the log-mel is computed; ``None``: CUDA when available, else the CPU.
            progress: Show a progress bar.

        Returns:
            The log-mel cache's folder, the clips the tree has and how many were computed now (empty without cache).
        """
        cache = self.log_mel_cache
        if cache is None:
            return []
        clips = self.all_clips()
        computed = cache.ensure(clips, _default_device() if device is None else device, progress)
        return [CacheReport("log-mel", cache.folder, len({cache.path(clip) for clip in clips}), computed)]

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """On the device: frames to float, audio → VGGish log-mel ``(B, T, 1, 96, 64)`` unless it came cached."""
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        if AUDIO not in batch:
            self.log_mel.to(batch[WAVEFORM].device)
            batch[AUDIO] = self.log_mel(batch[WAVEFORM], batch.get(WAVEFORM_LENGTH))
        return batch
