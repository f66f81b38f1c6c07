"""Audio feature caches of the AVSBench layouts: VGGish log-mel examples and VGGish embeddings, per clip.

Segmentation models read VGGish log-mel examples (``AUDIO``, ``(T, 1, 96, 64)`` per clip). Without a cache the
datamodule computes them on the batch's device (:class:`~avtoolkit.data.audio.VGGishLogMel`); with one they are
computed once per clip, kept on disk, and read by the workers. A VGGish with known weights can also be run once
over the cached log-mel to keep its embeddings ``(T, 128)`` per clip, for analyses and linear probes (no network
reads them from the batch: FAVS and TPAVI run their own, possibly trained, VGGish on ``AUDIO``)::

    {root}/log_mel/{key}/manifest.json
    {root}/log_mel/{key}/{clip's audio path in the tree, .npy}     float32 (T, 1, 96, 64)
    {root}/vggish/{key}/manifest.json
    {root}/vggish/{key}/{clip's audio path in the tree, .npy}      float32 (T, 128)

As for the embedding caches (:mod:`avtoolkit.data.embeddings`), ``{key}`` is a digest of everything the values
depend on, written out in ``manifest.json``: for the log-mel the layout, a digest of the tree's metadata CSV (so
two trees that share clip names never share entries), the feature settings (rate, window, hop, FFT size, a
digest of the mel filterbank, examples per clip, padding rule) and the storage; for the embeddings the log-mel
key and the VGGish identity (class and a digest of its weights). Other settings or weights give another folder;
old folders are never read again and can be deleted. Each entry is written to a temporary file and renamed into
place, so an interrupted run leaves no partial entry and concurrent writers (two nodes filling the same cache)
are harmless. The datamodule's ``prepare_data`` fills what it reads; to fill it ahead of training, from the
training config, use :func:`avtoolkit.data.precompute.compute_features` or ``avtoolkit data features``.

The log-mel is stored as float32, so a cached batch equals the on-the-fly one up to float32 rounding. float16
would change values by up to 2e-3 (those of magnitude 4 to 8 fall on steps of 4e-3), to save half of a size that
is already below the wav's (5 s of 16-bit audio is 160 kB, its log-mel 123 kB).
"""

import hashlib
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from avtoolkit.data.audio import VGGishLogMel
from avtoolkit.data.avsbench import read_clip_audio
from avtoolkit.data.avsbench_layout import AVSS_METADATA, MS3_METADATA, S4_FRAMES, S4_METADATA, SAMPLE_RATE, SegClip
from avtoolkit.data.batch import AUDIO
from avtoolkit.data.embeddings import cache_folder
from avtoolkit.data.errors import DatasetError
from avtoolkit.utils.digest import state_digest
from avtoolkit.utils.files import atomic_path

SegLayout = Literal["s4", "ms3", "avss"]
Layout = Literal["s4", "ms3", "avss", "music"]
Pad = Literal["repeat", "zero"]
SEG_LAYOUTS: tuple[SegLayout, ...] = get_args(SegLayout)

LOG_MEL_VERSION = 1
"""Version of the log-mel computation (:class:`VGGishLogMel` and how the audio is read); part of the key."""

_METADATA = {"s4": S4_METADATA, "ms3": MS3_METADATA, "avss": AVSS_METADATA}


class CacheError(RuntimeError):
    """A cache entry that cannot be read. The message names the file and the folder to delete."""


def log_mel_settings(layout: SegLayout, avss_frames: int = 10) -> tuple[int, Pad]:
    """Examples per clip and how missing ones are filled: ``(5, "repeat")`` for S4/MS3, ``(avss_frames, "zero")``.

    One 0.96 s example per video frame; short audio repeats its last example (the AVSBench-object code) or is
    zero-padded (AVSBench-semantic).
    """
    if layout not in SEG_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(SEG_LAYOUTS)}, got {layout!r}")
    return (avss_frames, "zero") if layout == "avss" else (S4_FRAMES, "repeat")


