"""Media of a few validation examples, logged through whichever loggers are attached (or to files).

Segmentation: the frames with the predicted and the true masks drawn over them. Separation: spectrograms of the
mixture, the true and the estimated sources, and their audio. One callback for every logger: the per-logger
writers live here, in a small table, so tasks never know which logger is attached.
"""

import colorsys
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor

from avtoolkit.data.audio import Spectrogram
from avtoolkit.data.batch import FRAMES, LABELS, MASK_VALID, MASKS, MIXTURE, SOURCES, Batch
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask
from avtoolkit.utils.imports import lazy_import

OVERLAYS = "val_media/overlays"
SPECTROGRAMS = "val_media/spectrograms"
AUDIO = "val_media/audio"
_ALPHA = 0.5  # opacity of a mask drawn over its frame
_GAP = 2  # white pixels between the panels of an overlay image


@dataclass
class Media:
    """Rendered media of one validation run.

    Attributes:
        images: Per key, ``(caption, image)`` pairs; images are ``(H, W, 3)`` uint8 RGB.
        audio: ``(caption, waveform)`` pairs; waveforms are ``(L,)`` float32 in [-1, 1].
        sample_rate: Rate of the audio in Hz.
    """

    images: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)
    audio: list[tuple[str, np.ndarray]] = field(default_factory=list)
    sample_rate: int = 0


class MediaLogger(Callback):
    """Log media of the first validation examples every ``every_n_epochs`` validation runs, on rank zero only.

    For an :class:`~avtoolkit.tasks.segmentation.AVSegmentationTask`: one image per clip, a column per frame with
    a ground-truth mask and three rows: the frame, the predicted mask over it, the true mask over it. For an
    :class:`~avtoolkit.tasks.separation.AVSeparationTask`: one figure per mixture with the log-magnitude
    spectrograms of the mixture and of each source's truth and estimate, and the audio of the mixture, each
    estimate and each truth (scaled together so the loudest is at most full scale).

    Where the media go depends on the loggers: W&B gets images and audio in the run (``val_media/*``),
    TensorBoard gets them through ``add_image``/``add_audio``; CSV, any other logger, or no logger at all get PNG
    and WAV files under ``<log_dir>/media/epoch_NNN/`` (a later validation in the same epoch replaces them).

    Predictions come from the validation step's outputs when it returns them (``{"scores": ...}`` or
    ``{"estimates": ...}``, like ``test_step``); otherwise the task runs again on the kept examples (still in
    evaluation mode, without gradients).

    Args:
        every_n_epochs: Log at every N-th validation run (sanity checks not counted).
        n_examples: Clips (segmentation) or mixtures (separation) to render, from the first validation batches.
        sample_rate: Audio rate of the separation data in Hz; ``None`` reads the datamodule's ``sample_rate``.
    """

    def __init__(self, every_n_epochs: int = 1, n_examples: int = 2, sample_rate: int | None = None) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {n_examples}")
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.every_n_epochs = every_n_epochs
        self.n_examples = n_examples
        self.sample_rate = sample_rate
        self.validation_runs = 0
        self.active = False
        self.examples: list[dict[str, Tensor]] = []

    # -- state (the cadence survives a resumed run) -----------------------------------------------------------

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints."""
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, n_examples=self.n_examples)

    def state_dict(self) -> dict[str, Any]:
        """The number of validation runs seen."""
        return {"validation_runs": self.validation_runs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the number of validation runs seen."""
        self.validation_runs = int(state_dict["validation_runs"])

    # -- Lightning hooks -------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check that the task is one this callback can render."""
        if not isinstance(pl_module, AVSegmentationTask | AVSeparationTask):
            raise TypeError(
                f"MediaLogger renders an AVSegmentationTask or an AVSeparationTask, got {type(pl_module).__name__}"
            )

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Decide whether this validation run is logged (rank zero, every N-th run, no sanity check)."""
        self.examples = []
        self.active = False
        if trainer.sanity_checking:
            return
        self.validation_runs += 1
        self.active = trainer.is_global_zero and self.validation_runs % self.every_n_epochs == 0

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep examples (with the task's predictions) until there are ``n_examples``."""
        wanted = self.n_examples - len(self.examples)
        if not self.active or wanted <= 0:
            return
        if isinstance(pl_module, AVSegmentationTask):
            self.examples += _segmentation_examples(pl_module, batch, outputs, wanted)
        elif isinstance(pl_module, AVSeparationTask):
            self.examples += _separation_examples(pl_module, batch, outputs, wanted)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Render the kept examples and write them through every attached logger."""
        if not self.active or not self.examples:
            return
        if isinstance(pl_module, AVSegmentationTask):
            media = Media(images={OVERLAYS: render_overlays(self.examples, pl_module.num_classes)})
        else:
            assert isinstance(pl_module, AVSeparationTask)
            media = render_separation(
                self.examples, self._sample_rate(trainer), pl_module.spectrogram, _class_names(trainer)
            )
        write_media(trainer, media)
        self.examples = []

    def _sample_rate(self, trainer: Trainer) -> int:
        if self.sample_rate is not None:
            return self.sample_rate
        rate = getattr(getattr(trainer, "datamodule", None), "sample_rate", None)
        if rate is None:
            raise ValueError("MediaLogger needs the audio rate: a datamodule with `sample_rate`, or pass sample_rate")
        return int(rate)


# -- examples: the kept inputs, truths and predictions, on the CPU ----------------------------------------------


def _require(batch: Batch, keys: tuple[str, ...], task: str) -> None:
    missing = [key for key in keys if key not in batch]
    if missing:
        raise KeyError(f"MediaLogger needs the batch keys {missing} for {task} media; the batch has {sorted(batch)}")


def _output(outputs: Any, key: str, wanted: int) -> Tensor | None:
    """The validation step's ``outputs[key]`` (first ``wanted`` items) when it returned it."""
    if isinstance(outputs, Mapping) and isinstance(outputs.get(key), Tensor):
        return outputs[key][:wanted]
    return None


