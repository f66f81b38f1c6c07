"""On-disk caches of frozen-encoder embeddings: CLIP frame embeddings per clip, CLAP embeddings per mixture.

Each cache lives in a folder named by a digest of the encoder's ``identity()`` (model, digest of its weights,
preprocessing) and the cache's own settings, so a different encoder, other weights or other settings land in a
new folder and old entries are never returned. The folder's ``manifest.json`` records all of it in clear::

    {root}/frames/{key}/manifest.json
    {root}/frames/{key}/{label}/{clip id}.npy      float16 (n_embedded, D), one per clip
    {root}/mixtures/{key}/manifest.json
    {root}/mixtures/{key}/embeddings.sqlite        table embeddings(key TEXT PRIMARY KEY, value BLOB float16 (D,))

Writes are atomic (a clip's file is renamed into place when complete; mixtures are written in SQLite
transactions), so an interrupted run leaves no partial entry, and two processes computing the same entry is
harmless (the same values; the last rename or the first insert wins). Old folders are not deleted: remove
``{root}/frames/<key>`` folders whose manifest names an encoder you no longer use.

Without a cache, the encoders are plain modules a model calls on the fly.
"""

import hashlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from avtoolkit.data.music import Clip, frame_index, frame_path
from avtoolkit.data.video import read_image
from avtoolkit.utils.files import atomic_path

FORMAT_VERSION = 1
"""Version of the on-disk layout; part of every cache key."""

_SQL_CHUNK = 500  # keys per SELECT (SQLite limits the number of bound parameters)


class EmbeddingEncoder(Protocol):
    """What the caches need from an encoder.

    :class:`~avtoolkit.models.encoders.clip.CLIPImageEncoder` and
    :class:`~avtoolkit.models.encoders.clap.CLAPAudioEncoder` are such encoders; ``data`` does not import
    ``models``.
    """

    @property
    def embedding_dim(self) -> int:
        """Size D of the embeddings."""
        ...

    def identity(self) -> str:
        """Stable description of model, weights and preprocessing."""
        ...

    def to(self, device: torch.device | str) -> Any:
        """Move to a device (``nn.Module.to``)."""
        ...

    def __call__(self, inputs: Tensor, /) -> Tensor:
        """A batch of inputs → ``(B, D)`` embeddings."""
        ...


def cache_folder(base: Path, settings: Mapping[str, Any]) -> Path:
    """``base/{key}`` for ``settings`` (the encoder identity and cache settings), with its manifest written.

    The key is the first 16 hex digits of the SHA-256 of the settings as sorted JSON.

    Raises:
        RuntimeError: the folder's manifest records other settings (a digest collision, or an edited manifest).
    """
    text = json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True, indent=2)
    folder = base / hashlib.sha256(text.encode()).hexdigest()[:16]
    manifest = folder / "manifest.json"
    if manifest.is_file():
        if json.loads(manifest.read_text()) != json.loads(text):
            raise RuntimeError(f"{manifest} does not record the settings its name stands for; delete {folder}.")
    else:
        with atomic_path(manifest) as tmp:
            tmp.write_text(text + "\n")
    return folder


