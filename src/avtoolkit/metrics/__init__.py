"""Metrics (torchmetrics ``Metric``s, DDP-synchronised) and the BSS Eval fast path.

* :mod:`~avtoolkit.metrics.bss_eval`: SDR / SIR / SAR as mir_eval defines them, batched in torch (fast path)
  or through mir_eval itself (exact path).
* :class:`SeparationMetrics`: dataset-level SDR / SIR / SAR, medians, mixture baseline, SDRi.
* :class:`BinarySegmentationMetrics`: M_J and M_F (S4, MS3).
* :class:`SemanticSegmentationMetrics`: mIoU and mean F (AVSS).

See ``specs/metrics.md`` for the protocols.
"""

from avtoolkit.metrics.bss_eval import (
    bss_eval_sources,
    bss_eval_sources_exact,
    bss_eval_sources_matrix,
    silent,
)
from avtoolkit.metrics.segmentation import BinarySegmentationMetrics, SemanticSegmentationMetrics
from avtoolkit.metrics.separation import SeparationMetrics

__all__ = [
    "BinarySegmentationMetrics",
    "SemanticSegmentationMetrics",
    "SeparationMetrics",
    "bss_eval_sources",
    "bss_eval_sources_exact",
    "bss_eval_sources_matrix",
    "silent",
]
