"""Encoder pre-training on a dataset's own labels: the stand-in for pre-trained weights that cannot be downloaded.

FAVS, TPAVI and the other AVSBench models start from a VGGish trained on AudioSet, whose features already tell
the sounds apart. Trained from scratch on a few hundred clips, a segmentation network finds it easier to
memorise which object of each training frame is the target than to learn what the audio says, and then
swapping the audio changes nothing. :func:`pretrain_vggish` gives such runs the starting point the papers
assume: it trains VGGish with a linear classifier to name the category of each clip of an S4-layout tree's
*training* split from its embedding (validation clips only measure it), and writes the VGGish state dict
(feature layers and embedding MLP, without the classifier) for the models' ``audio_weights``: networks that read
the feature map (FAVS) load the feature layers, those that read the embedding (TPAVI) load both.

Their image backbones likewise start from ImageNet (or Swin's) weights: features that already recognise the
objects. :func:`pretrain_backbone` is that stand-in: it renders fresh still pictures of the synthetic
datasets' objects on real backdrops (:func:`~avtoolkit.data.synth.scenes.still_scene`; never a dataset's
clips; optionally with many other things besides, generic emoji, and objects redrawn in other styles), trains
a timm backbone to name every object a picture shows (multi-label), then writes the timm state dict (without
the classifier) for the models' ``backbone_weights``.
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from avtoolkit.data.batch import AUDIO, LABELS
from avtoolkit.data.datamodules import SegmentationDataModule, Split
from avtoolkit.data.synth.assets import Assets, find_assets
from avtoolkit.data.synth.pictures import (
    EMOJI_FAMILIES,
    PICTURES,
    Picture,
    check_pictures,
    generic_emoji,
    pictures_of,
)
from avtoolkit.data.synth.scenes import still_scene
from avtoolkit.errors import ConfigError, DatasetError
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.utils.files import atomic_path
from avtoolkit.utils.processes import map_in_processes


@dataclass(frozen=True)
class PretrainingResult:
    """What a pre-training run reached.

    Args:
        path: The written state dict.
        steps: Optimiser steps taken.
        train_loss: Cross-entropy of the last step.
        val_accuracy: Validation accuracy: the clip's category (VGGish), or the object of a one-object picture
            named among the datasets' objects (backbone).
        n_categories: Categories learned.
        held_out_accuracy: Backbone with a held-out picture family: the same accuracy on pictures drawn only by
            that family (None without one).
    """

    path: Path
    steps: int
    train_loss: float
    val_accuracy: float
    n_categories: int
    held_out_accuracy: float | None = None


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


def _optimise(
    batch_loss: Callable[[Tensor], Tensor],
    n_examples: int,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    steps: int,
    batch_size: int,
    seed: int,
    desc: str,
    progress: bool,
) -> Tensor:
    """``steps`` optimiser steps on ``batch_loss(indices)``, batches drawn with replacement; the last loss."""
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = batch_loss(torch.randint(0, n_examples, (batch_size,), generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return loss


def _log_mel_and_labels(datamodule: SegmentationDataModule, split: Split, batch_size: int) -> tuple[Tensor, Tensor]:
    """Every clip of ``split`` (none dropped): log-mel windows ``(n, T, 1, 96, 64)`` and category ``(n,)``."""
    loader = DataLoader(datamodule.build_dataset(split), batch_size, num_workers=datamodule.num_workers)
    windows, labels = [], []
    for batch in loader:
        batch = datamodule.on_after_batch_transfer(batch, 0)
        windows.append(batch[AUDIO])
        labels.append(batch[LABELS])
    if not windows:
        raise DatasetError(f"{datamodule.root}: the {split} split has no clips; pre-train on a tree with {split} clips")
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

    On a synthetic tree made with ``data synth ... --holdout true`` (whose train and val clips never play the held-out
    soundfont) the accuracy is also measured on the held-out test clips (``held_out_accuracy``).

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
        DatasetError: ``root`` is not a readable S4-layout tree, or its training split has fewer than two categories.
        ConfigError: ``steps`` < 1.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    # Frames are read but unused: the smallest size keeps that cheap.
    datamodule = SegmentationDataModule("s4", root, image_size=8, batch_size=batch_size, num_workers=num_workers)
    train_x, train_y = _log_mel_and_labels(datamodule, "train", batch_size)
    val_x, val_y = _log_mel_and_labels(datamodule, "val", batch_size)
    n_categories = int(torch.cat([train_y, val_y]).max()) + 1
    if train_y.unique().numel() < 2:
        raise DatasetError(
            f"{root}: the training split has {train_y.unique().numel()} category; VGGish needs at least 2 to learn"
        )
    model = _ClipClassifier(VGGish(None, width), n_categories)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def batch_loss(chosen: Tensor) -> Tensor:
        return F.cross_entropy(model(train_x[chosen]), train_y[chosen])

    loss = _optimise(batch_loss, len(train_y), optimizer, None, steps, batch_size, seed, "pretrain VGGish", progress)
    model.eval()

    def accuracy_on(x: Tensor, y: Tensor) -> float:
        with torch.no_grad():
            predicted = torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)])
        return float((predicted == y).float().mean()) if len(y) else float("nan")

    held_out_accuracy = None
    if "test_held_out" in datamodule.test_sets:  # the test clips played by the held-out soundfont
        held_out_accuracy = accuracy_on(*_log_mel_and_labels(datamodule, "test_held_out", batch_size))
    with atomic_path(out) as tmp:
        torch.save(model.vggish.state_dict(), tmp)
    return PretrainingResult(Path(out), steps, loss.item(), accuracy_on(val_x, val_y), n_categories, held_out_accuracy)


PICTURE_NAMES = tuple(sorted(PICTURES))
"""The synthetic datasets' objects: the first classes of backbone pre-training, and those its accuracy is on."""

