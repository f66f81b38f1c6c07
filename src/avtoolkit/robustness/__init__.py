"""Robustness suite: every model under negative audio, absent sources, noise and corrupted frames.

One call (:func:`run_robustness`, the ``avtoolkit robustness`` command) evaluates checkpoints on their test split,
clean and under each corruption, and writes ``report.md``, ``metrics.json`` and figures (metric against severity).

* :mod:`~avtoolkit.robustness.corruptions`: the corruptions, pure tensor functions, and their severity tables.
* :mod:`~avtoolkit.robustness.metrics`: FPR under negative audio (AVSBench-Robust), harmonic combined scores, the
  energy of an estimate relative to its mixture.
* :mod:`~avtoolkit.robustness.suite`: the evaluation passes and the entry point.
* :mod:`~avtoolkit.robustness.report`: the report folder.
"""

from avtoolkit.robustness.corruptions import SEGMENTATION_CORRUPTIONS, SEPARATION_CORRUPTIONS, CorruptionSpec
from avtoolkit.robustness.metrics import ForegroundRate, energy_ratio_db, global_scores, harmonic_mean
from avtoolkit.robustness.suite import (
    CheckpointResult,
    SuiteResult,
    evaluate_segmentation,
    evaluate_separation,
    run_robustness,
)

__all__ = [
    "SEGMENTATION_CORRUPTIONS",
    "SEPARATION_CORRUPTIONS",
    "CheckpointResult",
    "CorruptionSpec",
    "ForegroundRate",
    "SuiteResult",
    "energy_ratio_db",
    "evaluate_segmentation",
    "evaluate_separation",
    "global_scores",
    "harmonic_mean",
    "run_robustness",
]
