"""Metrics of the robustness suite: false-positive rate under negative audio, a combined score, estimate energy.

False-positive rate (FPR), after AVSBench-Robust (J. Li, W. Zhao, Z. Huang, Y. Guo, Y. Tian, "Do Audio-Visual
Segmentation Models Truly Segment Sounding Objects?", arXiv 2502.00358, 2025). Its official evaluation code
(github.com/jiali-home/AVSBench-Robust, ``training_evaluation/code/AVSegFormer/scripts/s4/test.py``,
``calculate_FPR``) scores a frame of a negative sample (audio that matches nothing in the frames, so the ground
truth is empty) as the fraction of its pixels predicted as foreground:

    FPR_frame = |{pixels with sigmoid(logit) > 0.5}| / (H · W)

and averages it over the frames (per batch, then over batches; here over all evaluated frames, which is the same
for equal batches). For class maps (AVSS) a pixel is foreground when its arg-max class is not the background 0.
On a negative set, the default M_J of :class:`~avtoolkit.metrics.BinarySegmentationMetrics` (IoU of an empty
ground truth = the fraction of pixels predicted background) equals 1 − FPR.

Combined score. AVSBench-Robust also reports global metrics (G-mIoU, G-F, G-FPR) that combine the clean positive
set with the negative sets; its README says they were "manually aggregated and calculated based on the exported
results, using Excel", the code has no formula, and the paper's definition could not be retrieved here. So this
suite does **not** claim to reproduce them. It reports its own, clearly named, combination instead: the harmonic
mean of a positive-set score and the negative-set true-negative rate,

    harmonic_mj = 2 · M_J · (1 − FPR) / (M_J + (1 − FPR))     (likewise harmonic_mf with M_F, harmonic_miou)

with M_J (M_F, mIoU) on the clean positive test set and FPR the mean over the negative-audio kinds (and per kind).
Both terms lie in [0, 1]; the score is high only when a model segments sounding objects *and* stays silent on
negative audio, and is 0 when either term is 0.

Estimate energy (separation, the absent-source query): ``10 · log10(Σ est² / Σ mix²)`` per mixture, in dB relative
to the mixture the model was given (ratios below 1e-12 are floored there, −120 dB).
"""

import math

import torch
from torch import Tensor

__all__ = [
    "ENERGY_FLOOR_DB",
    "ForegroundRate",
    "energy_ratio_db",
    "foreground_fraction",
    "global_scores",
    "harmonic_mean",
]

ENERGY_FLOOR_DB = -120.0
"""Floor of :func:`energy_ratio_db` (an all-zero estimate)."""


def foreground_fraction(scores: Tensor, valid: Tensor) -> Tensor:
    """Per evaluated frame, the fraction of its pixels predicted as foreground.

    Args:
        scores: ``(B, T, H, W)`` binary logits (foreground: logit > 0, i.e. sigmoid > 0.5) or ``(B, T, K, H, W)``
            class scores with ``K ≥ 2`` (foreground: arg-max ≠ 0).
        valid: ``(B, T)`` bool, the frames to score.

    Returns:
        ``(n,)`` float64, one value per valid frame, in frame order.
    """
    if scores.dim() == 4:
        foreground = scores > 0
    elif scores.dim() == 5:
        foreground = scores.argmax(2) != 0
    else:
        raise ValueError(f"scores must be (B, T, H, W) or (B, T, K, H, W), got {tuple(scores.shape)}")
    if tuple(valid.shape) != tuple(foreground.shape[:2]):
        raise ValueError(f"valid must be (B, T) = {tuple(foreground.shape[:2])}, got {tuple(valid.shape)}")
    return foreground[valid.bool()].flatten(1).double().mean(1)


class ForegroundRate:
    """Mean over evaluated frames of the fraction of pixels predicted as foreground (FPR on a negative set)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.n_frames = 0

    def update(self, scores: Tensor, valid: Tensor) -> None:
        """Accumulate a batch (see :func:`foreground_fraction` for the shapes)."""
        fractions = foreground_fraction(scores, valid)
        self.total += float(fractions.sum())
        self.n_frames += int(fractions.numel())

    def compute(self) -> float:
        """The mean fraction (NaN before any frame)."""
        return self.total / self.n_frames if self.n_frames else math.nan


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)`` of two scores in [0, 1]; 0 when both are 0, NaN when either is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def global_scores(positive: dict[str, float], fpr: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    """The combined scores of the module docstring.

    Args:
        positive: Clean positive-set metrics (e.g. ``{"mj": 0.8, "mf": 0.85}``).
        fpr: FPR per negative-audio kind (e.g. ``{"negative_silence": 0.1, ...}``).
        keys: Which positive metrics to combine (e.g. ``("mj", "mf")``).

    Returns:
        ``fpr_mean`` (mean over the kinds), ``harmonic_<key>`` (with ``fpr_mean``) and ``harmonic_<key>/<kind>``
        (with each kind's FPR); empty without negative kinds.
    """
    if not fpr:
        return {}
    mean = sum(fpr.values()) / len(fpr)
    out = {"fpr_mean": mean}
    for key in keys:
        out[f"harmonic_{key}"] = harmonic_mean(positive[key], 1 - mean)
        for kind, value in fpr.items():
            out[f"harmonic_{key}/{kind}"] = harmonic_mean(positive[key], 1 - value)
    return out


def energy_ratio_db(estimate: Tensor, mixture: Tensor) -> Tensor:
    """``10 log10(Σ estimate² / Σ mixture²)`` over the last dimension, float64 dB, floored at −120 dB.

    Args:
        estimate: ``(..., L)`` estimated source(s).
        mixture: ``(..., L)`` the mixture they were separated from (broadcast against ``estimate``).
    """
    numerator = estimate.double().square().sum(-1)
    denominator = mixture.double().square().sum(-1).clamp_min(1e-300)
    return 10 * torch.log10((numerator / denominator).clamp_min(10 ** (ENERGY_FLOOR_DB / 10)))
