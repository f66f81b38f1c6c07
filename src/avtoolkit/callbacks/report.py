"""A report folder at the end of testing: metrics table, ``metrics.json`` and a figure of a few test examples.

:class:`SeparationReport` (SDR/SIR/SAR, spectrograms, separated audio) and :class:`SegmentationReport` (M_J/M_F
or mIoU/F, frames with their predicted and true masks).
"""

import copy
import json
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from avtoolkit.analysis.per_class import per_class_sdr
from avtoolkit.data.audio import Spectrogram
from avtoolkit.data.batch import FRAMES, LABELS, MASK_VALID, MASKS, MIXTURE, SOURCES
from avtoolkit.metrics.segmentation import SemanticSegmentationMetrics
from avtoolkit.metrics.separation import PROTOCOLS
from avtoolkit.tasks.base import BaseAVTask
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask
from avtoolkit.utils.files import atomic_path


class SeparationReport(Callback):
    """Write ``report.md``, ``metrics.json``, ``spectrograms.png`` and wavs of a few test mixtures.

    Both ``report.md`` and ``metrics.json`` (key ``"protocol"``) name the evaluation protocol of the task's test
    metrics (``default``, ``sound_of_pixels``, ``iquery`` or ``clipsep``). Works with any logger (or none), on
    rank zero. Needs an :class:`~avtoolkit.tasks.separation.AVSeparationTask` and a datamodule with
    ``sample_rate`` (and, for class names, ``class_names``).

    Args:
        dirpath: Report folder (replaced atomically at the end of each test run).
        n_examples: Test mixtures to render as figures and audio.
    """

    def __init__(self, dirpath: str = "reports/separation", n_examples: int = 3) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.n_examples = n_examples
        self.examples: list[dict[str, Tensor]] = []

    @property
    def report_path(self) -> Path:
        """The report's ``report.md`` (written at the end of each test run)."""
        return self.dirpath / "report.md"

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting examples."""
        self.examples = []

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the first ``n_examples`` mixtures (of the first test set) with their truth and estimates."""
        if dataloader_idx != 0:
            return
        for i in range(batch[MIXTURE].shape[0]):
            if len(self.examples) >= self.n_examples:
                return
            example = {
                "mixture": batch[MIXTURE][i],
                "sources": batch[SOURCES][i],
                "estimates": outputs["estimates"][i],
            }
            if LABELS in batch:
                example["labels"] = batch[LABELS][i]
            self.examples.append({key: value.detach().float().cpu() for key, value in example.items()})

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the report (runs before the task logs and resets its metrics)."""
        if not isinstance(pl_module, AVSeparationTask):
            raise TypeError(f"SeparationReport needs an AVSeparationTask, got {type(pl_module).__name__}")
        protocol = pl_module.test_metrics.protocol
        summary = {name: float(value) for name, value in pl_module.test_metrics.compute().items()}
        per_clip = pl_module.test_metrics.per_clip()
        others = _other_test_sets(pl_module)
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        sample_rate = int(datamodule.sample_rate)
        class_names = list(getattr(datamodule, "class_names", []))
        with atomic_path(self.dirpath) as tmp:
            tmp.mkdir(parents=True)
            metrics = {"protocol": protocol, **summary, **others}
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            self._write_audio(tmp / "audio", sample_rate, class_names)
            self._write_figure(tmp / "spectrograms.png", pl_module.spectrogram, sample_rate, class_names)
            (tmp / "report.md").write_text(
                self._markdown(summary, per_clip, class_names, type(pl_module.model).__name__, protocol)
                + _test_sets_section(summary, others, SEPARATION_COLUMNS)
            )
        print(f"Separation report written to {self.dirpath.resolve()}/report.md")

    # -- parts of the report ---------------------------------------------------------------------------------

    @staticmethod
    def _name(example: dict[str, Tensor], j: int, class_names: list[str]) -> str:
        if "labels" in example and class_names:
            return class_names[int(example["labels"][j])]
        return f"source{j + 1}"

    def _write_audio(self, folder: Path, sample_rate: int, class_names: list[str]) -> None:
        folder.mkdir()
        for i, example in enumerate(self.examples):
            sf.write(folder / f"example{i + 1}_mixture.wav", example["mixture"].numpy(), sample_rate)
            for j in range(example["sources"].shape[0]):
                name = self._name(example, j, class_names)
                sf.write(folder / f"example{i + 1}_{name}_truth.wav", example["sources"][j].numpy(), sample_rate)
                sf.write(
                    folder / f"example{i + 1}_{name}_estimate.wav",
                    example["estimates"][j].numpy(),
                    sample_rate,
                )

    def _write_figure(self, path: Path, spectrogram: Spectrogram, sample_rate: int, class_names: list[str]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        spectrogram = copy.deepcopy(spectrogram).cpu()
        n_sources = self.examples[0]["sources"].shape[0] if self.examples else 0
        columns = 1 + 2 * n_sources
        fig, axes = plt.subplots(
            len(self.examples), columns, figsize=(2.6 * columns, 2.4 * len(self.examples)), squeeze=False
        )
        duration = self.examples[0]["mixture"].shape[-1] / sample_rate if self.examples else 0.0
        extent = (0.0, duration, 0.0, sample_rate / 2000)
        for i, example in enumerate(self.examples):
            panels = [("mixture", example["mixture"])]
            for j in range(n_sources):
                name = self._name(example, j, class_names)
                panels += [
                    (f"{name}: truth", example["sources"][j]),
                    (f"{name}: estimate", example["estimates"][j]),
                ]
            reference = spectrogram.stft(example["mixture"]).abs().max().clamp_min(1e-8)
            for ax, (title, wave) in zip(axes[i], panels, strict=True):
                decibels = 20 * torch.log10(spectrogram.stft(wave).abs() / reference + 1e-5)
                ax.imshow(
                    decibels.numpy(),
                    origin="lower",
                    aspect="auto",
                    extent=extent,
                    vmin=-80,
                    vmax=0,
                    cmap="magma",
                )
                ax.set_title(title, fontsize=8)
                ax.tick_params(labelsize=6)
            axes[i][0].set_ylabel("kHz", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def _markdown(
        self,
        summary: dict[str, float],
        per_clip: dict[str, Tensor],
        class_names: list[str],
        model_name: str,
        protocol: str,
    ) -> str:
        silent = "scored at the floor" if protocol == "default" else "their mixtures skipped"
        if protocol == "clipsep":  # reported as mean ± SEM
            model = " | ".join(f"{summary[k]:.2f} ± {summary[k + '_sem']:.2f}" for k in ("sdr", "sir", "sar"))
        else:
            model = " | ".join(f"{summary[k]:.2f}" for k in ("sdr", "sir", "sar"))
        lines = [
            "# Separation report",
            "",
            f"Protocol: `{protocol}` ({PROTOCOLS[protocol]}).",
            "",
            f"Model: `{model_name}`; test mixtures: {int(summary['n_clips'])} "
            f"(skipped with a silent reference: {int(summary['n_skipped_silent_ref'])}; silent estimates, "
            f"{silent}: {int(summary['n_silent_est'])}).",
            "",
            "| | SDR (dB) | SIR (dB) | SAR (dB) |",
            "|---|---:|---:|---:|",
            f"| model | {model} |",
            f"| mixture (no separation) | {summary['sdr_mix']:.2f} | {summary['sir_mix']:.2f} | ∞ |",
            f"| **improvement (SDRi)** | **{summary['sdri']:+.2f}** | | |",
            "",
            f"Median SDR {summary['sdr_median']:.2f} dB; SDR standard error {summary['sdr_sem']:.2f} dB "
            "(BSS Eval v3, as mir_eval computes it).",
            "",
        ]
        rows = per_class_sdr(per_clip, class_names) if class_names else []
        if rows:
            lines += ["## Per class", "", "Every source of the evaluated mixtures.", ""]
            lines += ["| class | sources | SDR (dB) | SDRi (dB) |", "|---|---:|---:|---:|"]
            lines += [f"| {r.name} | {r.n_sources} | {r.sdr:.2f} | {r.sdri:+.2f} |" for r in rows]
            lines.append("")
        lines += [
            "## Examples",
            "",
            "`spectrograms.png`: log-magnitude spectrograms (mixture, then truth and estimate per source).",
            "",
            "![spectrograms](spectrograms.png)",
            "",
            "`audio/`: mixture, true and separated sources of each example (wav).",
            "",
        ]
        return "\n".join(lines)


class SegmentationReport(Callback):
    """Write ``report.md``, ``metrics.json`` and ``examples.png`` (test frames with predicted and true masks).

    Binary tasks (S4, MS3) report M_J and M_F; semantic ones (AVSS) mIoU and mean F with and without the
    background, and per class. ``metrics.json`` holds the task's test metrics and its protocol. Works with any
    logger (or none), on rank zero. Needs an :class:`~avtoolkit.tasks.segmentation.AVSegmentationTask`.

    Args:
        dirpath: Report folder (replaced atomically at the end of each test run). Default: ``report`` in the
            run's log folder (the logger's ``log_dir``, else the trainer's ``default_root_dir``).
        n_examples: Test clips drawn in ``examples.png`` (each: a column per annotated frame; rows frame,
            prediction, ground truth).
    """

    def __init__(self, dirpath: str | None = None, n_examples: int = 4) -> None:
        super().__init__()
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.n_examples = n_examples
        self.examples: list[dict[str, Tensor]] = []
        self._folder: Path | None = self.dirpath

    @property
    def report_path(self) -> Path | None:
        """The report's ``report.md`` (``None`` before a test run when the folder follows the trainer)."""
        return None if self._folder is None else self._folder / "report.md"

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting examples."""
        self.examples = []
        self._folder = self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "report"

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the first ``n_examples`` clips (of the first test set) that have a ground truth, with their masks."""
        wanted = self.n_examples - len(self.examples) if dataloader_idx == 0 else 0
        scores = outputs.get("scores") if isinstance(outputs, dict) else None
        if wanted <= 0 or not isinstance(scores, Tensor) or not isinstance(pl_module, AVSegmentationTask):
            return
        prediction = (scores[:, :, 0] > 0).long() if pl_module.num_classes == 1 else scores.argmax(2)
        for i in range(prediction.shape[0]):
            if len(self.examples) >= self.n_examples or not bool(batch[MASK_VALID][i].any()):
                continue
            self.examples.append(
                {
                    "frames": batch[FRAMES][i].detach().float().cpu(),
                    "prediction": prediction[i].detach().cpu(),
                    "truth": batch[MASKS][i].detach().cpu(),
                    "valid": batch[MASK_VALID][i].detach().cpu(),
                }
            )

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the report (runs before the task logs and resets its metrics)."""
        if not isinstance(pl_module, AVSegmentationTask):
            raise TypeError(f"SegmentationReport needs an AVSegmentationTask, got {type(pl_module).__name__}")
        metrics = pl_module.test_metrics
        summary = {name: float(value) for name, value in metrics.compute().items()}
        per_class = metrics.per_class() if isinstance(metrics, SemanticSegmentationMetrics) else None
        protocol = str(getattr(metrics, "protocol", "default"))
        others = _other_test_sets(pl_module)
        if not trainer.is_global_zero:
            return
        folder = self._folder or Path(trainer.default_root_dir) / "report"
        class_names = _segmentation_class_names(trainer, pl_module.num_classes)
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            metrics_json = {"protocol": protocol, **summary, **others}
            (tmp / "metrics.json").write_text(json.dumps(metrics_json, indent=2) + "\n")
            self._write_figure(tmp / "examples.png", pl_module.num_classes)
            columns = BINARY_COLUMNS if "mj" in summary else SEMANTIC_COLUMNS
            (tmp / "report.md").write_text(
                self._markdown(summary, per_class, class_names, type(pl_module.model).__name__, protocol)
                + _test_sets_section(summary, others, columns)
            )
        print(f"Segmentation report written to {folder.resolve()}/report.md")

    def _write_figure(self, path: Path, num_classes: int) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from avtoolkit.callbacks.media import overlay_image

        grids = [
            overlay_image(e["frames"], e["prediction"], e["truth"], e["valid"], num_classes) for e in self.examples
        ]
        fig, axes = plt.subplots(max(len(grids), 1), 1, figsize=(8, 2.6 * max(len(grids), 1)), squeeze=False)
        for i, ax in enumerate(axes[:, 0]):
            ax.axis("off")
            if i < len(grids):
                ax.imshow(grids[i])
                ax.set_title(f"test clip {i + 1}: frames, predicted masks, ground truth (top to bottom)", fontsize=8)
            else:
                ax.set_title("no test clip with a ground-truth mask", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def _markdown(
        self,
        summary: dict[str, float],
        per_class: dict[str, Tensor] | None,
        class_names: list[str],
        model_name: str,
        protocol: str,
    ) -> str:
        lines = ["# Segmentation report", "", f"Model: `{model_name}`; metric protocol: `{protocol}`.", ""]
        if "mj" in summary:  # binary masks (S4, MS3)
            lines += [
                f"Test frames with a ground truth: {int(summary['n_frames'])} (M_F over the "
                f"{int(summary['n_frames_f'])} whose mask is not empty).",
                "",
                "| | M_J (Jaccard) | M_F (F-measure, β² = 0.3) |",
                "|---|---:|---:|",
                f"| model | {summary['mj']:.4f} | {summary['mf']:.4f} |",
                "",
            ]
            if summary.get("mf_threshold") == summary.get("mf_threshold"):  # not NaN
                lines += [f"M_F at the dataset-level threshold {summary['mf_threshold']:.3f}.", ""]
        else:  # class maps (AVSS)
            lines += [
                f"Test frames with a ground truth: {int(summary['n_frames'])}; classes seen: "
                f"{int(summary['n_classes_seen'])}.",
                "",
                "| | mIoU | mean F (β² = 0.3) |",
                "|---|---:|---:|",
                f"| with background | {summary['miou']:.4f} | {summary['mf']:.4f} |",
                f"| without background | {summary['miou_no_bg']:.4f} | {summary['mf_no_bg']:.4f} |",
                "",
            ]
            if per_class is not None:
                seen = [int(c) for c in torch.nonzero(per_class["count"] > 0).flatten()]
                lines += ["## Per class", "", "| class | frames | IoU | F |", "|---|---:|---:|---:|"]
                for c in seen:
                    name = class_names[c] if c < len(class_names) else f"class {c}"
                    count, iou, f = int(per_class["count"][c]), float(per_class["iou"][c]), float(per_class["f"][c])
                    lines.append(f"| {name} | {count} | {iou:.4f} | {f:.4f} |")
                lines.append("")
        lines += [
            "## Examples",
            "",
            f"`examples.png`: {len(self.examples)} test clips, a column per annotated frame; rows: the frame, the "
            "predicted mask, the ground truth.",
            "",
            "![examples](examples.png)",
            "",
        ]
        return "\n".join(lines)


def _segmentation_class_names(trainer: Trainer, num_classes: int) -> list[str]:
    """The class names of an AVSS datamodule's tree (``label2idx.json``); none for binary masks or elsewhere."""
    datamodule = getattr(trainer, "datamodule", None)
    if num_classes == 1 or getattr(datamodule, "dataset", None) != "avss":
        return []
    from avtoolkit.data.avsbench_layout import AVSS_LABELS, read_label2idx
    from avtoolkit.errors import UserError

    try:
        return list(read_label2idx(Path(datamodule.root) / AVSS_LABELS))  # type: ignore[union-attr]
    except UserError:
        return []


