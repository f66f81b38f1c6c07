"""Learning evidence for audio-visual segmentation: a fixed CPU budget each, on the small synthetic AVSBench data.

Trains the quick-start FAVS (FDED + SCMC) and its baseline (the same pipeline without FDED and SCMC) for the
same wall-clock budget on the synthetic S4-layout data (one sounding object, silent distractors) and on the
MS3-layout data (several sounding objects), all from a frozen VGGish pre-trained to name the sound categories
of the S4 training clips (``avtoolkit pretrain vggish``, the stand-in for AudioSet weights) and a ResNet-18
pre-trained to name the objects of fresh synthetic pictures (``avtoolkit pretrain backbone``, the stand-in for
ImageNet weights); both are made first if missing. Keeps the checkpoint with the best validation M_J and
evaluates it on the held-out test clips twice:
as is, and with the audio swapped between the clips of each batch (a seeded random derangement). The
distractors are drawn like the sounding objects but make no sound, so only a model that listens can tell them
apart: its M_J must drop when the audio belongs to another clip.

Targets (S4): FAVS M_J ≥ 0.6; swapping the audio lowers FAVS's M_J by ≥ 0.2. MS3 rows are reported alongside.
Prints a table and exits non-zero when a target is missed. Checkpoints stay in ``--workdir``; ``--reuse``
evaluates them again without training.

    .venv/bin/python benchmarks/seg_quality.py [--minutes 20] [--runs favs_s4,favs_baseline_s4,favs_ms3,...]
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from avtoolkit.analysis import derangement
from avtoolkit.data.batch import AUDIO, MASK_VALID, MASKS
from avtoolkit.data.datamodules import SegmentationDataModule
from avtoolkit.metrics import BinarySegmentationMetrics
from avtoolkit.tasks.segmentation import AVSegmentationTask
from budget import budgeted_run, quickstart_data

RUNS = {
    "favs_s4": "FAVS, S4",
    "favs_baseline_s4": "baseline, S4",
    "favs_ms3": "FAVS, MS3",
    "favs_baseline_ms3": "baseline, MS3",
    "tpavi_s4": "TPAVI-light, S4",  # not in the default runs: the per-pixel network, for comparison
}
DEFAULT_RUNS = "favs_s4,favs_baseline_s4,favs_ms3,favs_baseline_ms3"


@torch.no_grad()
def evaluate(task: AVSegmentationTask, datamodule: SegmentationDataModule, swap_audio: bool) -> dict[str, float]:
    """M_J and M_F on the test split; with ``swap_audio`` each clip hears another clip of its batch."""
    task.eval()
    metrics = BinarySegmentationMetrics()
    generator = torch.Generator().manual_seed(0)
    for batch in datamodule.test_dataloader():
        batch = datamodule.on_after_batch_transfer({k: v.to(task.device) for k, v in batch.items()}, 0)
        if swap_audio and batch[AUDIO].shape[0] > 1:
            batch[AUDIO] = batch[AUDIO][derangement(batch[AUDIO].shape[0], generator, task.device)]
        scores = task.scores(task(batch), tuple(batch[MASKS].shape[-2:]))
        metrics.update(scores[:, :, 0], batch[MASKS], batch[MASK_VALID])
    return {k: float(v) for k, v in metrics.compute().items()}


def run(name: str, minutes: float, workdir: Path, reuse: bool) -> dict[str, Any]:
    """Train ``quickstart_{name}`` for ``minutes`` (unless reusing) and evaluate its best-validation checkpoint."""
    task, datamodule, checkpoint = budgeted_run(f"quickstart_{name}", name, minutes, workdir, reuse)
    assert isinstance(task, AVSegmentationTask) and isinstance(datamodule, SegmentationDataModule)
    datamodule.setup("test")
    clean = evaluate(task, datamodule, swap_audio=False)
    swapped = evaluate(task, datamodule, swap_audio=True)
    return {"steps": checkpoint["global_step"], **clean, "mj_swapped": swapped["mj"], "mf_swapped": swapped["mf"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per run (wall clock)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, from {', '.join(RUNS)}")
    parser.add_argument("--workdir", type=Path, default=Path("runs/seg_quality"), help="logs and checkpoints")
    parser.add_argument("--reuse", action="store_true", help="evaluate the best checkpoints already in --workdir")
    args = parser.parse_args()
    names = args.runs.split(",")
    for layout in sorted({name.rsplit("_", 1)[1] for name in names}):
        quickstart_data(layout)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {name: run(name, args.minutes, args.workdir, args.reuse) for name in names}

    print(f"\nsegmentation quality, {args.minutes:g} min training each (small synthetic data, held-out test clips)")
    print(f"{'run':<16}{'step':>6}{'M_J':>7}{'M_F':>7}{'M_J swapped':>13}{'Δ M_J':>8}{'M_F swapped':>13}")
    for name, r in results.items():
        print(
            f"{RUNS[name]:<16}{r['steps']:>6}{r['mj']:>7.3f}{r['mf']:>7.3f}{r['mj_swapped']:>13.3f}"
            f"{r['mj'] - r['mj_swapped']:>8.3f}{r['mf_swapped']:>13.3f}"
        )
    checks = []
    if "favs_s4" in results:
        r = results["favs_s4"]
        checks += [
            ("FAVS S4 M_J >= 0.6", r["mj"] >= 0.6),
            ("FAVS S4: swapping audio lowers M_J by >= 0.2", r["mj"] - r["mj_swapped"] >= 0.2),
        ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
