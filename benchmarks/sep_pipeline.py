"""Separation input pipeline: avtoolkit's loader vs a loader in the style of the published repositories.

Both read the same prepared MUSIC-layout files and deliver the same training batches (N = 2 sources, a
65535-sample window, 3 frames per source, 224×224 frames, 256×256 warped magnitude spectrograms):

- **published style** (Sound-of-Pixels / CLIPSep / iQuery data loaders): in each worker, per sample, decode the
  whole audio file with librosa, crop, load frames with PIL and float torchvision transforms, mix, compute the
  mixture's and every source's STFT with librosa, and warp the magnitudes;
- **avtoolkit**: workers seek-read only the window and decode the frames to uint8; the STFT and the warp run
  batched on the device in the task (``AVSeparationTask``), timed here as the "front end".

Prints samples/s of the published-style loader, of avtoolkit's loader alone, and of avtoolkit end to end (loader
+ front end on this machine's device, where a CPU-only machine runs the front end on the same cores as the
workers). Exits non-zero when the end-to-end speed-up is below ``--target``.

    .venv/bin/python benchmarks/sep_pipeline.py [--root data/synthetic/music] [--num-workers 2]
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from avtoolkit.data.audio import Spectrogram, log_frequency_grid
from avtoolkit.data.batch import MIXTURE, SOURCES
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.data.music import Clip, frame_index, frame_path, read_split

N_FFT, HOP, WARP, WINDOW, FRAMES, IMAGE = 1022, 256, 256, 65535, 3, 224


class PublishedStyleDataset(Dataset):
    """Per-sample work in the worker, as the published Sound-of-Pixels-lineage loaders do it."""

    def __init__(self, clips: list[Clip], n_sources: int = 2) -> None:
        self.clips = [c for c in clips if c.n_samples >= WINDOW]
        self.n_sources = n_sources
        self.transform = transforms.Compose(
            [
                transforms.Resize(int(IMAGE * 1.1)),
                transforms.RandomCrop(IMAGE),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self) -> int:
        return len(self.clips)

    @staticmethod
    def warp(magnitude: np.ndarray) -> torch.Tensor:
        """Log-frequency warp of one magnitude spectrogram, in the worker."""
        x = torch.from_numpy(magnitude).float()[None, None]
        return F.grid_sample(x, log_frequency_grid(WARP, x.shape[-1]), align_corners=True)[0, 0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng()
        chosen = [index, *(int(i) for i in rng.choice(len(self.clips), self.n_sources - 1, replace=False))]
        audios, frames = [], []
        for i in chosen:
            clip = self.clips[i]
            wave, _ = librosa.load(str(clip.audio), sr=clip.sample_rate)  # decodes the whole file
            start = int(rng.integers(0, len(wave) - WINDOW + 1))
            audios.append(np.clip(wave[start : start + WINDOW] * rng.uniform(0.5, 1.5), -1, 1) / self.n_sources)
            times = (start + (np.arange(FRAMES) + 0.5) * WINDOW / FRAMES) / clip.sample_rate
            paths = [frame_path(clip, frame_index(clip, float(t))) for t in times]
            frames.append(torch.stack([self.transform(Image.open(p).convert("RGB")) for p in paths]))
        mixture = np.sum(audios, axis=0)
        mix_stft = librosa.stft(mixture, n_fft=N_FFT, hop_length=HOP)
        return {
            "mag_mix": self.warp(np.abs(mix_stft)),
            "phase_mix": torch.from_numpy(np.angle(mix_stft)),
            "mags": torch.stack([self.warp(np.abs(librosa.stft(a, n_fft=N_FFT, hop_length=HOP))) for a in audios]),
            "frames": torch.stack(frames),
        }


def samples_per_second(loader: DataLoader, batches: int, on_batch: Callable[[dict], None]) -> float:
    """Throughput over ``batches`` batches, after two warm-up batches (workers started)."""
    iterator = iter(loader)
    for _ in range(2):
        on_batch(next(iterator))
    start, samples = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        on_batch(batch)
        samples += next(iter(batch.values())).shape[0]
    return samples / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/synthetic/music"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--target", type=float, default=10.0)
    args = parser.parse_args()
    if not (args.root / "train.csv").is_file():
        from avtoolkit.data.synth import generate

        generate("music", args.root, "small")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule = SeparationDataModule(
        args.root,
        window=WINDOW,
        frames_per_source=FRAMES,
        image_size=IMAGE,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    datamodule.setup("fit")
    spectrogram = Spectrogram(N_FFT, HOP, WARP).to(device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def transfer(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        synchronize()
        return batch

    def front_end(batch: dict[str, torch.Tensor]) -> None:  # what AVSeparationTask computes before the network
        batch = datamodule.on_after_batch_transfer(transfer(batch), 0)
        mixture = spectrogram.stft(batch[MIXTURE])
        spectrogram.warp(spectrogram.magnitude(mixture)), mixture.angle()
        spectrogram.warp(spectrogram.magnitude(spectrogram.stft(batch[SOURCES])))
        synchronize()

    published = DataLoader(
        PublishedStyleDataset(read_split(args.root, "train")),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
    )
    rate_published = samples_per_second(published, args.batches, transfer)
    del published
    rate_loader = samples_per_second(datamodule.train_dataloader(), args.batches, transfer)
    rate_ours = samples_per_second(datamodule.train_dataloader(), args.batches, front_end)
    batch = next(iter(datamodule.train_dataloader()))
    front_end(batch)
    start = time.perf_counter()
    for _ in range(3):
        front_end(batch)
    front_ms = (time.perf_counter() - start) / 3 * 1e3

    print(
        f"separation input pipeline on {args.root}: batch {args.batch_size}, {args.num_workers} workers, device "
        f"{device}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'pipeline':<52}{'samples/s':>10}{'speed-up':>10}")
    rows = [
        ("published style (whole-file librosa, STFT in workers)", rate_published),
        ("avtoolkit loader alone (seek-read, uint8 frames)", rate_loader),
        ("avtoolkit end to end (loader + front end on device)", rate_ours),
    ]
    for name, rate in rows:
        print(f"{name:<52}{rate:>10.1f}{rate / rate_published:>9.1f}x")
    print(f"avtoolkit front end (STFT, magnitude, warp) on {device}: {front_ms:.0f} ms per batch")
    speedup = rate_ours / rate_published
    verdict = "PASS" if speedup >= args.target else "FAIL"
    print(f"end-to-end speed-up {speedup:.1f}x (target >= {args.target:g}x): {verdict}")
    return 0 if speedup >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
