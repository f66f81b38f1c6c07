"""Separation input pipeline: avtoolkit's loader vs a loader in the style of the published repositories.

Both read the same prepared MUSIC-layout files and deliver the same training batches (N = 2 sources, a 65535-sample
window, 3 frames per source, 224×224 frames, warped 256×256 magnitude spectrograms):

- **published style** (Sound-of-Pixels / CLIPSep / iQuery data loaders): in each worker, per sample, decode the
  whole audio file with librosa, crop, load frames with PIL and float torchvision transforms, mix, compute the
  mixture's and every source's STFT with librosa, and warp the magnitudes;
- **avtoolkit**: workers seek-read only the window and decode the frames to uint8; the STFT and the warp run
  batched on the device (here the CPU, and counted in the time) in ``on_after_batch_transfer`` / the task.

Prints samples/s of each and exits non-zero when avtoolkit is less than ``--target`` times faster.

    .venv/bin/python benchmarks/sep_pipeline.py [--root data/synthetic/music] [--num-workers 2]
"""

import argparse
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from avtoolkit.data.audio import Spectrogram, log_frequency_grid
from avtoolkit.data.batch import FRAMES, MIXTURE, SOURCES
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.data.music import Clip, frame_index, frame_path, read_split

N_FFT, HOP, WARP = 1022, 256, 256


class PublishedStyleDataset(Dataset):
    """Per-sample work in the worker, as the published Sound-of-Pixels-lineage loaders do it."""

    def __init__(self, clips: list[Clip], window: int, n_frames: int, image_size: int, n_sources: int = 2) -> None:
        self.clips = [c for c in clips if c.n_samples >= window]
        self.window, self.n_frames, self.n_sources = window, n_frames, n_sources
        self.transform = transforms.Compose(
            [
                transforms.Resize(int(image_size * 1.1)),
                transforms.RandomCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self) -> int:
        return len(self.clips)

    def _warp(self, magnitude: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(magnitude).float()[None, None]
        grid = log_frequency_grid(WARP, x.shape[-1])
        return F.grid_sample(x, grid, align_corners=True)[0, 0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng()
        chosen = [index] + [int(i) for i in rng.choice(len(self.clips), self.n_sources - 1, replace=False)]
        audios, frames = [], []
        for i in chosen:
            clip = self.clips[i]
            wave, _ = librosa.load(str(clip.audio), sr=clip.sample_rate)  # decodes the whole file
            start = int(rng.integers(0, len(wave) - self.window + 1))
            audios.append(np.clip(wave[start : start + self.window] * rng.uniform(0.5, 1.5), -1, 1) / self.n_sources)
            times = (start + (np.arange(self.n_frames) + 0.5) * self.window / self.n_frames) / clip.sample_rate
            frames.append(
                torch.stack(
                    [
                        self.transform(Image.open(frame_path(clip, frame_index(clip, float(t)))).convert("RGB"))
                        for t in times
                    ]
                )
            )
        mixture = np.sum(audios, axis=0)
        mix_stft = librosa.stft(mixture, n_fft=N_FFT, hop_length=HOP)
        source_magnitudes = [np.abs(librosa.stft(a, n_fft=N_FFT, hop_length=HOP)) for a in audios]
        return {
            "mag_mix": self._warp(np.abs(mix_stft)),
            "phase_mix": torch.from_numpy(np.angle(mix_stft)),
            "mags": torch.stack([self._warp(m) for m in source_magnitudes]),
            "frames": torch.stack(frames),
        }


def time_loader(loader: DataLoader, batches: int, device_work, warmup: int = 2) -> float:
    """Samples per second over ``batches`` batches after ``warmup`` batches (workers started)."""
    iterator = iter(loader)
    for _ in range(warmup):
        device_work(next(iterator))
    start, samples = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        device_work(batch)
        samples += next(iter(batch.values())).shape[0]
    return samples / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/synthetic/music"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--target", type=float, default=10.0)
    args = parser.parse_args()
    if not (args.root / "train.csv").is_file():
        from avtoolkit.data.synth import generate

        generate("music", args.root, "small")
    torch.set_num_threads(2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    window, n_frames, image_size = 65535, 3, 224

    datamodule = SeparationDataModule(
        args.root,
        window=window,
        frames_per_source=n_frames,
        image_size=image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    datamodule.setup("fit")
    spectrogram = Spectrogram(N_FFT, HOP, WARP).to(device)

    def ours_on_device(batch: dict[str, torch.Tensor]) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch = datamodule.on_after_batch_transfer(batch, 0)
        mixture = spectrogram.stft(batch[MIXTURE])
        spectrogram.warp(mixture.abs()), mixture.angle()
        spectrogram.warp(spectrogram.stft(batch[SOURCES]).abs())
        assert batch[FRAMES].dtype == torch.float32
        if device.type == "cuda":
            torch.cuda.synchronize()

    def published_on_device(batch: dict[str, torch.Tensor]) -> None:
        {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()

    published = DataLoader(
        PublishedStyleDataset(read_split(args.root, "train"), window, n_frames, image_size),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
    )
    rate_published = time_loader(published, args.batches, published_on_device)
    rate_ours = time_loader(datamodule.train_dataloader(), args.batches, ours_on_device)
    speedup = rate_ours / rate_published
    print(
        f"separation input pipeline, {args.root} (batch {args.batch_size}, {args.num_workers} workers, device {device})"
    )
    print(f"{'pipeline':<34}{'samples/s':>12}")
    print(f"{'published style (librosa, worker)':<34}{rate_published:>12.1f}")
    print(f"{'avtoolkit (seek-read, device STFT)':<34}{rate_ours:>12.1f}")
    print(f"speed-up: {speedup:.1f}x (target >= {args.target:g}x)")
    return 0 if speedup >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