def _digest(array: Tensor) -> str:
    return hashlib.sha256(array.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _metadata_digest(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(f"metadata file not found: {path}. Point root at the dataset folder holding it.")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class _ClipFiles:
    """Per-clip ``.npy`` entries of one cache folder, named after the clip's audio file in the tree."""

    folder: Path
    dataset_root: Path
    shape: tuple[int, ...]
    what: str
    fill_hint: str

    def path(self, clip: SegClip) -> Path:
        """The file of a clip's entry."""
        try:
            relative = clip.audio.relative_to(self.dataset_root)
        except ValueError:
            raise ValueError(f"clip {clip.name!r}: its audio {clip.audio} is not inside {self.dataset_root}") from None
        return self.folder / relative.with_suffix(".npy")

    def _is_complete(self, clip: SegClip) -> bool:
        path = self.path(clip)
        if not path.is_file():
            return False
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError):  # unreadable (e.g. truncated): computed again
            return False
        return array.shape == self.shape and array.dtype == np.float32

    def missing(self, clips: Iterable[SegClip]) -> list[SegClip]:
        """The clips (without repeats, in order) whose entry is absent, unreadable or of the wrong shape."""
        unique = {self.path(clip): clip for clip in clips}
        return [clip for clip in unique.values() if not self._is_complete(clip)]

    def _save(self, clip: SegClip, value: np.ndarray) -> None:
        with atomic_path(self.path(clip)) as tmp:
            np.save(tmp, np.ascontiguousarray(value, dtype=np.float32))

    def load(self, clip: SegClip) -> np.ndarray:
        """A clip's entry, float32 of the cache's shape.

        Raises:
            FileNotFoundError: not computed yet.
            CacheError: the file is damaged (the message names it and the folder to delete).
        """
        path = self.path(clip)
        try:
            array = np.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no cached {self.what} for clip {clip.name!r} ({path} is missing); fill the cache with "
                f"{self.fill_hint}"
            ) from None
        except (OSError, ValueError, EOFError) as err:
            raise CacheError(
                f"{path} is not a readable cache entry ({type(err).__name__}: {err}). The cache is damaged: delete "
                f"{self.folder} and fill it again with {self.fill_hint}."
            ) from err
        if array.shape != self.shape or array.dtype != np.float32:
            raise CacheError(
                f"{path} holds {array.dtype} {array.shape}, not the float32 {self.shape} of its cache. The cache is "
                f"damaged: delete {self.folder} and fill it again with {self.fill_hint}."
            )
        return array