def _segmentation_examples(
    task: AVSegmentationTask, batch: Batch, outputs: Any, wanted: int
) -> list[dict[str, Tensor]]:
    _require(batch, (FRAMES, MASKS, MASK_VALID), "segmentation")
    sub = {key: value[:wanted] for key, value in batch.items()}
    scores = _output(outputs, "scores", wanted)
    if scores is None:
        with torch.no_grad():
            scores = task.scores(task(sub), tuple(sub[MASKS].shape[-2:]))
    prediction = (scores[:, :, 0] > 0).long() if task.num_classes == 1 else scores.argmax(2)
    return [
        {
            "frames": sub[FRAMES][i].detach().float().cpu(),
            "prediction": prediction[i].detach().cpu(),
            "truth": sub[MASKS][i].detach().cpu(),
            "valid": sub[MASK_VALID][i].detach().cpu(),
        }
        for i in range(prediction.shape[0])
    ]


def _separation_examples(task: AVSeparationTask, batch: Batch, outputs: Any, wanted: int) -> list[dict[str, Tensor]]:
    _require(batch, (MIXTURE, SOURCES), "separation")
    sub = {key: value[:wanted] for key, value in batch.items()}
    estimates = _output(outputs, "estimates", wanted)
    if estimates is None:
        with torch.no_grad():
            estimates = task(sub)
    examples = []
    for i in range(estimates.shape[0]):
        example = {"mixture": sub[MIXTURE][i], "sources": sub[SOURCES][i], "estimates": estimates[i]}
        if LABELS in sub:
            example["labels"] = sub[LABELS][i]
        examples.append({key: value.detach().float().cpu() for key, value in example.items()})
    return examples


# -- rendering ------------------------------------------------------------------------------------------------


def palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours ``(num_classes, 3)`` uint8 for mask labels (golden-ratio hues); class 0 is unused."""
    hues = (np.arange(num_classes) * 0.618034 + 0.02) % 1.0
    colours = [colorsys.hsv_to_rgb(float(h), 0.85, 0.95) for h in hues]
    return (np.asarray(colours) * 255).round().astype(np.uint8)


def _blend(frame: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``frame`` ``(H, W, 3)`` float in [0, 1] with the non-zero ``labels`` ``(H, W)`` painted over it."""
    painted = colours[np.clip(labels, 0, len(colours) - 1)].astype(np.float32) / 255.0
    alpha = _ALPHA * (labels > 0)[..., None]
    return frame * (1 - alpha) + painted * alpha