class FrameEmbeddingCache:
    """Per-clip frame embeddings (e.g. CLIP ViT-B/32) of a MUSIC-layout dataset, computed once, kept on disk.

    Every ``stride``-th frame of a clip is embedded: frames 1, 1 + stride, 1 + 2·stride, ... (1-based, as in
    the frame folders), ``ceil(n_frames / stride)`` rows. With ``stride`` 8 at 8 fps that is one embedding per
    second, row ``j`` showing time ``j`` s. :meth:`at_time` and :meth:`at_frames` return the nearest embedded
    frame. Frames are read as the mix-and-separate sampler reads them (square, ``image_size``, antialiased), so
    a cached embedding equals the on-the-fly one up to float16 rounding.

    Clips are identified by label and id (ids are unique in a dataset).

    Args:
        root: Cache root (the folder ``{root}/frames/{key}`` is used).
        encoder: The frame encoder: ``(N, 3, H, W)`` floats in [0, 1] → ``(N, D)``.
        stride: Embed every ``stride``-th frame.
        image_size: Side of the square frames given to the encoder.
        batch_size: Frames per encoder call.
        num_workers: Threads decoding JPEGs while the encoder runs.
    """

    def __init__(
        self,
        root: str | Path,
        encoder: EmbeddingEncoder,
        stride: int = 8,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 4,
    ) -> None:
        if stride < 1 or image_size < 1 or batch_size < 1 or num_workers < 1:
            raise ValueError("stride, image_size, batch_size and num_workers must be positive")
        self.encoder = encoder
        self.stride = stride
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.embedding_dim = encoder.embedding_dim
        settings = {
            "kind": "frames",
            "encoder": encoder.identity(),
            "embedding_dim": self.embedding_dim,
            "stride": stride,
            "image_size": image_size,
            "frames": "read_image(size=image_size) / 255",
            "dtype": "float16",
        }
        self.folder = cache_folder(Path(root) / "frames", settings)

    def path(self, clip: Clip) -> Path:
        """The file of a clip's embeddings."""
        return self.folder / clip.label / f"{clip.id}.npy"

    def n_embedded(self, clip: Clip) -> int:
        """Number of embedded frames of a clip: ``ceil(n_frames / stride)``."""
        return math.ceil(clip.n_frames / self.stride)

    def embedded_frames(self, clip: Clip) -> list[int]:
        """The 1-based indices of the embedded frames, one per row."""
        return list(range(1, clip.n_frames + 1, self.stride))

    def row(self, clip: Clip, frame: int) -> int:
        """The row of the embedded frame nearest to 1-based frame ``frame`` (ties go to the later one)."""
        return min(max(math.floor((frame - 1) / self.stride + 0.5), 0), self.n_embedded(clip) - 1)

    def _is_complete(self, clip: Clip) -> bool:
        path = self.path(clip)
        if not path.is_file():
            return False
        try:
            return np.load(path, mmap_mode="r").shape == (self.n_embedded(clip), self.embedding_dim)
        except (OSError, ValueError):  # unreadable: computed again
            return False

    def missing(self, clips: Iterable[Clip]) -> list[Clip]:
        """The clips (without repeats) whose file is absent or does not have the expected shape."""
        unique = {(clip.label, clip.id): clip for clip in clips}
        return [clip for clip in unique.values() if not self._is_complete(clip)]

    def ensure(self, clips: Iterable[Clip], device: torch.device | str, progress: bool = True) -> int:
        """Compute and store the embeddings of the clips that lack them (moves the encoder to ``device``).

        A clip's file appears only once all its rows are computed; stopping half-way keeps the finished clips.
        Files whose shape no longer matches the clip (a re-extracted clip with another frame count) are
        computed again.

        Args:
            clips: The clips.
            device: Where the encoder runs.
            progress: Show a progress bar (frames).

        Returns:
            How many clips were computed.
        """
        todo = self.missing(clips)
        items = [(c, row, frame) for c, clip in enumerate(todo) for row, frame in enumerate(self.embedded_frames(clip))]
        if not items:
            return 0
        self.encoder.to(device)
        rows: dict[int, np.ndarray] = {}
        filled: dict[int, int] = {}
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        with (
            ThreadPoolExecutor(self.num_workers) as pool,
            tqdm(total=len(items), desc="frame embeddings", unit="frame", disable=not progress) as bar,
        ):

            def submit(batch: list[tuple[int, int, int]]) -> list[Future[Tensor]]:
                return [pool.submit(read_image, frame_path(todo[c], frame), self.image_size) for c, _, frame in batch]

            pending = submit(batches[0])
            for b, batch in enumerate(batches):
                images, pending = pending, (submit(batches[b + 1]) if b + 1 < len(batches) else [])
                frames = torch.stack([future.result() for future in images]).to(device).float() / 255.0
                with torch.no_grad():
                    embeddings = self.encoder(frames).float().cpu().numpy().astype(np.float16)
                if embeddings.shape != (len(batch), self.embedding_dim):
                    raise RuntimeError(
                        f"the encoder returned shape {embeddings.shape} for {len(batch)} frames; expected "
                        f"({len(batch)}, {self.embedding_dim})"
                    )
                for (c, row, _), embedding in zip(batch, embeddings, strict=True):
                    if c not in rows:
                        rows[c] = np.empty((self.n_embedded(todo[c]), self.embedding_dim), np.float16)
                        filled[c] = 0
                    rows[c][row] = embedding
                    filled[c] += 1
                    if filled[c] == len(rows[c]):
                        with atomic_path(self.path(todo[c])) as tmp:
                            np.save(tmp, rows.pop(c))
                bar.update(len(batch))
        return len(todo)

    def load(self, clip: Clip) -> np.ndarray:
        """A clip's embeddings, float32 ``(n_embedded, D)``; row ``j`` is frame ``1 + j·stride``.

        Raises:
            FileNotFoundError: not computed yet (call :meth:`ensure`).
            ValueError: the file does not match the clip (stale: call :meth:`ensure` again).
        """
        path = self.path(clip)
        if not path.is_file():
            raise FileNotFoundError(
                f"no frame embeddings for clip {clip.label}/{clip.id} in {self.folder}; call ensure() on the clips."
            )
        embeddings = np.load(path)
        if embeddings.shape != (self.n_embedded(clip), self.embedding_dim):
            raise ValueError(
                f"{path} has shape {embeddings.shape} but clip {clip.id} needs ({self.n_embedded(clip)}, "
                f"{self.embedding_dim}); its frames changed: call ensure() again to recompute it."
            )
        return embeddings.astype(np.float32)

    def at_frames(self, clip: Clip, frames: Sequence[int]) -> np.ndarray:
        """Embeddings ``(len(frames), D)`` of the embedded frames nearest to 1-based frame indices."""
        return self.load(clip)[[self.row(clip, frame) for frame in frames]]

    def mean_at_frames(self, clip: Clip, frames: Sequence[int]) -> np.ndarray:
        """Mean embedding ``(D,)`` over the embedded frames nearest to 1-based frame indices."""
        return self.at_frames(clip, frames).mean(axis=0)

    def at_time(self, clip: Clip, time: float) -> np.ndarray:
        """Embedding ``(D,)`` of the embedded frame nearest to the frame shown at ``time`` seconds."""
        return self.at_frames(clip, [frame_index(clip, time)])[0]


