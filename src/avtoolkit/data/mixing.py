"""The mix-and-separate sampler (Sound-of-Pixels lineage, specs/separation.md "Common recipe").

Each sample draws N clips (the indexed clip plus N − 1 partners of other classes), crops the same-length window
from each, applies a training-time random gain U(0.5, 1.5), clips to [−1, 1], divides by N and sums. The scaled
sources are the targets. Per source, ``frames_per_source`` frames are taken evenly inside the window.

Workers only seek-read the audio window and decode the chosen frames; everything spectral happens on the device.
"""

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from avtoolkit.data.audio import read_audio
from avtoolkit.data.batch import FRAMES, LABELS, MIXTURE, SOURCES
from avtoolkit.data.errors import DatasetError
from avtoolkit.data.music import Clip, frame_index, frame_path
from avtoolkit.data.video import read_image


class MixAndSeparate(Dataset[dict[str, Tensor]]):
    """Mixtures of N clips with their scaled sources and frames.

    Training samples are random (windows, partners, gains, flips) and reproducible under
    ``lightning.seed_everything(..., workers=True)``: the generator of each sample is seeded from torch's RNG,
    which Lightning seeds per worker and epoch. Evaluation samples are fixed per index and ``seed``: centred
    windows, unit gain, deterministic partners.

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
        seed: Seed of the evaluation partners.
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
        self._labels = np.array([clip.label for clip in self.clips])

    def __len__(self) -> int:
        return len(self.clips)

    def _generator(self, index: int) -> np.random.Generator:
        if self.train:
            return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        return np.random.default_rng([self.seed, index])

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

    def _source(self, clip: Clip, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """Scaled audio window ``(L,)`` and frames ``(Tv, 3, H, W)`` of one clip."""
        slack = clip.n_samples - self.window
        start = int(rng.integers(0, slack + 1)) if self.train else slack // 2
        audio = read_audio(clip.audio, clip.sample_rate, start, self.window)
        if self.train:
            audio = torch.clamp(audio * float(rng.uniform(0.5, 1.5)), -1.0, 1.0)
        times = (
            start + (np.arange(self.frames_per_source) + 0.5) * self.window / self.frames_per_source
        ) / clip.sample_rate
        indices = [frame_index(clip, float(t)) for t in times]
        frames = torch.stack([read_image(frame_path(clip, k), self.image_size) for k in indices])
        if self.train and rng.random() < 0.5:
            frames = frames.flip(-1)
        return audio / self.n_sources, frames

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = self._generator(index)
        chosen = self._partners(index, rng)
        audio, frames = zip(*(self._source(self.clips[i], rng) for i in chosen), strict=True)
        sources = torch.stack(audio)
        return {
            MIXTURE: sources.sum(0),
            SOURCES: sources,
            FRAMES: torch.stack(frames),
            LABELS: torch.tensor([self.clips[i].label_index for i in chosen]),
        }
