"""Loss functions: small, separate, tested."""

from avtoolkit.losses.masks import mask_weight, weighted_bce, weighted_l1

__all__ = ["mask_weight", "weighted_bce", "weighted_l1"]
