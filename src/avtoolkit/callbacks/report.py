"""A report folder at the end of testing a separation model: metrics table, spectrograms, separated audio."""

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
from avtoolkit.data.batch import LABELS, MIXTURE, SOURCES
from avtoolkit.metrics.separation import PROTOCOLS
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
        """Keep the first ``n_examples`` mixtures with their truth and estimates."""
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
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        sample_rate = int(datamodule.sample_rate)
        class_names = list(getattr(datamodule, "class_names", []))
        with atomic_path(self.dirpath) as tmp:
            tmp.mkdir(parents=True)
            (tmp / "metrics.json").write_text(json.dumps({"protocol": protocol, **summary}, indent=2) + "\n")
            self._write_audio(tmp / "audio", sample_rate, class_names)
            self._write_figure(tmp / "spectrograms.png", pl_module.spectrogram, sample_rate, class_names)
            (tmp / "report.md").write_text(
                self._markdown(summary, per_clip, class_names, type(pl_module.model).__name__, protocol)
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
