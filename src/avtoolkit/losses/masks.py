"""Spectrogram-mask objectives of the Sound-of-Pixels lineage (binary and ratio mask targets)."""

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_weight(mixture_magnitude: Tensor) -> Tensor:
    """Per-bin loss weight ``clamp(log1p(|X|), 1e-3, 10)``: loud bins count more, silent bins barely."""
    return torch.clamp(torch.log1p(mixture_magnitude), 1e-3, 10.0)


def weighted_bce(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Weighted binary cross-entropy on mask logits, averaged over all bins."""
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def weighted_l1(prediction: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Weighted L1 between predicted and target ratio masks, averaged over all bins."""
    return torch.mean(weight * torch.abs(prediction - target))
