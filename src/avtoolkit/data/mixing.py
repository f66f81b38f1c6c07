"""The mix-and-separate sampler (Sound-of-Pixels lineage).

Each sample draws N clips (the indexed clip plus N − 1 partners of other classes), crops the same-length window
from each, applies a training-time random gain U(0.5, 1.5), clips to [−1, 1], divides by N and sums. The scaled
sources are the targets. Per source, ``frames_per_source`` frames are taken evenly inside the window — decoded,
or looked up in a frame-embedding cache.

A sample is first drawn as a :class:`Recipe` (which clips, windows, gains, flips), then rendered. Fixed recipes
(evaluation, or a fixed training pool) have a stable key, under which a mixture embedding (CLAP) can be cached.
Workers only seek-read the audio windows and decode frames; everything spectral happens on the device.

Absent-source queries (training only, ``absent_source_ratio``): in that fraction of the mixtures one source's
picture is swapped for the picture of a clip of a class in none of the mixture's sources, and that source's target
becomes silence (zeros); the mixture is unchanged. The model learns to output silence for an instrument that is not
heard (the robustness suite's ``absent_query`` case).
"""

import dataclasses
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
    """How one mixture is made: which clips (indices into the dataset's clips), windows, gains, flips.

    An absent-source query (``absent`` set) swaps the picture of source ``absent`` for the picture of clip ``query``
    (a class in none of ``clips``), taken in its window from ``query_start``, flipped if ``query_flip``; that source's
    target is silent. The mixture (and its :meth:`key`) stays the mixture of ``clips``.
    """

    clips: tuple[int, ...]
    starts: tuple[int, ...]
    gains: tuple[float, ...]
    flips: tuple[bool, ...]
    absent: int | None = None
    query: int | None = None
    query_start: int = 0
    query_flip: bool = False

    def key(self, clips: Sequence[Clip], window: int) -> str:
        """A stable identifier of the rendered mixture (clip ids, windows, gains; not the queries)."""
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

    With ``absent_source_ratio`` (training only) a fraction of the mixtures query one source, chosen at random,
    with the picture of a clip of a class absent from the mixture (random window and flip), and that source's target
    in ``SOURCES`` is zeros; ``MIXTURE`` is the sum of the clips' scaled audio as without it, and ``LABELS`` gives
    the queried (absent) class for that source. These draws come after the mixture's own, from the same generator:
    the mixtures are those of ``absent_source_ratio = 0``. A mixture with no absent class (it holds every class of
    the split) stays as it is.

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
        absent_source_ratio: Training only: the probability in [0, 1] that a mixture has an absent-source query.
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
        absent_source_ratio: float = 0.0,
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
        if not 0.0 <= absent_source_ratio <= 1.0:
            raise ValueError(f"absent_source_ratio is a probability in [0, 1], got {absent_source_ratio}")
        if absent_source_ratio > 0 and not train:
            raise ValueError("absent-source queries are for training sets only (evaluation mixtures are fixed)")
        if absent_source_ratio > 0 and (len(labels) < 2 or (not same_class_partners and len(labels) <= n_sources)):
            raise DatasetError(
                f"absent-source queries need a class that is not in the mixture, but every mixture of {n_sources} "
                f"sources holds all {len(labels)} classes of the split; add classes, lower n_sources, or set "
                "absent_source_ratio to 0"
            )
        self.fixed_mixtures = fixed_mixtures
        self.frame_embedding = frame_embedding
        self.mixture_embedding = mixture_embedding
        self.absent_source_ratio = absent_source_ratio
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
        recipe = Recipe(tuple(chosen), starts, gains, flips)
        if self.absent_source_ratio > 0:  # drawn after the mixture's own draws: the mixture is the same
            recipe = self._absent_query(recipe, rng)
        return recipe

    def _absent_query(self, recipe: Recipe, rng: np.random.Generator) -> Recipe:
        """With probability ``absent_source_ratio``: one source queried with a clip of a class absent from the mix."""
        if not rng.random() < self.absent_source_ratio:
            return recipe
        allowed = np.flatnonzero(~np.isin(self._labels, self._labels[list(recipe.clips)]))
        if allowed.size == 0:
            return recipe
        slot = int(rng.integers(len(recipe.clips)))
        query = int(rng.choice(allowed))
        start = int(rng.integers(0, self.clips[query].n_samples - self.window + 1))
        flip = bool(rng.random() < 0.5)
        return dataclasses.replace(recipe, absent=slot, query=query, query_start=start, query_flip=flip)

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
        pictures, starts, flips = list(recipe.clips), list(recipe.starts), list(recipe.flips)
        mixture = sources.sum(0)
        if recipe.absent is not None and recipe.query is not None:  # the query's class is not heard: silence
            sources[recipe.absent] = 0.0
            pictures[recipe.absent], starts[recipe.absent] = recipe.query, recipe.query_start
            flips[recipe.absent] = recipe.query_flip
        sample = {
            MIXTURE: mixture,
            SOURCES: sources,
            LABELS: torch.tensor([self.clips[i].label_index for i in pictures]),
        }
        per_source = [
            (self.clips[i], self._frame_indices(self.clips[i], s)) for i, s in zip(pictures, starts, strict=True)
        ]
        if self.frame_embedding is not None:
            embeddings = [self.frame_embedding(clip, indices) for clip, indices in per_source]
            sample[VISUAL_EMB] = torch.from_numpy(np.stack(embeddings)).float()
        else:
            frames = []
            for (clip, indices), flip in zip(per_source, flips, strict=True):
                stack = torch.stack([read_image(frame_path(clip, k), self.image_size) for k in indices])
                frames.append(stack.flip(-1) if flip else stack)
            sample[FRAMES] = torch.stack(frames)
        if self.mixture_embedding is not None:
            sample[MIXTURE_EMB] = torch.from_numpy(self.mixture_embedding(recipe.key(self.clips, self.window))).float()
        return sample
