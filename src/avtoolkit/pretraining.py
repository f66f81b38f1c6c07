"""Encoder pre-training on a dataset's own labels: the stand-in for pre-trained weights that cannot be downloaded.

FAVS, TPAVI and the other AVSBench models start from a VGGish trained on AudioSet, whose features already tell
the sounds apart. Trained from scratch on a few hundred clips, a segmentation network finds it easier to
memorise which object of each training frame is the target than to learn what the audio says, and then
swapping the audio changes nothing. :func:`pretrain_vggish` gives such runs the starting point the papers
assume: it trains VGGish with a linear classifier to name the category of each clip of an S4-layout tree's
*training* split from its embedding (validation clips only measure it), and writes the VGGish state dict
(feature layers and embedding MLP, without the classifier) for the models' ``audio_weights``: networks that read
the feature map (FAVS) load the feature layers, those that read the embedding (TPAVI) load both.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from avtoolkit.data.batch import AUDIO, LABELS
from avtoolkit.data.datamodules import SegmentationDataModule, Split
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.utils.files import atomic_path


@dataclass(frozen=True)
class PretrainingResult:
    """What a pre-training run reached.

    Args:
        path: The written state dict.
        steps: Optimiser steps taken.
        train_loss: Cross-entropy of the last step.
        val_accuracy: Category accuracy on the validation split (clip level).
        n_categories: Categories learned.
    """

    path: Path
    steps: int
    train_loss: float
    val_accuracy: float
    n_categories: int


class _ClipClassifier(nn.Module):
    """VGGish embedding of each window → average over the clip's windows → linear category logits."""

    def __init__(self, vggish: VGGish, n_categories: int) -> None:
        super().__init__()
        self.vggish = vggish
        self.head = nn.Linear(vggish.embedding_dim, n_categories)

    def forward(self, log_mel: Tensor) -> Tensor:
        """``(B, T, 1, 96, 64)`` log-mel windows → ``(B, n_categories)`` logits."""
        _, embedding = self.vggish(log_mel.flatten(0, 1))
        return self.head(embedding.unflatten(0, log_mel.shape[:2]).mean(1))


def _log_mel_and_labels(datamodule: SegmentationDataModule, split: Split, batch_size: int) -> tuple[Tensor, Tensor]:
    """Every clip of ``split`` (none dropped): log-mel windows ``(n, T, 1, 96, 64)`` and category ``(n,)``."""
    loader = DataLoader(datamodule.build_dataset(split), batch_size, num_workers=datamodule.num_workers)
    windows, labels = [], []
    for batch in loader:
        batch = datamodule.on_after_batch_transfer(batch, 0)
        windows.append(batch[AUDIO])
        labels.append(batch[LABELS])
    if not windows:
        raise ValueError(f"{datamodule.root}: the {split} split has no clips")
    return torch.cat(windows), torch.cat(labels)


def pretrain_vggish(
    root: str | Path,
    out: str | Path,
    width: float = 1.0,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    num_workers: int = 2,
    progress: bool = True,
) -> PretrainingResult:
    """Train VGGish to name the sound category of the training clips of an S4-layout tree; save its state dict.

    Args:
        root: S4-layout dataset root (``s4_meta_data.csv``; e.g. the built-in synthetic S4 data).
        out: State-dict file to write (atomically), loadable as ``VGGish(weights=out, width=width)``.
        width: VGGish channel multiplier (the width of the model that will load the weights).
        steps: Optimiser steps (Adam, batches of clips drawn with replacement).
        batch_size: Clips per step.
        lr: Learning rate.
        seed: Seed of the initialisation and the batches.
        num_workers: DataLoader workers used to read the clips once.
        progress: Show a progress bar.

    Raises:
        ValueError: The training split has fewer than two categories or ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    # Frames are read but unused: the smallest size keeps that cheap.
    datamodule = SegmentationDataModule("s4", root, image_size=8, batch_size=batch_size, num_workers=num_workers)
    train_x, train_y = _log_mel_and_labels(datamodule, "train", batch_size)
    val_x, val_y = _log_mel_and_labels(datamodule, "val", batch_size)
    n_categories = int(torch.cat([train_y, val_y]).max()) + 1
    if train_y.unique().numel() < 2:
        raise ValueError(f"{root}: the training split has {train_y.unique().numel()} category; need at least 2")
    model = _ClipClassifier(VGGish(None, width), n_categories)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in tqdm(range(steps), desc="pretrain VGGish", disable=not progress):
        chosen = torch.randint(0, len(train_y), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(train_x[chosen]), train_y[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in val_x.split(batch_size)])
    accuracy = float((predicted == val_y).float().mean()) if len(val_y) else float("nan")
    with atomic_path(out) as tmp:
        torch.save(model.vggish.state_dict(), tmp)
    return PretrainingResult(Path(out), steps, loss.item(), accuracy, n_categories)
