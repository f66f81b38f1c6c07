"""Segmentation objectives: what :class:`~avtoolkit.tasks.segmentation.AVSegmentationTask` minimises.

A criterion reads a network's :class:`~avtoolkit.models.segmentation.base.SegmentationOutput` and the ground
truth of the frames that have one, and returns named losses with their total under ``"loss"``:

- :class:`MaskClassificationCriterion`: Mask2Former's Hungarian set loss on the mask-classification predictions
  (class CE, mask BCE, Dice; deep supervision), for FAVS and its baseline.
- :class:`PixelCriterion`: per-pixel BCE (+ Dice) for binary maps or cross-entropy for class maps, on the
  network's per-pixel logits, for per-pixel networks such as the TPAVI-style light model.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.losses.set_criterion import SetCriterion, masks_to_targets
from avtoolkit.models.segmentation.base import MaskPrediction, SegmentationOutput


class SegmentationCriterion(nn.Module):
    """Base class: ``forward(output, masks, valid) -> {"loss": total, name: term, ...}``.

    ``masks`` ``(B, T, H, W)`` int64 (0/1 or class indices), ``valid`` ``(B, T)`` bool: only valid frames count.
    """

    def forward(self, output: SegmentationOutput, masks: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """Named losses and their total under ``"loss"``."""
        raise NotImplementedError


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean soft Dice loss ``1 − (2|P∩G| + 1) / (|P| + |G| + 1)`` over the leading dimension of ``(N, H, W)`` maps."""
    probabilities = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (probabilities * target).sum(1)
    return (1 - (2 * overlap + 1) / (probabilities.sum(1) + target.sum(1) + 1)).mean()


class PixelCriterion(SegmentationCriterion):
    """Per-pixel loss on ``output.logits`` resized (bilinear) to the ground truth.

    Binary maps (``K = 1``): ``bce_weight · BCE + dice_weight · Dice`` of the foreground logit. Class maps
    (``K > 1``): ``bce_weight · cross-entropy`` (the Dice term is not used).

    Args:
        bce_weight: Weight of the (binary) cross-entropy.
        dice_weight: Weight of the Dice loss (binary maps only).
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight

    def forward(self, output: SegmentationOutput, masks: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """``loss_bce`` (or ``loss_ce``), ``loss_dice`` (binary) and their weighted sum ``loss``."""
        logits = output.logits[valid.bool()]  # (n, K, h, w)
        target = masks[valid.bool()]  # (n, H, W)
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if logits.shape[1] > 1:
            ce = F.cross_entropy(logits, target)
            return {"loss_ce": ce, "loss": self.bce_weight * ce}
        foreground = logits[:, 0]
        bce = F.binary_cross_entropy_with_logits(foreground, target.float())
        dice = dice_loss(foreground, target.float())
        return {"loss_bce": bce, "loss_dice": dice, "loss": self.bce_weight * bce + self.dice_weight * dice}


class MaskClassificationCriterion(SegmentationCriterion):
    """Mask2Former's set loss (Hungarian matching; class CE, mask BCE, Dice; every prediction supervised).

    Args:
        class_weight: Weight of the classification cross-entropy.
        mask_weight: Weight of the mask binary cross-entropy.
        dice_weight: Weight of the mask Dice loss.
        no_object_weight: Cross-entropy weight of the "no object" class.
        num_points: Points sampled per mask (uncertainty-based, as Mask2Former) for the mask losses; ``None``
            uses every pixel (fine for small images).
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int | None = 12544,
    ) -> None:
        super().__init__()
        self.set_criterion = SetCriterion(class_weight, mask_weight, dice_weight, no_object_weight, num_points)

    def forward(self, output: SegmentationOutput, masks: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """``loss_class``, ``loss_mask``, ``loss_dice`` (summed over the predictions) and their total ``loss``."""
        if not output.predictions:
            raise ValueError(
                "MaskClassificationCriterion needs mask-classification predictions, but this network predicts "
                "per pixel only: use avtoolkit.losses.segmentation.PixelCriterion as the task's criterion"
            )
        keep = valid.bool().flatten()  # predictions are per frame, (B·T, ...)
        num_classes = output.predictions[-1].class_logits.shape[-1] - 1
        targets = masks_to_targets(masks.flatten(0, 1)[keep], num_classes)
        predictions = [MaskPrediction(p.class_logits[keep], p.mask_logits[keep]) for p in output.predictions]
        return self.set_criterion(predictions, targets)
