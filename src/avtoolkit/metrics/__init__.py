"""Metrics (torchmetrics ``Metric``s, DDP-synchronised) and the BSS Eval fast path.

* :mod:`~avtoolkit.metrics.bss_eval`: SDR / SIR / SAR as mir_eval defines them, batched in torch (fast path)
  or through mir_eval itself (exact path).
* :class:`SeparationMetrics`: dataset-level SDR / SIR / SAR, medians, mixture baseline, SDRi; protocols
  ``default``, ``sound_of_pixels``, ``iquery`` and ``clipsep`` (the last three reproduce their authors' averaging).
* :class:`BinarySegmentationMetrics`: M_J and M_F (S4, MS3).
* :class:`SemanticSegmentationMetrics`: mIoU and mean F (AVSS).

Each metric's docstring states its protocols and conventions.
"""

from avtoolkit.metrics.bss_eval import (
    bss_eval_sources,
    bss_eval_sources_exact,
    bss_eval_sources_matrix,
    silent,
)
from avtoolkit.metrics.segmentation import BinarySegmentationMetrics, SemanticSegmentationMetrics
from avtoolkit.metrics.separation import PROTOCOLS, SeparationMetrics, SeparationProtocol

__all__ = [
    "PROTOCOLS",
    "BinarySegmentationMetrics",
    "SemanticSegmentationMetrics",
    "SeparationMetrics",
    "SeparationProtocol",
    "bss_eval_sources",
    "bss_eval_sources_exact",
    "bss_eval_sources_matrix",
    "silent",
]