class LogMelCache(_ClipFiles):
    """Per-clip VGGish log-mel examples ``(T, 1, 96, 64)`` of an AVSBench tree, equal to the on-the-fly ones.

    The clip's audio is read as the datasets read it (the first ``T`` seconds, zero-padded, with the file's
    length) and :class:`~avtoolkit.data.audio.VGGishLogMel` runs with the layout's padding rule
    (:func:`log_mel_settings`), so a cached entry equals what the datamodule computes on the device, up to float32
    rounding (the same operations, in other batches or on another device).

    Args:
        root: Cache root (the folder ``{root}/log_mel/{key}`` is used).
        dataset_root: The tree (the folder with its metadata CSV); entries are named after the audio files in it.
        layout: Which AVSBench layout the tree has.
        avss_frames: Frames (and examples) per AVSS clip.
        batch_size: Clips per log-mel call in :meth:`ensure`.
        num_workers: Threads reading audio while the log-mel is computed.
    """

    def __init__(
        self,
        root: str | Path,
        dataset_root: str | Path,
        layout: SegLayout,
        avss_frames: int = 10,
        batch_size: int = 16,
        num_workers: int = 2,
    ) -> None:
        if batch_size < 1 or num_workers < 1 or avss_frames < 1:
            raise ValueError("avss_frames, batch_size and num_workers must be positive")
        self.cache_root = Path(root)
        self.dataset_root = Path(dataset_root)
        self.layout = layout
        self.n_examples, self.pad = log_mel_settings(layout, avss_frames)
        self.n_samples = self.n_examples * SAMPLE_RATE
        self.batch_size = batch_size
        self.num_workers = num_workers
        frames = VGGishLogMel.example_frames
        self.shape = (self.n_examples, 1, frames, 64)
        reference = VGGishLogMel(self.n_examples, self.pad)
        metadata = self.dataset_root / _METADATA[layout]
        settings = {
            "kind": "log_mel",
            "version": LOG_MEL_VERSION,
            "layout": layout,
            "dataset": {"metadata": metadata.name, "sha256": _metadata_digest(metadata)},
            "audio": f"first {self.n_examples} s at {SAMPLE_RATE} Hz, zero-padded; file length kept for padding",
            "log_mel": (
                f"VGGishLogMel: {reference.window_length}-sample periodic Hann, hop {reference.hop_length}, "
                f"|rfft {reference.n_fft}|, 64 mel bands (filterbank sha256 {_digest(reference.mel)}), "
                f"log(x + 0.01), examples of {frames} frames"
            ),
            "examples": self.n_examples,
            "pad": self.pad,
            "shape": list(self.shape),
            "dtype": "float32",
        }
        self.folder = cache_folder(self.cache_root / "log_mel", settings)
        self.what = "log-mel"
        self.fill_hint = (
            "the datamodule's prepare_data() (cache_dir set) or `avtoolkit data features EXPERIMENT.yaml` (the "
            "training config)"
        )

    def read(self, clip: SegClip) -> tuple[Tensor, int]:
        """The clip's audio as the datasets read it: ``(T·16000,)`` waveform and its real length."""
        return read_clip_audio(clip, self.n_samples)

    def ensure(self, clips: Iterable[SegClip], device: torch.device | str = "cpu", progress: bool = True) -> int:
        """Compute and store the log-mel of the clips that lack it.

        A clip's file appears only when it is complete; stopping half-way keeps the finished clips.

        Args:
            clips: The clips (e.g. :func:`avsbench_clips`).
            device: Where the log-mel is computed.
            progress: Show a progress bar (clips).

        Returns:
            How many clips were computed.
        """
        todo = self.missing(clips)
        if not todo:
            return 0
        log_mel = VGGishLogMel(self.n_examples, self.pad).to(device)
        batches = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        with (
            ThreadPoolExecutor(self.num_workers) as pool,
            tqdm(total=len(todo), desc="log-mel", unit="clip", disable=not progress) as bar,
        ):

            def submit(batch: list[SegClip]) -> list[Future[tuple[Tensor, int]]]:
                return [pool.submit(self.read, clip) for clip in batch]

            pending = submit(batches[0])
            for b, batch in enumerate(batches):
                reads, pending = pending, (submit(batches[b + 1]) if b + 1 < len(batches) else [])
                results = [future.result() for future in reads]
                waveforms = torch.stack([waveform for waveform, _ in results]).to(device)
                lengths = torch.tensor([length for _, length in results])
                with torch.no_grad():
                    features = log_mel(waveforms, lengths).cpu().numpy()
                for clip, feature in zip(batch, features, strict=True):
                    self._save(clip, feature)
                bar.update(len(batch))
        return len(todo)


def module_identity(module: nn.Module) -> str:
    """The module's ``identity()`` if it has one, else its class and the digest of its weights.

    E.g. ``avtoolkit.models.encoders.vggish.VGGish|state:1a2b3c4d5e6f7a8b``: the same weights (from any file)
    give the same identity, other weights or another width (other shapes) another one.
    """
    identity = getattr(module, "identity", None)
    if callable(identity):
        return str(identity())
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}|state:{state_digest(module)[:16]}"