SEPARATION_COLUMNS = {
    "n_clips": "mixtures",
    "sdr": "SDR (dB)",
    "sir": "SIR (dB)",
    "sar": "SAR (dB)",
    "sdri": "SDRi (dB)",
}
BINARY_COLUMNS = {"n_frames": "frames", "mj": "M_J", "mf": "M_F"}
SEMANTIC_COLUMNS = {"n_frames": "frames", "miou": "mIoU", "mf": "mean F", "miou_no_bg": "mIoU w/o bg"}


def _other_test_sets(task: BaseAVTask) -> dict[str, dict[str, float]]:
    """The dataset-level metrics of each test set after the first (synced across processes), by set name."""
    return {
        name: {key: float(value) for key, value in task.evaluation_metrics(name).compute().items()}
        for name in task.test_sets()[1:]
    }


def _test_sets_section(first: dict[str, float], others: dict[str, dict[str, float]], columns: dict[str, str]) -> str:
    """A markdown table of every test set's headline metrics, one row per set (nothing for a single set)."""
    if not others:
        return ""
    lines = [
        "",
        "## Test sets",
        "",
        "The test split is evaluated in sets: `test` holds the clips rendered like the training clips (in-family); "
        "`test_held_out` holds clips drawn and played by the picture and sound families no model trained on "
        "(held-out family): whether the model recognises the objects in a rendering it has never met. The "
        "sections above are of `test`.",
        "",
        "| test set | " + " | ".join(columns.values()) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, summary in {"test": first, **others}.items():
        cells = [f"{int(summary[k])}" if k.startswith("n_") else f"{summary[k]:.3f}" for k in columns]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
