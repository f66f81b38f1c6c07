"""Mask2Former's set criterion: Hungarian matching of queries to target masks, class + mask + Dice losses.

The FAVS recipe's loss: Mask2Former set loss with class CE weight 2 (no-object weight 0.1), mask BCE weight 5,
Dice weight 5, deep supervision (every decoder prediction is matched and supervised on its own).

Per frame, ``Q`` predictions ``(p_q, m_q)`` (class probabilities over K + 1, mask logits) and ``n`` targets
``(c_j, g_j)`` (class, binary mask). Matching cost (DETR/MaskFormer), minimised by the Hungarian algorithm::

    C(q, j) = λ_cls · (−p_q(c_j)) + λ_mask · BCE(m_q, g_j) + λ_dice · Dice(m_q, g_j)

    BCE(m, g)  = mean over points of  softplus(m) − m·g                     (binary CE with logits)
    Dice(m, g) = 1 − (2 Σ σ(m)·g + 1) / (Σ σ(m) + Σ g + 1)                  (smoothed, on probabilities)

Loss of one prediction, with σ(q) the matched target of query q (∅ = no object, class K)::

    L_cls  = Σ_{q} w(c_σ(q)) · CE(p_q, c_σ(q)) / Σ_q w(c_σ(q))              (w = 1, w(∅) = no_object_weight)
    L_mask = Σ_{matched q} BCE(m_q, g_σ(q)) / n_masks
    L_dice = Σ_{matched q} Dice(m_q, g_σ(q)) / n_masks                        (n_masks = max(1, #targets))
    L      = λ_cls L_cls + λ_mask L_mask + λ_dice L_dice,  summed over all predictions (deep supervision)

Where the mask terms are evaluated (``num_points``):

- ``None``: on full masks. The mask logits (stride 4) are upsampled bilinearly (``align_corners=False``) to the
  target masks' size, so the loss is measured at label resolution and equals the point-sampled loss with one
  point at every target pixel centre.
- an integer P: on P points per mask (Mask2Former Sec. 3.3). The matcher uses P uniformly random points per frame,
  shared by the predictions and targets of that frame; the loss uses uncertainty-based importance sampling:
  ``oversample_ratio · P`` random points, of which the ``importance_sample_ratio · P`` with the most uncertain
  prediction (logit closest to 0) are kept, plus random points for the rest. Values at points are read with
  bilinear ``grid_sample`` (``align_corners=False``). Points stay inside the image; we pad with the border value
  (Mask2Former pads with zeros, which bends values towards 0 in the outer half pixel).

With ``torch.distributed`` initialised, ``n_masks`` is averaged over the processes (as in Mask2Former), so every
process normalises by the same count; every process must then call the criterion.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from avtoolkit.models.segmentation.base import MaskPrediction


def masks_to_targets(masks: Tensor, num_classes: int) -> list[dict[str, Tensor]]:
    """Per-frame set targets from per-pixel label maps.

    Args:
        masks: ``(N, H, W)`` int64 labels: 0/1 for ``num_classes == 1``, class indices ``0..K−1`` otherwise.
        num_classes: K. With 1 (binary S4/MS3) the pixels equal to 1 form one instance of class 0 when there are
            any (the background is not an instance). With K > 1 (AVSS) every class present in the frame is one
            instance, background (class 0) included, as semantic Mask2Former treats every class.

    Returns:
        One dict per frame: ``labels`` ``(n,)`` int64 and ``masks`` ``(n, H, W)`` float (0/1), on ``masks``' device;
        ``n = 0`` for a binary frame without foreground.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks_to_targets expects masks (N, H, W), got {tuple(masks.shape)}")
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise ValueError(f"masks_to_targets expects integer label maps, got {masks.dtype}")
    if num_classes < 1:
        raise ValueError(f"masks_to_targets needs num_classes ≥ 1, got {num_classes}")
    top = 1 if num_classes == 1 else num_classes - 1
    if masks.numel():
        low, high = int(masks.min()), int(masks.max())
        if low < 0 or high > top:
            raise ValueError(
                f"masks_to_targets with num_classes={num_classes} expects labels in [0, {top}], got [{low}, {high}]"
            )
    targets = []
    for frame in masks:
        if num_classes == 1:
            foreground = frame == 1
            present = bool(foreground.any())
            labels = torch.zeros(int(present), dtype=torch.int64, device=masks.device)
            instance_masks = foreground[None].float() if present else foreground.new_zeros((0, *frame.shape)).float()
        else:
            labels = torch.unique(frame).to(torch.int64)  # sorted classes present
            instance_masks = (frame[None] == labels[:, None, None]).float()
        targets.append({"labels": labels, "masks": instance_masks})
    return targets