def overlay_image(frames: Tensor, prediction: Tensor, truth: Tensor, valid: Tensor, num_classes: int) -> np.ndarray:
    """One clip as an RGB grid: a column per frame with ground truth, rows frame / prediction / truth.

    Args:
        frames: ``(T, 3, H, W)`` float in [0, 1] (or uint8).
        prediction: ``(T, h, w)`` predicted labels (0/1 or class indices) at the masks' size.
        truth: ``(T, h, w)`` true labels.
        valid: ``(T,)`` frames that have a ground-truth mask (all frames are drawn when none has).
        num_classes: The task's classes (1: binary masks).

    Returns:
        ``(3 h + 4 gap, n w + (n + 1) gap, 3)`` uint8.
    """
    keep = valid.bool() if bool(valid.any()) else torch.ones_like(valid, dtype=torch.bool)
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    frames = frames[keep]
    size = tuple(truth.shape[-2:])
    if tuple(frames.shape[-2:]) != size:
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    images = frames.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    colours = palette(max(num_classes, 2))
    rows = [
        list(images),
        [_blend(image, labels, colours) for image, labels in zip(images, prediction[keep].numpy(), strict=True)],
        [_blend(image, labels, colours) for image, labels in zip(images, truth[keep].numpy(), strict=True)],
    ]
    height, width = size
    grid = np.ones((3 * height + 4 * _GAP, len(images) * width + (len(images) + 1) * _GAP, 3), np.float32)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top, left = _GAP + r * (height + _GAP), _GAP + c * (width + _GAP)
            grid[top : top + height, left : left + width] = panel
    return (grid * 255).round().astype(np.uint8)


def render_overlays(examples: list[dict[str, Tensor]], num_classes: int) -> list[tuple[str, np.ndarray]]:
    """Captioned overlay images of segmentation examples (see :func:`overlay_image`)."""
    return [
        (
            f"example{i + 1}",
            overlay_image(example["frames"], example["prediction"], example["truth"], example["valid"], num_classes),
        )
        for i, example in enumerate(examples)
    ]


def _source_name(example: dict[str, Tensor], j: int, class_names: list[str]) -> str:
    if "labels" in example and class_names and 0 <= int(example["labels"][j]) < len(class_names):
        return class_names[int(example["labels"][j])]
    return f"source{j + 1}"