class MixtureEmbeddingCache:
    """Per-mixture audio embeddings (e.g. CLAP of a mix-and-separate mixture), keyed by caller-given strings.

    The key must determine the mixture (e.g. its clip ids, window starts and gains); the cache does not check
    it. Entries live in one SQLite file: millions of mixtures stay one file, reads of a batch are one query, each
    :meth:`put_many` is one transaction, and concurrent processes (DataLoader workers, DDP ranks) wait for each
    other's locks. SQLite needs working POSIX file locks: keep the cache on a local disk, not NFS.

    A solo clip is a mixture of one source: its embedding is stored under a key naming the clip and its window
    like any other (e.g. the recipe keys of ``n_sources=1``), so per-clip CLAP embeddings need no cache of their
    own. They cannot stand in for a mixture's embedding (HFRA's alignment target): CLAP is not linear, so the
    embedding of a mixture cannot be derived from those of its sources.

    Args:
        root: Cache root (the folder ``{root}/mixtures/{key}`` is used).
        encoder: The audio encoder: ``(B, L)`` waveforms → ``(B, D)``.
        batch_size: Mixtures per encoder call in :meth:`ensure`.
    """

    def __init__(self, root: str | Path, encoder: EmbeddingEncoder, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.encoder = encoder
        self.batch_size = batch_size
        self.embedding_dim = encoder.embedding_dim
        settings = {"kind": "mixtures", "encoder": encoder.identity(), "embedding_dim": self.embedding_dim}
        self.folder = cache_folder(Path(root) / "mixtures", {**settings, "dtype": "float16"})
        self.path = self.folder / "embeddings.sqlite"
        self._local = threading.local()  # one connection per thread and process

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"]  # connections do not cross processes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection; a connection inherited through ``fork`` (DataLoader workers) is not reused."""
        pid, connection = getattr(self._local, "connection", (None, None))
        if connection is None or pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=120.0)
            with connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
                )
            self._local.connection = (os.getpid(), connection)
        return connection

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored embeddings (float32 ``(D,)``) of those ``keys`` that are in the cache."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        connection = self._connection()
        for i in range(0, len(unique), _SQL_CHUNK):
            chunk = unique[i : i + _SQL_CHUNK]
            query = f"SELECT key, value FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})"
            for key, value in connection.execute(query, chunk):
                found[key] = np.frombuffer(value, dtype=np.float16).astype(np.float32)
        return found

    def get(self, key: str) -> np.ndarray:
        """The stored embedding of ``key``.

        Raises:
            KeyError: not computed yet (call :meth:`ensure`; the datamodule does so in ``prepare_data``).
        """
        found = self.get_many([key])
        if key not in found:
            raise KeyError(
                f"no embedding for mixture {key!r} in {self.path}; fill the cache first (ensure(), or the "
                "datamodule's prepare_data)"
            )
        return found[key]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The ``keys`` (without repeats, in order) that are not in the cache."""
        unique = list(dict.fromkeys(keys))
        found = self.get_many(unique)
        return [key for key in unique if key not in found]

    def put_many(self, items: Mapping[str, np.ndarray | Tensor]) -> None:
        """Store embeddings ``(D,)`` (as float16), all or none; keys already present keep their value.

        Raises:
            ValueError: an embedding does not have shape ``(D,)`` (nothing is stored).
        """
        rows = []
        for key, value in items.items():
            array = value.detach().float().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
            if array.shape != (self.embedding_dim,):
                raise ValueError(f"embedding of {key!r} has shape {array.shape}; expected ({self.embedding_dim},)")
            rows.append((key, array.astype(np.float16).tobytes()))
        with self._connection() as connection:  # one transaction: committed, or rolled back on error
            connection.executemany("INSERT OR IGNORE INTO embeddings (key, value) VALUES (?, ?)", rows)

    def ensure(
        self,
        keys: Iterable[str],
        make_waveforms: Callable[[list[str]], Tensor],
        device: torch.device | str,
        progress: bool = False,
    ) -> int:
        """Compute and store the embeddings of the keys that lack them, ``batch_size`` at a time.

        Each batch is stored as soon as it is computed, so stopping half-way keeps the finished batches. Moves
        the encoder to ``device``.

        Args:
            keys: Mixture keys.
            make_waveforms: Keys → their mixtures ``(len(keys), L)`` at the encoder's sample rate.
            device: Where the encoder runs.
            progress: Show a progress bar (mixtures).

        Returns:
            How many embeddings were computed.
        """
        todo = self.missing(keys)
        if todo:
            self.encoder.to(device)
        with tqdm(total=len(todo), desc="mixture embeddings", unit="mix", disable=not progress) as bar:
            for i in range(0, len(todo), self.batch_size):
                batch = todo[i : i + self.batch_size]
                waveforms = make_waveforms(batch)
                if waveforms.ndim != 2 or waveforms.shape[0] != len(batch):
                    raise ValueError(
                        f"make_waveforms returned shape {tuple(waveforms.shape)} for {len(batch)} keys; expected "
                        f"({len(batch)}, L)"
                    )
                with torch.no_grad():
                    embeddings = self.encoder(waveforms.to(device))
                self.put_many(dict(zip(batch, embeddings, strict=True)))
                bar.update(len(batch))
        return len(todo)