def point_sample(values: Tensor, points: Tensor) -> Tensor:
    """Bilinear read-out of maps at continuous points.

    Args:
        values: ``(R, h, w)`` maps.
        points: ``(R, P, 2)`` or ``(1, P, 2)`` (shared) points ``(x, y)`` in ``[0, 1]²``, ``(0, 0)`` the top-left
            image corner (pixel centres at ``(i + 0.5) / w``), as ``align_corners=False``.

    Returns:
        ``(R, P)`` values at the points (border padding).
    """
    grid = (2 * points - 1).to(values.dtype).expand(values.shape[0], -1, -1)[:, :, None, :]  # (R, P, 1, 2)
    sampled = F.grid_sample(values[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, 0, :, 0]


def pixel_centre_points(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``(1, H·W, 2)`` points ``(x, y)`` at the centres of an ``H × W`` grid, row-major (for :func:`point_sample`)."""
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(1, height * width, 2)


def uncertain_points(
    logits: Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> Tensor:
    """Mask2Former's training points: the most uncertain of an oversampled random set, plus random points.

    Args:
        logits: ``(R, h, w)`` mask logits (uncertainty ``−|logit|``).
        num_points: P, points per mask.
        oversample_ratio: ``k ≥ 1``: ``k·P`` random candidates are scored.
        importance_sample_ratio: ``β ∈ [0, 1]``: ``β·P`` points are the most uncertain candidates, the rest are
            drawn uniformly.

    Returns:
        ``(R, P, 2)`` points ``(x, y)`` in ``[0, 1]²``.
    """
    R = logits.shape[0]
    candidates = torch.rand(R, int(num_points * oversample_ratio), 2, device=logits.device)
    uncertainty = -point_sample(logits.detach(), candidates).abs()  # (R, kP)
    num_uncertain = int(importance_sample_ratio * num_points)
    chosen = uncertainty.topk(num_uncertain, dim=1).indices  # (R, βP)
    uncertain = torch.gather(candidates, 1, chosen[..., None].expand(-1, -1, 2))
    random = torch.rand(R, num_points - num_uncertain, 2, device=logits.device)
    return torch.cat([uncertain, random], dim=1)


def pairwise_sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary CE between every prediction and every target: ``(Q, P)``, ``(n, P)`` → ``(Q, n)``."""
    P = logits.shape[-1]
    # mean_p softplus(m) − m·g, summed as matrix products
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.T) / P


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Smoothed Dice loss between every prediction and every target: ``(Q, P)``, ``(n, P)`` → ``(Q, n)``."""
    probabilities = logits.sigmoid()
    numerator = 2 * probabilities @ targets.T + 1
    denominator = probabilities.sum(-1, keepdim=True) + targets.sum(-1)[None, :] + 1
    return 1 - numerator / denominator


def sigmoid_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary CE of each matched pair: ``(M, P)``, ``(M, P)`` → ``(M,)``."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)


def dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Smoothed Dice loss of each matched pair: ``(M, P)``, ``(M, P)`` → ``(M,)``."""
    probabilities = logits.sigmoid()
    numerator = 2 * (probabilities * targets).sum(-1) + 1
    return 1 - numerator / (probabilities.sum(-1) + targets.sum(-1) + 1)


def _check_targets(targets: list[dict[str, Tensor]], frames: int, num_classes: int) -> None:
    if len(targets) != frames:
        raise ValueError(f"set criterion got {frames} predicted frames but {len(targets)} targets; pass one per frame")
    sizes = {tuple(t["masks"].shape[-2:]) for t in targets}
    if len(sizes) > 1:
        raise ValueError(f"set criterion expects target masks of one size per call, got sizes {sorted(sizes)}")
    for i, target in enumerate(targets):
        labels, masks = target["labels"], target["masks"]
        if labels.dim() != 1 or masks.dim() != 3 or masks.shape[0] != labels.shape[0]:
            raise ValueError(
                f"target {i} must hold labels (n,) and masks (n, H, W), got {tuple(labels.shape)} and "
                f"{tuple(masks.shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"target {i} has labels outside [0, {num_classes - 1}] (K = class_logits.shape[-1] − 1 = "
                f"{num_classes}): {labels.tolist()}"
            )


class HungarianMatcher:
    """One-to-one assignment of queries to targets minimising the matching cost (module docstring).

    Args:
        class_weight: λ_cls, weight of ``−p_q(c_j)``.
        mask_weight: λ_mask, weight of the mean binary CE.
        dice_weight: λ_dice, weight of the Dice loss.
        num_points: P uniformly random points per frame on which the mask costs are computed, or ``None`` for the
            full masks (logits upsampled to the target size).
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        num_points: int | None = None,
    ) -> None:
        if num_points is not None and num_points < 1:
            raise ValueError(f"HungarianMatcher num_points must be ≥ 1 or None (full masks), got {num_points}")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def cost(self, class_logits: Tensor, mask_logits: Tensor, target: dict[str, Tensor]) -> Tensor:
        """The ``(Q, n)`` matching cost of one frame.

        Args:
            class_logits: ``(Q, K + 1)``.
            mask_logits: ``(Q, h, w)``.
            target: ``labels`` ``(n,)`` and ``masks`` ``(n, H, W)``.

        Returns:
            ``(Q, n)`` cost ``C(q, j)``.
        """
        labels, target_masks = target["labels"], target["masks"].to(torch.float32)
        cost_class = -class_logits.float().softmax(-1)[:, labels]  # −p_q(c_j)
        logits = mask_logits.float()
        if self.num_points is None:
            predicted = F.interpolate(logits[None], size=target_masks.shape[-2:], mode="bilinear", align_corners=False)
            predicted, truth = predicted[0].flatten(1), target_masks.flatten(1)
        else:
            points = torch.rand(1, self.num_points, 2, device=logits.device)  # shared by predictions and targets
            predicted, truth = point_sample(logits, points), point_sample(target_masks, points)
        return (
            self.class_weight * cost_class
            + self.mask_weight * pairwise_sigmoid_ce(predicted, truth)
            + self.dice_weight * pairwise_dice(predicted, truth)
        )

    @torch.no_grad()
    def __call__(self, prediction: MaskPrediction, targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Match every frame's queries to its targets.

        Args:
            prediction: Class logits ``(N, Q, K + 1)``, mask logits ``(N, Q, h, w)``.
            targets: N dicts with ``labels`` ``(n,)`` and ``masks`` ``(n, H, W)``.

        Returns:
            Per frame ``(query_indices, target_indices)``, two int64 ``(min(Q, n),)`` tensors on the CPU, sorted by
            query index; query ``query_indices[i]`` is assigned target ``target_indices[i]``.
        """
        matches = []
        for frame, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost(prediction.class_logits[frame], prediction.mask_logits[frame], target)
            rows, cols = linear_sum_assignment(cost.cpu().double().numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return matches


class SetCriterion(nn.Module):
    """Mask2Former's set loss over a list of predictions (deep supervision), each matched on its own.

    Args:
        class_weight: λ_cls, weight of the class CE (loss and matching cost).
        mask_weight: λ_mask, weight of the mask binary CE (loss and matching cost).
        dice_weight: λ_dice, weight of the Dice loss (loss and matching cost).
        no_object_weight: Weight of the no-object class (the last) in the class CE.
        num_points: Points per mask (importance-sampled in the loss, uniform in the matcher), or ``None`` for
            full masks (prediction logits upsampled bilinearly to the target size).
        oversample_ratio: Candidates per kept point for the importance sampling (≥ 1).
        importance_sample_ratio: Share of the points taken from the most uncertain candidates (in [0, 1]).
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int | None = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if num_points is not None and num_points < 1:
            raise ValueError(f"SetCriterion num_points must be ≥ 1 or None (full masks), got {num_points}")
        if oversample_ratio < 1:
            raise ValueError(f"SetCriterion oversample_ratio must be ≥ 1, got {oversample_ratio}")
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f"SetCriterion importance_sample_ratio must lie in [0, 1], got {importance_sample_ratio}")
        if no_object_weight <= 0:
            raise ValueError(
                f"SetCriterion no_object_weight must be > 0 (frames without targets have only no-object terms), "
                f"got {no_object_weight}"
            )
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)

    def _num_masks(self, targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp(min=1.0)

    def class_loss(
        self, class_logits: Tensor, matches: list[tuple[Tensor, Tensor]], targets: list[dict[str, Tensor]]
    ) -> Tensor:
        """Unweighted ``L_cls``: weighted CE over all queries, unmatched ones against no object (class K).

        Args:
            class_logits: ``(N, Q, K + 1)``.
            matches: Per frame ``(query_indices, target_indices)`` from the matcher.
            targets: Per frame ``labels`` ``(n,)``.

        Returns:
            Scalar loss.
        """
        K = class_logits.shape[-1] - 1
        classes = torch.full(class_logits.shape[:2], K, dtype=torch.int64, device=class_logits.device)
        for frame, (queries, chosen) in enumerate(matches):
            labels = targets[frame]["labels"]
            classes[frame, queries.to(classes.device)] = labels[chosen.to(labels.device)].to(classes.device)
        weight = torch.ones(K + 1, device=class_logits.device)
        weight[K] = self.no_object_weight
        return F.cross_entropy(class_logits.float().transpose(1, 2), classes, weight=weight)

    def mask_losses(
        self,
        mask_logits: Tensor,
        matches: list[tuple[Tensor, Tensor]],
        targets: list[dict[str, Tensor]],
        num_masks: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Unweighted ``(L_mask, L_dice)`` of the matched queries, each normalised by ``num_masks``.

        Args:
            mask_logits: ``(N, Q, h, w)``.
            matches: Per frame ``(query_indices, target_indices)`` from the matcher.
            targets: Per frame ``masks`` ``(n, H, W)``.
            num_masks: Scalar normaliser ``max(1, #targets)``.

        Returns:
            Two scalars; exact zeros (still attached to the graph) when nothing is matched.
        """
        device = mask_logits.device
        predicted = torch.cat([mask_logits[frame, q.to(device)] for frame, (q, _) in enumerate(matches)])
        if predicted.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero.clone()
        truth = torch.cat([targets[i]["masks"][t.to(targets[i]["masks"].device)] for i, (_, t) in enumerate(matches)])
        predicted, truth = predicted.float(), truth.to(device=device, dtype=torch.float32)  # (M, h, w), (M, H, W)
        if self.num_points is None:
            logits = F.interpolate(predicted[None], size=truth.shape[-2:], mode="bilinear", align_corners=False)[0]
            logits, labels = logits.flatten(1), truth.flatten(1)
        else:
            with torch.no_grad():
                points = uncertain_points(
                    predicted, self.num_points, self.oversample_ratio, self.importance_sample_ratio
                )
                labels = point_sample(truth, points)
            logits = point_sample(predicted, points)
        return sigmoid_ce(logits, labels).sum() / num_masks, dice(logits, labels).sum() / num_masks

    def forward(self, predictions: list[MaskPrediction], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The set loss summed over all predictions.

        Args:
            predictions: Mask-classification predictions (e.g. every decoder layer's), each class logits
                ``(N, Q, K + 1)`` and mask logits ``(N, Q, h, w)``; K is read from the class logits.
            targets: N dicts (one per frame, see :func:`masks_to_targets`) with ``labels`` ``(n,)`` int64 in
                ``[0, K)`` and ``masks`` ``(n, H, W)`` float; ``n`` may be 0, and so may N (all losses are then
                zero).

        Returns:
            ``loss_class``, ``loss_mask``, ``loss_dice`` (weighted, summed over the predictions) and their sum
            ``loss``.
        """
        if not predictions:
            raise ValueError("SetCriterion needs at least one prediction")
        first = predictions[0]
        _check_targets(targets, first.class_logits.shape[0], first.class_logits.shape[-1] - 1)
        num_masks = self._num_masks(targets, first.class_logits.device)
        loss_class = loss_mask = loss_dice = first.class_logits.new_zeros((), dtype=torch.float32)
        if first.class_logits.shape[0] == 0:  # no frame (e.g. none with a ground truth): zeros, still attached
            zero = sum((p.class_logits.sum() + p.mask_logits.sum() for p in predictions), loss_class) * 0.0
            return {"loss_class": zero, "loss_mask": zero.clone(), "loss_dice": zero.clone(), "loss": zero.clone()}
        for prediction in predictions:
            matches = self.matcher(prediction, targets)  # each prediction matched on its own
            mask_term, dice_term = self.mask_losses(prediction.mask_logits, matches, targets, num_masks)
            loss_class = loss_class + self.class_weight * self.class_loss(prediction.class_logits, matches, targets)
            loss_mask = loss_mask + self.mask_weight * mask_term
            loss_dice = loss_dice + self.dice_weight * dice_term
        return {
            "loss_class": loss_class,
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
            "loss": loss_class + loss_mask + loss_dice,
        }
