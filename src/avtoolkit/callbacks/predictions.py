"""Write what ``avtoolkit predict`` predicts: separated sources as wavs, segmentation masks as overlays.

Works with any logger (or none) and any task whose ``predict_step`` returns separated waveforms ``(B, N, L)``
or masks ``(B, T, H, W)`` (a tensor, or a dict with ``estimates`` / ``masks``); which one is told by the batch
(separation batches carry a ``mixture``). The position keys of :mod:`avtoolkit.data.media` say where each
prediction goes; batches without them are taken as consecutive windows / frames.
"""

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torchvision.io import write_png

from avtoolkit.data.avsbench import voc_palette
from avtoolkit.data.batch import DISPLAY_FRAMES, FRAME_INDEX, FRAMES, MIXTURE, MIXTURE_LENGTH, MIXTURE_START
from avtoolkit.data.video import resize_mask
from avtoolkit.utils.files import atomic_path
from avtoolkit.utils.imports import lazy_import

SegmentationOutput = Literal["video", "overlays", "masks"]


class _VideoEncoder:
    """An MP4 (H.264, or MPEG-4 part 2 where FFmpeg lacks libx264) written frame by frame with PyAV."""

    def __init__(self, path: Path, fps: float) -> None:
        self.av = lazy_import("av", "video")
        self.container = self.av.open(str(path), "w")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.stream: Any = None

    def write(self, image: Tensor) -> None:
        """Append an RGB uint8 frame ``(3, H, W)`` (cropped to even sides, as yuv420p needs)."""
        height, width = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
        if self.stream is None:
            codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        array = np.ascontiguousarray(image[:, :height, :width].permute(1, 2, 0).numpy())
        self.container.mux(self.stream.encode(self.av.VideoFrame.from_ndarray(array, format="rgb24")))

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self.stream is not None:
            self.container.mux(self.stream.encode())
        self.container.close()