def spectrogram_image(panels: list[tuple[str, Tensor]], spectrogram: Spectrogram, sample_rate: int) -> np.ndarray:
    """A row of log-magnitude spectrograms (dB relative to the first panel's peak) as an RGB image.

    Args:
        panels: ``(title, waveform (L,))`` pairs; the first one (the mixture) sets the 0 dB reference.
        spectrogram: STFT settings (the task's; its warp is not applied).
        sample_rate: Audio rate in Hz (for the axes).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stft = Spectrogram(spectrogram.n_fft, spectrogram.hop_length, warp_bins=None)
    magnitudes = [stft.magnitude(stft.stft(wave)) for _, wave in panels]
    reference = magnitudes[0].max().clamp_min(1e-8)
    fig = Figure(figsize=(2.4 * len(panels), 2.2), dpi=80)
    canvas = FigureCanvasAgg(fig)
    extent = (0.0, panels[0][1].shape[-1] / sample_rate, 0.0, sample_rate / 2000)
    for k, ((title, _), magnitude) in enumerate(zip(panels, magnitudes, strict=True)):
        ax = fig.add_subplot(1, len(panels), k + 1)
        decibels = 20 * torch.log10(magnitude / reference + 1e-5)
        ax.imshow(decibels.numpy(), origin="lower", aspect="auto", extent=extent, vmin=-80, vmax=0, cmap="magma")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.axes[0].set_ylabel("kHz", fontsize=7)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_separation(
    examples: list[dict[str, Tensor]], sample_rate: int, spectrogram: Spectrogram, class_names: list[str]
) -> Media:
    """Spectrogram figures and audio of separation examples (``mixture``, ``sources``, ``estimates``, ``labels``)."""
    media = Media(images={SPECTROGRAMS: []}, sample_rate=sample_rate)
    for i, example in enumerate(examples):
        names = [_source_name(example, j, class_names) for j in range(example["sources"].shape[0])]
        truths = [(f"{name} truth", example["sources"][j]) for j, name in enumerate(names)]
        estimates = [(f"{name} estimate", example["estimates"][j]) for j, name in enumerate(names)]
        panels = [("mixture", example["mixture"])]
        for truth, estimate in zip(truths, estimates, strict=True):
            panels += [truth, estimate]
        media.images[SPECTROGRAMS].append((f"example{i + 1}", spectrogram_image(panels, spectrogram, sample_rate)))
        peak = max(float(wave.abs().max()) for _, wave in panels)
        scale = 1.0 / peak if peak > 1.0 else 1.0
        for title, wave in [panels[0], *estimates, *truths]:
            media.audio.append((f"example{i + 1} {title}", (wave * scale).numpy().astype(np.float32)))
    return media


def _class_names(trainer: Trainer) -> list[str]:
    return list(getattr(getattr(trainer, "datamodule", None), "class_names", None) or [])


# -- writers: one per logger that has a media API; files for the others ----------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def _write_wandb(logger: Logger, media: Media, step: int) -> None:
    wandb = lazy_import("wandb", "wandb")
    payload: dict[str, Any] = {
        key: [wandb.Image(image, caption=caption) for caption, image in items] for key, items in media.images.items()
    }
    if media.audio:
        payload[AUDIO] = [
            wandb.Audio(wave, sample_rate=media.sample_rate, caption=caption) for caption, wave in media.audio
        ]
    logger.log_metrics(payload, step=step)


def _write_tensorboard(logger: Logger, media: Media, step: int) -> None:
    assert isinstance(logger, TensorBoardLogger)
    writer = logger.experiment
    for key, items in media.images.items():
        for caption, image in items:
            writer.add_image(f"{key}/{_slug(caption)}", image, step, dataformats="HWC")
    for caption, wave in media.audio:
        writer.add_audio(f"{AUDIO}/{_slug(caption)}", torch.from_numpy(wave)[None], step, sample_rate=media.sample_rate)


def write_files(folder: Path, media: Media) -> None:
    """Write ``media`` as ``{key}_{caption}.png`` images and ``{caption}.wav`` audio into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, items in media.images.items():
        for caption, image in items:
            Image.fromarray(image).save(folder / f"{_slug(key.rsplit('/', 1)[-1])}_{_slug(caption)}.png")
    for caption, wave in media.audio:
        sf.write(folder / f"{_slug(caption)}.wav", wave, media.sample_rate)


Writer = Callable[[Logger, Media, int], None]
WRITERS: tuple[tuple[type[Logger], Writer], ...] = (
    (WandbLogger, _write_wandb),
    (TensorBoardLogger, _write_tensorboard),
)
"""Loggers with their own media API, first match wins; other loggers get files (:func:`write_files`)."""


def write_media(trainer: Trainer, media: Media) -> None:
    """Write ``media`` through each of the trainer's loggers (files for those without a media API, or no logger).

    Files go to ``<logger log_dir>/media/epoch_NNN/``, or ``<default_root_dir>/media/epoch_NNN/`` without a logger.
    Call on rank zero only (it reads no distributed state).
    """
    epoch_dir = Path("media") / f"epoch_{trainer.current_epoch:03d}"
    folders: list[Path] = [] if trainer.loggers else [Path(trainer.default_root_dir) / epoch_dir]
    for logger in trainer.loggers:
        writer = next((write for kind, write in WRITERS if isinstance(logger, kind)), None)
        if writer is not None:
            writer(logger, media, trainer.global_step)
            continue
        # The logger's own folder (trainer.log_dir would broadcast, which hangs when only rank zero calls it).
        root = getattr(logger, "log_dir", None) or logger.save_dir or trainer.default_root_dir
        if Path(root) / epoch_dir not in folders:
            folders.append(Path(root) / epoch_dir)
    for folder in folders:
        write_files(folder, media)
