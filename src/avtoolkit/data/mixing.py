"""The mix-and-separate sampler (Sound-of-Pixels lineage).

Each sample draws N clips (the indexed clip plus N − 1 partners of other classes), crops the same-length window
from each, applies a training-time random gain U(0.5, 1.5), clips to [−1, 1], divides by N and sums. The scaled
sources are the targets. Per source, ``frames_per_source`` frames are taken evenly inside the window — decoded,
or looked up in a frame-embedding cache.

A sample is first drawn as a :class:`Recipe` (which clips, windows, gains, flips), then rendered. Fixed recipes
(evaluation, or a fixed training pool) have a stable key, under which a mixture embedding (CLAP) can be cached.
Workers only seek-read the audio windows and decode frames; everything spectral happens on the device.
"""

import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from avtoolkit.data.audio import read_audio
from avtoolkit.data.batch import FRAMES, LABELS, MIXTURE, MIXTURE_EMB, SOURCES, VISUAL_EMB
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.music import Clip, frame_index, frame_path
from avtoolkit.data.video import read_image

FrameEmbedding = Callable[[Clip, list[int]], np.ndarray]
"""``(clip, 1-based frame indices) -> (D,)``: the mean embedding of those frames (an embedding cache)."""
MixtureEmbedding = Callable[[str], np.ndarray]
"""``recipe key -> (D,)``: the cached audio embedding of that mixture."""


@dataclass(frozen=True)
class Recipe:
    """How one mixture is made: which clips (indices into the dataset's clips), windows, gains, flips."""

    clips: tuple[int, ...]
    starts: tuple[int, ...]
    gains: tuple[float, ...]
    flips: tuple[bool, ...]

    def key(self, clips: Sequence[Clip], window: int) -> str:
        """A stable identifier of the rendered mixture (clip ids, windows, gains)."""
        parts = [
            f"{clips[i].label}/{clips[i].id}@{start}+{window}x{gain:.9f}"
            for i, start, gain in zip(self.clips, self.starts, self.gains, strict=True)
        ]
        return hashlib.sha1("|".join(parts).encode()).hexdigest()