class PredictionWriter(BasePredictionWriter):
    """Write predictions into ``{output_dir}/{name}/``, ``name`` being the input's stem (the datamodule's ``name``).

    Separation: one wav per source, ``{source name}.wav`` (the datamodule's ``source_names``, e.g. the picture
    stems; else ``source1``, ...), at the datamodule's ``sample_rate``, as long as the input: overlapping windows
    are cross-faded (Hann-weighted average). Segmentation: ``overlay.mp4`` (masks over the frames, VOC palette
    colours), ``overlays/000001.png``, ... and ``masks/000001.png``, ... (0/255 for binary masks, class indices
    for class maps), one per predicted frame in time order.

    Every file and PNG folder is written atomically (a temporary name, renamed when complete). Runs on one
    device (a distributed run would split the windows of one file between processes).

    Args:
        output_dir: Folder of the prediction folders.
        segmentation_outputs: What to write for segmentation.
        overlay_alpha: Opacity of the mask colours in the overlays.
        fps: Frame rate of ``overlay.mp4``; ``None``: the datamodule's ``frame_rate`` (masks per second), else 1.
    """

    def __init__(
        self,
        output_dir: str | Path = "predictions",
        segmentation_outputs: Sequence[SegmentationOutput] = ("video", "overlays", "masks"),
        overlay_alpha: float = 0.5,
        fps: float | None = None,
    ) -> None:
        super().__init__("batch_and_epoch")
        self.output_dir = Path(output_dir)
        self.segmentation_outputs = tuple(segmentation_outputs)
        self.overlay_alpha = overlay_alpha
        self.fps = fps
        self.palette = voc_palette(256)
        self._reset()

    def _reset(self) -> None:
        self._outputs = ExitStack()
        self._paths: dict[str, Path] = {}  # temporary paths of the segmentation outputs
        self._video: _VideoEncoder | None = None
        self._windows: list[tuple[int, int, Tensor]] = []  # separation: (start, length, estimates (N, W))
        self._pending: dict[int, Tensor] = {}  # segmentation overlays waiting for their turn in the video
        self._next_frame = 0  # the next frame the video needs
        self._counted = 0  # windows / frames seen, to place those without MIXTURE_START / FRAME_INDEX

    def folder(self, trainer: Trainer) -> Path:
        """Where this run's files go."""
        return self.output_dir / str(getattr(trainer.datamodule, "name", "prediction"))  # type: ignore[attr-defined]

    # -- Lightning hooks -------------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse distributed prediction (each process would see part of the input)."""
        super().setup(trainer, pl_module, stage)
        if stage == "predict" and trainer.world_size > 1:
            raise RuntimeError(
                f"PredictionWriter writes each file from all of its windows; run predict on one device "
                f"(--trainer.devices 1), not {trainer.world_size}."
            )

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh set of outputs."""
        self._reset()

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep the separated windows; write the frames' overlays and masks."""
        if MIXTURE in batch:
            self._add_windows(_unpack(prediction, "estimates"), batch)
        else:
            self._add_frames(trainer, pl_module, _unpack(prediction, "masks"), batch)

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Write the separated wavs, or finish the overlay video and move the PNG folders into place."""
        folder = self.folder(trainer)
        if self._windows:
            self._write_wavs(trainer, folder)
        if self._video is not None:
            for index in sorted(self._pending):  # frames after a gap in the numbering, if any
                self._video.write(self._pending.pop(index))
            self._video.close()
            self._video = None
        self._outputs.close()
        if self._windows or self._paths:
            print(f"Predictions written to {folder.resolve()}")
        self._reset()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Delete the unfinished outputs."""
        self._close(exception)

    def _close(self, exception: BaseException) -> None:
        if self._video is not None:
            self._video.container.close()
            self._video = None
        self._outputs.__exit__(type(exception), exception, exception.__traceback__)
        self._reset()

    # -- separation ------------------------------------------------------------------------------------------

    def _add_windows(self, estimates: Tensor, batch: Mapping[str, Tensor]) -> None:
        estimates = estimates.detach().float().cpu()
        size, window = estimates.shape[0], estimates.shape[-1]
        default_starts = torch.arange(self._counted, self._counted + size) * window
        starts = batch.get(MIXTURE_START, default_starts).tolist()
        lengths = batch.get(MIXTURE_LENGTH, torch.full((size,), window)).tolist()
        self._counted += size
        for i in range(size):
            self._windows.append((int(starts[i]), int(lengths[i]), estimates[i, :, : int(lengths[i])]))

    def _write_wavs(self, trainer: Trainer, folder: Path) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        sample_rate = getattr(datamodule, "sample_rate", None)
        if sample_rate is None:
            raise ValueError(
                f"PredictionWriter needs the datamodule's sample_rate; {type(datamodule).__name__} has none"
            )
        total = max(start + length for start, length, _ in self._windows)
        n_sources, window = self._windows[0][2].shape[0], max(est.shape[-1] for _, _, est in self._windows)
        # A strictly positive Hann weight: window edges (least context) count least where windows overlap.
        weight = torch.sin(torch.pi * (torch.arange(window) + 0.5) / window) ** 2
        signal, norm = torch.zeros(n_sources, total), torch.zeros(total)
        for start, length, estimate in self._windows:
            signal[:, start : start + length] += estimate * weight[:length]
            norm[start : start + length] += weight[:length]
        signal /= norm.clamp(min=1e-8)
        names = list(getattr(datamodule, "source_names", None) or [f"source{j + 1}" for j in range(n_sources)])
        if len(names) != n_sources:
            raise ValueError(f"the datamodule names {len(names)} sources but the model separated {n_sources}")
        for name, wave in zip(names, signal, strict=True):
            with atomic_path(folder / f"{name}.wav") as tmp:
                sf.write(tmp, wave.numpy(), int(sample_rate), subtype="FLOAT")

    # -- segmentation ----------------------------------------------------------------------------------------

    def _start_frames(self, trainer: Trainer) -> None:
        folder = self.folder(trainer)
        for output in self.segmentation_outputs:
            name = "overlay.mp4" if output == "video" else output
            self._paths[output] = self._outputs.enter_context(atomic_path(folder / name))
            if output != "video":
                self._paths[output].mkdir()
        if "video" in self._paths:
            fps = self.fps or getattr(trainer.datamodule, "frame_rate", None) or 1.0  # type: ignore[attr-defined]
            self._video = _VideoEncoder(self._paths["video"], float(fps))

    def _add_frames(
        self, trainer: Trainer, pl_module: LightningModule, masks: Tensor, batch: Mapping[str, Tensor]
    ) -> None:
        if not self._paths:
            self._start_frames(trainer)
        masks = masks.detach().cpu()
        binary = getattr(pl_module, "num_classes", None) == 1
        if DISPLAY_FRAMES in batch:
            display = batch[DISPLAY_FRAMES].cpu()
        else:
            display = (batch[FRAMES].float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
        size, n_frames = masks.shape[:2]
        default_index = torch.arange(self._counted, self._counted + size * n_frames).view(size, n_frames)
        index = batch.get(FRAME_INDEX, default_index).cpu()
        self._counted += size * n_frames
        for b in range(size):
            for t in range(n_frames):
                if int(index[b, t]) >= 0:
                    self._add_frame(int(index[b, t]), display[b, t], masks[b, t], binary)

    def _add_frame(self, index: int, image: Tensor, mask: Tensor, binary: bool) -> None:
        mask = resize_mask(mask.clamp(0, 255).to(torch.uint8), (image.shape[-2], image.shape[-1]))
        colour = self.palette[mask.long()].permute(2, 0, 1).float()
        alpha = self.overlay_alpha * (mask > 0).float()
        overlay = (image.float() * (1 - alpha) + colour * alpha).round().to(torch.uint8)
        name = f"{index + 1:06d}.png"
        if "overlays" in self._paths:
            write_png(overlay, str(self._paths["overlays"] / name))
        if "masks" in self._paths:
            write_png((mask * 255 if binary else mask)[None], str(self._paths["masks"] / name))
        if self._video is not None:
            self._pending[index] = overlay
            while self._next_frame in self._pending:
                self._video.write(self._pending.pop(self._next_frame))
                self._next_frame += 1


def _unpack(prediction: Any, key: str) -> Tensor:
    """The tensor of a prediction: the prediction itself, or its ``key`` entry when it is a dict."""
    return prediction[key] if isinstance(prediction, Mapping) else prediction