class VGGishEmbeddingCache(_ClipFiles):
    """Per-clip VGGish embeddings ``(T, 128)`` of the cached log-mel, one row per example (padded ones included).

    For analyses and linear probes of the audio features: the segmentation networks run their own VGGish on
    ``AUDIO`` (FAVS fine-tunes it by default), so these are not put in the batches.

    Args:
        log_mel: The log-mel cache the embeddings are computed from (filled by :meth:`ensure` when needed).
        vggish: A VGGish-like module: ``(N, 1, 96, 64)`` → ``(feature_map, embedding (N, D))``, e.g.
            ``VGGish(weights=...)``. Run in eval mode without gradients.
        batch_size: Clips per VGGish call.
    """

    def __init__(self, log_mel: LogMelCache, vggish: nn.Module, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.log_mel = log_mel
        self.vggish: nn.Module | None = vggish
        self.batch_size = batch_size
        self.dataset_root = log_mel.dataset_root
        self.embedding_dim = int(getattr(vggish, "embedding_dim", 128))
        self.shape = (log_mel.n_examples, self.embedding_dim)
        settings = {
            "kind": "vggish",
            "log_mel": log_mel.folder.name,
            "encoder": module_identity(vggish),
            "output": "embedding (forward()[1]), eval mode",
            "shape": list(self.shape),
            "dtype": "float32",
        }
        self.folder = cache_folder(log_mel.cache_root / "vggish", settings)
        self.what = "VGGish embeddings"
        self.fill_hint = (
            "compute_features(datamodule, vggish=VGGish(weights)) or `avtoolkit data features EXPERIMENT.yaml "
            "--vggish_weights PATH`"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["vggish"] = None  # readers in other processes only load
        return state

    def ensure(self, clips: Iterable[SegClip], device: torch.device | str = "cpu", progress: bool = True) -> int:
        """Compute and store the embeddings of the clips that lack them (and their log-mel first, if missing).

        Args:
            clips: The clips.
            device: Where VGGish runs (it is moved there).
            progress: Show progress bars (clips).

        Returns:
            How many clips' embeddings were computed.
        """
        clips = list(clips)
        todo = self.missing(clips)
        if not todo:
            return 0
        if self.vggish is None:
            raise RuntimeError("this cache was unpickled without its VGGish: it can only load")
        self.log_mel.ensure(todo, device, progress)
        training = self.vggish.training
        self.vggish.to(device).eval()
        try:
            with tqdm(total=len(todo), desc="VGGish embeddings", unit="clip", disable=not progress) as bar:
                for i in range(0, len(todo), self.batch_size):
                    batch = todo[i : i + self.batch_size]
                    log_mel = torch.from_numpy(np.stack([self.log_mel.load(clip) for clip in batch])).to(device)
                    with torch.no_grad():
                        _, embedding = self.vggish(log_mel.flatten(0, 1))
                    embeddings = embedding.float().cpu().unflatten(0, log_mel.shape[:2]).numpy()
                    if embeddings.shape[1:] != self.shape:
                        raise RuntimeError(
                            f"VGGish returned embeddings of shape {tuple(embedding.shape)} for "
                            f"{log_mel.shape[0] * log_mel.shape[1]} examples; expected (N, {self.embedding_dim})"
                        )
                    for clip, value in zip(batch, embeddings, strict=True):
                        self._save(clip, value)
                    bar.update(len(batch))
        finally:
            self.vggish.train(training)
        return len(todo)

    def load_many(self, clips: Sequence[SegClip]) -> np.ndarray:
        """Embeddings of several clips, float32 ``(len(clips), T, D)`` (e.g. to fit a linear probe)."""
        return np.stack([self.load(clip) for clip in clips]) if clips else np.zeros((0, *self.shape), np.float32)


class _ClipDataset(Protocol):
    clips: list[SegClip]
    with_waveform: bool

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Tensor]: ...


class _HasClips(Protocol):
    @property
    def clips(self) -> list[SegClip]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Tensor]: ...


class ClipDatasetWrapper(Dataset[dict[str, Tensor]]):
    """A dataset that changes the samples of an AVSBench dataset (``dataset``) and keeps its clips and names."""

    dataset: _HasClips

    @property
    def clips(self) -> list[SegClip]:
        """The dataset's clips, one per sample."""
        return self.dataset.clips

    @property
    def names(self) -> list[str]:
        """Clip name of each sample."""
        return [clip.name for clip in self.clips]

    def __len__(self) -> int:
        return len(self.dataset)


class CachedLogMel(ClipDatasetWrapper):
    """An AVSBench dataset whose samples also carry ``AUDIO`` ``(T, 1, 96, 64)``, read from a :class:`LogMelCache`.

    The wrapped dataset stops reading the audio (no ``WAVEFORM``), and the datamodule skips computing the log-mel on
    the device. Every other key is the dataset's own.

    Args:
        dataset: An S4/MS3/AVSS dataset (anything with ``clips`` aligned with its samples).
        cache: A filled log-mel cache of the same tree.
    """

    def __init__(self, dataset: _ClipDataset, cache: LogMelCache) -> None:
        dataset.with_waveform = False  # the audio is not read: only the cached log-mel is used
        self.dataset = dataset
        self.cache = cache

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = self.dataset[index]
        sample[AUDIO] = torch.from_numpy(self.cache.load(self.dataset.clips[index]))
        return sample


@dataclass(frozen=True)
class CacheReport:
    """What filling one cache did (a datamodule's ``fill_caches``, :func:`~avtoolkit.data.precompute.compute_features`).

    Args:
        name: What the cache holds.
        folder: Its folder (with ``manifest.json``).
        entries: Entries the tree needs (clips, or mixtures).
        computed: Entries this run computed (the others were already there).
    """

    name: str
    folder: Path
    entries: int
    computed: int