MAX_OBJECTS = 4
"""A training still shows 1 to this many different objects, like the segmentation scenes."""


@cache
def still_classes(assets: Assets, families: tuple[str, ...], generic: bool) -> tuple[tuple[Picture, ...], ...]:
    """The classes of backbone pre-training, each with its depictions in ``families`` (maybe none).

    The datasets' objects (:data:`PICTURE_NAMES`), then with ``generic`` the generic emoji: many other things,
    each drawn by every emoji family of ``families``.
    """
    named = [tuple(pictures_of(name, families)) for name in PICTURE_NAMES]
    emoji = [f for f in EMOJI_FAMILIES if f in families]
    return tuple(named + [tuple(Picture(f, e) for f in emoji) for e in generic_emoji(assets) if generic])


@dataclass(frozen=True)
class _StillJob:
    seed: int
    index: int
    image_size: int
    assets: Assets
    families: tuple[str, ...]
    objects: int
    generic: float
    restyle: float


def _render_still(job: _StillJob) -> tuple[np.ndarray, np.ndarray]:
    """One still from its own generator: ``(3, S, S)`` uint8 picture, ``(C,)`` bool: which classes it shows."""
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.index]))
    classes = still_classes(job.assets, job.families, job.generic > 0)
    drawable = [k for k, pictures in enumerate(classes) if pictures]
    named = [k for k in drawable if k < len(PICTURE_NAMES)]
    generic = [k for k in drawable if k >= len(PICTURE_NAMES)]
    count = min(1 + int(rng.integers(job.objects)), len(named) + len(generic))
    chosen: list[int] = []
    while len(chosen) < count:  # each object a generic one with probability job.generic
        pool = [k for k in (generic if generic and rng.random() < job.generic else named) if k not in chosen]
        pool = pool or [k for k in named + generic if k not in chosen]  # that kind is used up: the other
        chosen.append(pool[int(rng.integers(len(pool)))])
    pictures = [classes[k][int(rng.integers(len(classes[k])))] for k in chosen]
    frame, owner = still_scene(pictures, rng, job.assets, job.restyle)
    shows = np.zeros(len(classes), dtype=bool)
    shows[[c for i, c in enumerate(chosen) if (owner == i).any()]] = True  # an object hidden behind others is not
    # Resized like the datasets' frames (antialiased), which the readers load at 224 px.
    image = TF.resize(torch.from_numpy(frame).permute(2, 0, 1), [job.image_size] * 2, antialias=True)
    return image.numpy(), shows


