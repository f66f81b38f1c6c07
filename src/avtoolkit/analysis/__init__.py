"""Analyses from the papers: plain functions, tensors in, numbers or small dataclasses out.

* :mod:`~avtoolkit.analysis.acoustics`: HFRA's acoustic descriptors of instrument recordings, amplitude ratio
  (max|x|/rms) and harmonic complexity (1 − HCR over the first 8 harmonics), and a per-class table.
* :mod:`~avtoolkit.analysis.representations`: modality gap, linear probes, global average pooling.
* :mod:`~avtoolkit.analysis.gates`: DGFNet gate (σ) statistics and frame corruptions for the noise stress test.
* :mod:`~avtoolkit.analysis.per_class`: per-class SDR from ``SeparationMetrics.per_clip()`` and a table
  comparing models (e.g. fusion types).
* :mod:`~avtoolkit.analysis.favs`: FAVS's frequency bands before/after FDED and SCMC's expert usage and mean k
  per class.
* :mod:`~avtoolkit.analysis.aliasing`: the aliasing ratio of a feature map entering a strided layer, and of each
  backbone transition with and without SFM's adaptive resampling.

No Lightning and no data loading here: drivers run models over data and call these functions.
"""

from avtoolkit.analysis.acoustics import (
    DescriptorRow,
    HarmonicAnalysis,
    amplitude_ratio,
    descriptor_table,
    format_table,
    harmonic_analysis,
    harmonic_complexity,
)
from avtoolkit.analysis.aliasing import aliasing_ratio, backbone_aliasing
from avtoolkit.analysis.favs import ExpertUsage, RoutingRecorder, band_energy, fded_bands
from avtoolkit.analysis.gates import (
    Corruption,
    GateRecorder,
    GateStats,
    compare_gates,
    corrupt_frames,
    derangement,
    gate_statistics,
)
from avtoolkit.analysis.per_class import ClassRow, compare_models, per_class_sdr
from avtoolkit.analysis.representations import ProbeResult, linear_probe, modality_gap, pooled_features

__all__ = [
    "ClassRow",
    "Corruption",
    "DescriptorRow",
    "ExpertUsage",
    "GateRecorder",
    "GateStats",
    "HarmonicAnalysis",
    "ProbeResult",
    "RoutingRecorder",
    "aliasing_ratio",
    "amplitude_ratio",
    "backbone_aliasing",
    "band_energy",
    "compare_gates",
    "compare_models",
    "corrupt_frames",
    "derangement",
    "descriptor_table",
    "fded_bands",
    "format_table",
    "gate_statistics",
    "harmonic_analysis",
    "harmonic_complexity",
    "linear_probe",
    "modality_gap",
    "per_class_sdr",
    "pooled_features",
]