class MixAndSeparate(Dataset[dict[str, Tensor]]):
    """Mixtures of N clips with their scaled sources and frames.

    Training samples are random (windows, partners, gains, flips). Indexed by a key ``(index, seed, epoch)``
    (what :class:`~avtoolkit.data.samplers.ResumableSampler` yields for training) a sample's generator is seeded
    from the key, so its draws do not depend on the worker processes and a run resumed mid-epoch draws what an
    uninterrupted one would. Indexed by a bare ``int``, the generator is seeded from torch's RNG (reproducible
    under ``lightning.seed_everything(..., workers=True)``, which seeds each worker). With ``fixed_mixtures`` the
    training set is instead a fixed pool of that many random recipes (seeded by index), so their mixture
    embeddings can be cached. Evaluation samples are fixed per index and ``seed``: centred windows, unit gain,
    deterministic partners.

    Clips shorter than the window cannot be cropped; they are left out with a warning that counts them
    (``n_skipped_short``).

    Args:
        clips: The split's clips.
        n_sources: N, clips per mixture.
        window: Samples per clip window (65535 ≈ 6 s at 11025 Hz in the recipe).
        frames_per_source: Frames taken per source, evenly spaced inside the window.
        image_size: Side of the square frames.
        train: Random crops/partners/gains/flips (True) or the fixed evaluation protocol (False).
        same_class_partners: Allow partners of the same class as the indexed clip.
        seed: Seed of the evaluation partners (and of a fixed training pool).
        fixed_mixtures: Training only: a fixed pool of this many recipes instead of fresh random mixtures.
        frame_embedding: Look up visual embeddings instead of decoding frames (samples then carry
            ``visual_emb (N, D)`` instead of ``frames``).
        mixture_embedding: Look up the mixture's cached audio embedding (samples then carry ``mixture_emb``);
            only for fixed recipes (evaluation or ``fixed_mixtures``).
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        n_sources: int = 2,
        window: int = 65535,
        frames_per_source: int = 3,
        image_size: int = 224,
        train: bool = True,
        same_class_partners: bool = False,
        seed: int = 0,
        fixed_mixtures: int | None = None,
        frame_embedding: FrameEmbedding | None = None,
        mixture_embedding: MixtureEmbedding | None = None,
    ) -> None:
        long_enough = [clip for clip in clips if clip.n_samples >= window]
        self.n_skipped_short = len(clips) - len(long_enough)
        if self.n_skipped_short:
            shortest = min(clips, key=lambda c: c.n_samples)
            warnings.warn(
                f"{self.n_skipped_short} of {len(clips)} clips are shorter than the {window}-sample window and are "
                f"left out (shortest: {shortest.audio}, {shortest.n_samples} samples). Use a shorter window to keep "
                "them.",
                stacklevel=2,
            )
        self.clips = long_enough
        labels = {clip.label for clip in self.clips}
        if len(self.clips) < n_sources or (not same_class_partners and len(labels) < n_sources):
            raise DatasetError(
                f"cannot mix {n_sources} sources from {len(self.clips)} usable clips of {len(labels)} classes; "
                "add clips/classes, lower n_sources, or allow same_class_partners"
            )
        self.n_sources = n_sources
        self.window = window
        self.frames_per_source = frames_per_source
        self.image_size = image_size
        self.train = train
        self.same_class_partners = same_class_partners
        self.seed = seed
        if fixed_mixtures is not None and (not train or fixed_mixtures < 1):
            raise ValueError("fixed_mixtures is a positive pool size, for training sets only")
        if mixture_embedding is not None and train and fixed_mixtures is None:
            raise ValueError("mixture embeddings are cached per fixed recipe: set fixed_mixtures for training")
        self.fixed_mixtures = fixed_mixtures
        self.frame_embedding = frame_embedding
        self.mixture_embedding = mixture_embedding
        self._labels = np.array([clip.label for clip in self.clips])

    def __len__(self) -> int:
        return self.fixed_mixtures or len(self.clips)

    def _generator(self, index: int, key: tuple[int, ...] | None) -> np.random.Generator:
        if not self.train:
            return np.random.default_rng([self.seed, index])
        if self.fixed_mixtures is not None:
            return np.random.default_rng([self.seed, index, 1])
        if key is not None:
            return np.random.default_rng([self.seed, index, 2, *key])
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def _partners(self, index: int, rng: np.random.Generator) -> list[int]:
        chosen = [index]
        while len(chosen) < self.n_sources:
            if self.same_class_partners:
                allowed = np.ones(len(self.clips), dtype=bool)
            else:
                allowed = ~np.isin(self._labels, self._labels[chosen])
            allowed[chosen] = False
            chosen.append(int(rng.choice(np.flatnonzero(allowed))))
        return chosen

    def recipe(self, index: int, key: tuple[int, ...] | None = None) -> Recipe:
        """Which clips, windows, gains and flips make sample ``index`` (training draws seeded by ``key`` if given)."""
        rng = self._generator(index, key)
        chosen = self._partners(index % len(self.clips), rng)
        slacks = [self.clips[i].n_samples - self.window for i in chosen]
        if not self.train:
            return Recipe(tuple(chosen), tuple(s // 2 for s in slacks), (1.0,) * len(chosen), (False,) * len(chosen))
        starts = tuple(int(rng.integers(0, s + 1)) for s in slacks)
        gains = tuple(float(g) for g in rng.uniform(0.5, 1.5, len(chosen)))
        flips = tuple(bool(f) for f in rng.random(len(chosen)) < 0.5)
        return Recipe(tuple(chosen), starts, gains, flips)

    def sources(self, recipe: Recipe) -> Tensor:
        """The scaled sources ``(N, L)`` of a recipe: window × gain, clipped to [−1, 1], divided by N."""
        waves = []
        for i, start, gain in zip(recipe.clips, recipe.starts, recipe.gains, strict=True):
            clip = self.clips[i]
            wave = read_audio(clip.audio, clip.sample_rate, start, self.window)
            waves.append(torch.clamp(wave * gain, -1.0, 1.0) if gain != 1.0 else wave)
        return torch.stack(waves) / len(waves)

    def _frame_indices(self, clip: Clip, start: int) -> list[int]:
        times = (
            start + (np.arange(self.frames_per_source) + 0.5) * self.window / self.frames_per_source
        ) / clip.sample_rate
        return [frame_index(clip, float(t)) for t in times]

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Tensor]:
        """Sample ``index``, or ``index[0]`` with its draws seeded by ``index[1:]`` (see the class docstring)."""
        recipe = self.recipe(index[0], tuple(index[1:])) if isinstance(index, tuple) else self.recipe(index)
        sources = self.sources(recipe)
        sample = {
            MIXTURE: sources.sum(0),
            SOURCES: sources,
            LABELS: torch.tensor([self.clips[i].label_index for i in recipe.clips]),
        }
        per_source = [
            (self.clips[i], self._frame_indices(self.clips[i], s))
            for i, s in zip(recipe.clips, recipe.starts, strict=True)
        ]
        if self.frame_embedding is not None:
            embeddings = [self.frame_embedding(clip, indices) for clip, indices in per_source]
            sample[VISUAL_EMB] = torch.from_numpy(np.stack(embeddings)).float()
        else:
            frames = []
            for (clip, indices), flip in zip(per_source, recipe.flips, strict=True):
                stack = torch.stack([read_image(frame_path(clip, k), self.image_size) for k in indices])
                frames.append(stack.flip(-1) if flip else stack)
            sample[FRAMES] = torch.stack(frames)
        if self.mixture_embedding is not None:
            sample[MIXTURE_EMB] = torch.from_numpy(self.mixture_embedding(recipe.key(self.clips, self.window))).float()
        return sample