def render_stills(
    count: int,
    image_size: int,
    seed: int,
    assets: Assets,
    families: tuple[str, ...] | None = None,
    objects: int = MAX_OBJECTS,
    generic: float = 0.0,
    restyle: float = 0.0,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """``count`` still pictures: ``(n, 3, S, S)`` uint8 and ``(n, C)`` float multi-hot labels (:func:`still_classes`).

    Args:
        count: Pictures.
        image_size: Their side (pixels).
        seed: Seed (each picture has its own generator: the same pictures whatever ``workers``).
        assets: Where the depictions come from.
        families: The picture families to draw from (default: every one in use); a still then shows only
            objects they depict.
        objects: Each still shows 1 to this many different objects.
        generic: The share of objects that are generic emoji (0: only the datasets' objects).
        restyle: The share of objects drawn in another style (:data:`~avtoolkit.data.synth.pictures.STYLES`).
        workers: Processes rendering them (default: every core).
        progress: Show a progress bar.
    """
    chosen = tuple(families or assets.picture_families)
    jobs = [_StillJob(seed, i, image_size, assets, chosen, objects, generic, restyle) for i in range(count)]
    rendered = map_in_processes(_render_still, jobs, workers, "fork", progress, "render stills", "picture")
    images = torch.from_numpy(np.stack([image for image, _ in rendered]))
    labels = torch.from_numpy(np.stack([shows for _, shows in rendered])).float()
    return images, labels


def pretrain_backbone(
    out: str | Path,
    backbone: str = "resnet18",
    image_size: int = 64,
    images: int = 4000,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    held_out_pictures: str | None = None,
    generic_pictures: float = 0.0,
    restyle: float = 0.0,
) -> PretrainingResult:
    """Train a timm backbone to name the objects in fresh synthetic pictures; save it for ``backbone_weights``.

    The pictures show 1–4 objects on real backdrops; the backbone learns to name every object a picture shows
    (multi-label). Its accuracy is measured on fresh pictures of one of the datasets' objects each, as drawn: the
    object scored highest among the datasets' 18.

    With ``held_out_pictures`` (the held-out picture family of a dataset made with ``data synth ... --holdout
    true``) the pictures come from every other family, so the backbone never sees a depiction the held-out test
    clips use, and its accuracy is also measured on pictures drawn only by the held-out family.

    Args:
        out: State-dict file to write (atomically), loadable as a model's ``backbone_weights``.
        backbone: timm model name (the ``backbone`` of the model that will load the weights).
        image_size: Side of the pictures (the ``image_size`` the model will be trained at).
        images: Training pictures, rendered once (a tenth as many more measure the accuracy).
        steps: Optimiser steps (AdamW, cosine schedule, batches drawn with replacement).
        batch_size: Pictures per step.
        lr: Peak learning rate.
        seed: Seed of the pictures, the initialisation and the batches.
        workers: Processes rendering the pictures (default: every core).
        progress: Show progress bars.
        held_out_pictures: A picture family never to train on (see above); None: train on every family.
        generic_pictures: The share of training objects that are generic emoji (about 900 other things, each drawn
            by every emoji family in use; see :func:`~avtoolkit.data.synth.pictures.generic_emoji`); 0: only the
            datasets' objects.
        restyle: The share of training objects drawn in another style (grayscale, silhouette or outline).

    Raises:
        ConfigError: ``images`` < 1, ``steps`` < 1, a share outside [0, 1], ``backbone`` is not a timm model, or
            ``held_out_pictures`` is not a picture family in use.
        DatasetError: An asset is missing (the message names the package to install).
    """
    if images < 1 or steps < 1:
        raise ConfigError(f"images and steps must be >= 1, got images={images}, steps={steps}")
    for name, share in (("generic_pictures", generic_pictures), ("restyle", restyle)):
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{name} is a share of the training objects, in [0, 1]; got {share}")
    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone, timm.list_models(), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else "see timm.list_models() for the names"
        raise ConfigError(f"backbone {backbone!r} is not a timm model: {hint}")
    assets = find_assets()
    check_pictures(list(PICTURE_NAMES), assets)
    training_families = assets.picture_families
    if held_out_pictures is not None:
        if held_out_pictures not in assets.picture_families:
            raise ConfigError(
                f"held_out_pictures {held_out_pictures!r} is not a picture family in use: one of "
                f"{', '.join(assets.picture_families)}"
            )
        training_families = tuple(f for f in assets.picture_families if f != held_out_pictures)
    # Training and validation pictures from different seeds: no picture is in both.
    train_x, train_y = render_stills(
        images,
        image_size,
        2 * seed,
        assets,
        training_families,
        MAX_OBJECTS,
        generic_pictures,
        restyle,
        workers,
        progress,
    )
    n_val = max(1, images // 10)

    def one_object_stills(families: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        return render_stills(n_val, image_size, 2 * seed + 1, assets, families, 1, 0.0, 0.0, workers, progress)

    val_x, val_y = one_object_stills(training_families)
    torch.manual_seed(seed)
    model: Any = timm.create_model(backbone, pretrained=False, num_classes=train_y.shape[1])
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)

    def logits(pictures: Tensor) -> Tensor:
        return model((pictures.float() / 255.0 - mean) / std)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)

    def batch_loss(chosen: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits(train_x[chosen]), train_y[chosen])

    model.train()
    loss = _optimise(
        batch_loss, len(train_y), optimizer, schedule, steps, batch_size, seed, f"pretrain {backbone}", progress
    )
    model.eval()

    def named(pictures: Tensor, labels: Tensor) -> float:
        """The share of one-object pictures whose object scores highest among the datasets' objects."""
        with torch.no_grad():
            scores = torch.cat([logits(chunk)[:, : len(PICTURE_NAMES)] for chunk in pictures.split(batch_size)])
        return float((scores.argmax(1) == labels[:, : len(PICTURE_NAMES)].argmax(1)).float().mean())

    accuracy = named(val_x, val_y)
    held_out_accuracy = None
    if held_out_pictures is not None:
        held_out_accuracy = named(*one_object_stills((held_out_pictures,)))
    model.reset_classifier(0)
    with atomic_path(out) as tmp:
        torch.save(model.state_dict(), tmp)
    return PretrainingResult(Path(out), steps, loss.item(), accuracy, train_y.shape[1], held_out_accuracy)
