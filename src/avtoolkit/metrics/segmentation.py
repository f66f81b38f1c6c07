"""Segmentation metrics: M_J and M_F for S4 / MS3 (binary masks) and mIoU / mean F for AVSS (semantic).

Only frames marked valid (``mask_valid``: the frame has a
ground-truth mask) are evaluated; padded frames never are. All states are sums or "cat" lists, so the numbers
under DDP equal those of one process.

Binary (S4, MS3), per evaluated frame with prediction ``P`` and ground truth ``G``:

    IoU = |P ∩ G| / |P ∪ G|, with P = {sigmoid(logit) > 0.5};  empty G: IoU = |¬P| / (H W)     (eq. 1)
    prec_t = |P_t ∩ G| / |P_t|, rec_t = |P_t ∩ G| / |G|,  P_t = {sigmoid(logit) >= t}          (eq. 2)
    F_t = (1 + β²) prec_t rec_t / (β² prec_t + rec_t),  β² = 0.3, 0/0 := 0                        (eq. 3)

over 255 thresholds ``t = linspace(0, 1 - 1e-10, 255)``; frames with an empty ground truth are left out of
M_F. Default (dataset level): M_J = mean IoU over all evaluated frames; M_F = max over t of the F-curve
averaged over all frames with a non-empty ground truth (one threshold for the dataset). Compat ``"avsbench"``
reproduces the published code (AVSBench ``utility.py``): float32 sigmoid (which saturates to exactly 1 above
a logit of ≈16.6; the last threshold rounds to 1.0 in float32), ``IoU = inter / (union + 1e-7)``, and per
evaluation batch of ``avsbench_batch_size`` clips (in evaluation order) the batch mean IoU and the batch
F-curve's max, then the mean of the batch values (a batch without a non-empty frame scores F = 0).

Semantic (AVSS), prediction = argmax over ``C`` classes (0 = background), per frame and class ``c``:

    IoU_c = |P_c ∩ G_c| / |P_c ∪ G_c|,  F_c = (1 + β²) prec_c rec_c / (β² prec_c + rec_c)         (eq. 4)

(no threshold sweep, 0/0 := 0). A class's score is the mean over the frames where it appears in the
prediction or the ground truth. Default: classes never seen are left out of the mean over classes; compat
``"avsbench"`` counts them as 0 and averages all ``C``. Both are reported with and without background;
``no_background_drops_last_class=True`` reproduces the anchors' code, which drops the *last* class instead.
"""

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

SegmentationProtocol = Literal["default", "avsbench"]

BETA2 = 0.3
N_THRESHOLDS = 255


def _check_inputs(pred_shape: tuple[int, ...], target: Tensor, valid: Tensor) -> None:
    if tuple(target.shape) != pred_shape or tuple(valid.shape) != pred_shape[:2]:
        raise ValueError(
            f"expected target (B, T, H, W) = {pred_shape} and valid (B, T) = {pred_shape[:2]}; got "
            f"{tuple(target.shape)} and {tuple(valid.shape)}"
        )


def _f_measure(prec: Tensor, rec: Tensor) -> Tensor:
    """Eq. 3 with 0/0 := 0."""
    f = (1 + BETA2) * prec * rec / (BETA2 * prec + rec)
    return torch.nan_to_num(f, nan=0.0)


def _threshold_counts(prob: Tensor, gt: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Per frame and threshold: ``|{p >= t}|`` and ``|{p >= t} ∩ G|``, exactly, by a histogram.

    A pixel is above threshold ``k`` iff ``k < searchsorted(t, p, right=True)``; counting pixels per
    searchsorted index and summing from the top gives all 255 counts in one pass.

    Args:
        prob: ``(K, H, W)`` probabilities, in the dtype the comparisons must happen in.
        gt: ``(K, H, W)`` bool ground truth.
        thresholds: ``(n,)`` increasing, same dtype as ``prob``.

    Returns:
        ``n_pred (K, n)`` and ``n_tp (K, n)``, int64.
    """
    K = prob.shape[0]
    n = thresholds.numel()
    level = torch.searchsorted(thresholds, prob.reshape(K, -1).contiguous(), right=True)  # in [0, n]
    index = level + (n + 1) * torch.arange(K, device=prob.device)[:, None]
    hist = torch.bincount(index.reshape(-1), minlength=K * (n + 1)).reshape(K, n + 1)
    hist_tp = torch.bincount(index[gt.reshape(K, -1)], minlength=K * (n + 1)).reshape(K, n + 1)
    # count above threshold k = Σ_{level > k} hist[level]
    n_pred = hist.flip(1).cumsum(1).flip(1)[:, 1:]
    n_tp = hist_tp.flip(1).cumsum(1).flip(1)[:, 1:]
    return n_pred, n_tp


class BinarySegmentationMetrics(Metric):
    """M_J (Jaccard) and M_F (F-measure, β² = 0.3) for single/multi-source AV segmentation (S4, MS3).

    ``compute()`` returns ``mj``, ``mf``, ``mf_threshold`` (default protocol: the dataset-level threshold
    that maximises the mean F; NaN under compat), ``n_frames`` (frames evaluated for M_J) and ``n_frames_f``
    (frames with a non-empty ground truth, evaluated for M_F).

    Args:
        protocol: ``"default"`` (dataset level, batch-size independent) or ``"avsbench"`` (the published
            code: float32, per-batch maxima averaged over batches).
        avsbench_batch_size: Under ``"avsbench"``, how many clips form one evaluation batch, in evaluation
            order (the published test scripts' ``--test_batch_size``; each S4/MS3 clip has 5 frames).
            Ignored by the default protocol.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    iou_sum: Tensor
    n_frames: Tensor
    f_curve_sum: Tensor
    n_frames_f: Tensor
    clip_iou_sum: list[Tensor]
    clip_n: list[Tensor]
    clip_f_sum: list[Tensor]
    clip_nf: list[Tensor]

    def __init__(self, protocol: SegmentationProtocol = "default", avsbench_batch_size: int = 1) -> None:
        super().__init__()
        if protocol not in ("default", "avsbench"):
            raise ValueError(f"protocol must be 'default' or 'avsbench', got {protocol!r}")
        if avsbench_batch_size < 1:
            raise ValueError(f"avsbench_batch_size must be >= 1, got {avsbench_batch_size}")
        self.protocol = protocol
        self.avsbench_batch_size = avsbench_batch_size
        if protocol == "default":
            self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("n_frames", default=torch.tensor(0), dist_reduce_fx="sum")
            zeros = torch.zeros(N_THRESHOLDS, dtype=torch.float64)
            self.add_state("f_curve_sum", default=zeros, dist_reduce_fx="sum")
            self.add_state("n_frames_f", default=torch.tensor(0), dist_reduce_fx="sum")
        else:  # per clip, grouped into evaluation batches in compute()
            for name in ("clip_iou_sum", "clip_n", "clip_f_sum", "clip_nf"):
                self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, logits: Tensor, target: Tensor, valid: Tensor) -> None:
        """Accumulate a batch of clips.

        Args:
            logits: ``(B, T, H, W)`` mask logits.
            target: ``(B, T, H, W)`` ground truth in {0, 1}.
            valid: ``(B, T)`` bool, frames that have a ground-truth mask (only these are evaluated).
        """
        _check_inputs(tuple(logits.shape), target, valid)
        valid = valid.bool()
        x, gt = logits[valid], target[valid] > 0  # (K, H, W)
        clip_of_frame = torch.arange(logits.shape[0], device=logits.device)[:, None].expand_as(valid)[valid]
        hw = x.shape[-1] * x.shape[-2]
        nonempty = gt.flatten(1).any(1)
        if self.protocol == "default":
            pred = x > 0  # sigmoid(x) > 0.5 (eq. 1)
            inter = (pred & gt).flatten(1).sum(1).double()
            union = (pred | gt).flatten(1).sum(1).double()
            background = (~pred).flatten(1).sum(1).double()
            iou = torch.where(nonempty, inter / union.clamp_min(1), background / hw)
            self.iou_sum += iou.double().sum()
            self.n_frames += x.shape[0]
            if nonempty.any():
                thresholds = torch.linspace(0, 1 - 1e-10, N_THRESHOLDS, dtype=torch.float64, device=x.device)
                prob = torch.sigmoid(x[nonempty].double())
                n_pred, n_tp = _threshold_counts(prob, gt[nonempty], thresholds)
                n_gt = gt[nonempty].flatten(1).sum(1, keepdim=True).double()
                tp = n_tp.double()
                f = _f_measure(tp / n_pred.clamp_min(1), tp / n_gt)  # eq. 2-3 (n_tp = 0 where n_pred = 0)
                self.f_curve_sum += f.sum(0)
                self.n_frames_f += int(nonempty.sum())
            return
        # Compat: the published code's float32 arithmetic, frame by frame.
        prob = torch.sigmoid(x.float())
        pred = (prob > 0.5).float()
        g = gt.float()
        inter = (pred * g).flatten(1).sum(1)
        union = torch.maximum(pred, g).flatten(1).sum(1)
        inter = torch.where(nonempty, inter, ((1 - g) * (1 - pred)).flatten(1).sum(1))
        union = torch.where(nonempty, union, torch.full_like(union, float(hw)))
        iou = inter / (union + 1e-7)
        thresholds = torch.linspace(0, 1 - 1e-10, N_THRESHOLDS, dtype=torch.float32).to(x.device)  # last = 1.0
        n_pred, n_tp = _threshold_counts(prob, gt, thresholds)
        n_gt = g.flatten(1).sum(1, keepdim=True)
        tp = n_tp.float()
        f = _f_measure(tp / (n_pred.float() + 1e-20), tp / (n_gt + 1e-20))
        f = torch.where(nonempty[:, None], f, torch.zeros_like(f))
        B = logits.shape[0]
        zeros = torch.zeros(B, dtype=torch.float64, device=x.device)
        self.clip_iou_sum.append(zeros.index_add(0, clip_of_frame, iou.double()))
        self.clip_n.append(zeros.index_add(0, clip_of_frame, torch.ones_like(iou, dtype=torch.float64)))
        curves = torch.zeros(B, N_THRESHOLDS, dtype=torch.float64, device=x.device)
        self.clip_f_sum.append(curves.index_add(0, clip_of_frame, f.double()))
        self.clip_nf.append(zeros.index_add(0, clip_of_frame, nonempty.double()))

    def compute(self) -> dict[str, Tensor]:
        """``mj``, ``mf``, ``mf_threshold``, ``n_frames``, ``n_frames_f``."""
        if self.protocol == "default":
            n, nf = self.n_frames, self.n_frames_f
            curve = self.f_curve_sum / nf
            best = int(curve.argmax()) if nf > 0 else 0
            thresholds = torch.linspace(0, 1 - 1e-10, N_THRESHOLDS, dtype=torch.float64, device=curve.device)
            return {
                "mj": self.iou_sum / n,
                "mf": curve.max() if nf > 0 else curve.new_tensor(float("nan")),
                "mf_threshold": thresholds[best] if nf > 0 else curve.new_tensor(float("nan")),
                "n_frames": n.clone(),
                "n_frames_f": nf.clone(),
            }
        iou_sum, n, f_sum, nf = (
            dim_zero_cat(getattr(self, k)) for k in ("clip_iou_sum", "clip_n", "clip_f_sum", "clip_nf")
        )
        group = torch.arange(len(n), device=n.device) // self.avsbench_batch_size
        n_groups = int(group.max()) + 1 if len(n) else 0
        g_iou = torch.zeros(n_groups, dtype=torch.float64, device=n.device).index_add(0, group, iou_sum)
        g_n = torch.zeros_like(g_iou).index_add(0, group, n)
        g_f = torch.zeros(n_groups, N_THRESHOLDS, dtype=torch.float64, device=n.device).index_add(0, group, f_sum)
        g_nf = torch.zeros_like(g_iou).index_add(0, group, nf)
        used = g_n > 0  # a batch whose clips had no valid frame is not a batch the published loop would see
        batch_mj = g_iou[used] / g_n[used]
        batch_mf = torch.where(g_nf > 0, (g_f / g_nf.clamp_min(1)[:, None]).amax(1), 0.0)[used]
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
        return {
            "mj": batch_mj.mean() if len(batch_mj) else nan,
            "mf": batch_mf.mean() if len(batch_mf) else nan,
            "mf_threshold": nan,
            "n_frames": n.sum().long(),
            "n_frames_f": nf.sum().long(),
        }


class SemanticSegmentationMetrics(Metric):
    """mIoU and mean F (β² = 0.3) for semantic AV segmentation (AVSS), with and without background.

    ``compute()`` returns ``miou``, ``mf``, ``miou_no_bg``, ``mf_no_bg``, ``n_frames`` and ``n_classes_seen``;
    :meth:`per_class` gives each class's IoU, F and frame count.

    Args:
        num_classes: ``C``, including the background class 0 (AVSS: 71).
        protocol: ``"default"`` (classes never seen in prediction or ground truth are left out of the means)
            or ``"avsbench"`` (they count as 0 and the means run over all ``C``, as in the published code).
        no_background_drops_last_class: Reproduce the anchors' bug: the "without background" numbers drop the
            last class ``C - 1`` instead of the background class 0.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    iou_sum: Tensor
    f_sum: Tensor
    count: Tensor
    n_frames: Tensor

    def __init__(
        self,
        num_classes: int = 71,
        protocol: SegmentationProtocol = "default",
        no_background_drops_last_class: bool = False,
    ) -> None:
        super().__init__()
        if protocol not in ("default", "avsbench"):
            raise ValueError(f"protocol must be 'default' or 'avsbench', got {protocol!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + one class), got {num_classes}")
        self.num_classes = num_classes
        self.protocol = protocol
        self.no_background_drops_last_class = no_background_drops_last_class
        zeros = torch.zeros(num_classes, dtype=torch.float64)
        self.add_state("iou_sum", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("f_sum", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_frames", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor, valid: Tensor) -> None:
        """Accumulate a batch of clips.

        Args:
            logits: ``(B, T, C, H, W)`` class logits (or probabilities: only the argmax is used).
            target: ``(B, T, H, W)`` int class index per pixel, 0 = background.
            valid: ``(B, T)`` bool, frames that have a ground-truth mask (only these are evaluated).
        """
        B, T, C, H, W = logits.shape
        if self.num_classes != C:
            raise ValueError(f"logits have {C} classes, the metric was built for {self.num_classes}")
        _check_inputs((B, T, H, W), target, valid)
        valid = valid.bool()
        pred = logits[valid].argmax(1)  # (K, H, W)
        gt = target[valid].long()
        if gt.numel() and (gt.min() < 0 or gt.max() >= C):
            raise ValueError(f"target class indices must lie in [0, {C - 1}], got [{gt.min()}, {gt.max()}]")
        K = pred.shape[0]
        offset = C * torch.arange(K, device=pred.device)[:, None]
        pred_f, gt_f = pred.reshape(K, -1) + offset, gt.reshape(K, -1) + offset

        def counts(index: Tensor) -> Tensor:
            return torch.bincount(index.reshape(-1), minlength=K * C).reshape(K, C)

        area_pred, area_gt = counts(pred_f).double(), counts(gt_f).double()
        area_inter = counts(gt_f[pred_f == gt_f]).double()
        area_union = area_pred + area_gt - area_inter
        seen = area_union > 0
        iou = area_inter / area_union.clamp_min(1)  # eq. 4
        f = _f_measure(area_inter / area_pred, area_inter / area_gt)
        self.iou_sum += iou.sum(0)
        self.f_sum += f.sum(0)
        self.count += seen.sum(0)
        self.n_frames += K

    def per_class(self) -> dict[str, Tensor]:
        """Per class: ``iou`` and ``f`` (NaN for classes never seen) and ``count`` (frames where seen)."""
        with self.sync_context(should_unsync=True):
            count = self.count.clone()
            iou = self.iou_sum / count
            f = self.f_sum / count
        return {"iou": iou, "f": f, "count": count}

    def compute(self) -> dict[str, Tensor]:
        """``miou``, ``mf``, ``miou_no_bg``, ``mf_no_bg``, ``n_frames``, ``n_classes_seen``."""
        seen = self.count > 0
        iou = self.iou_sum / self.count.clamp_min(1)
        f = self.f_sum / self.count.clamp_min(1)
        keep_no_bg = torch.ones_like(seen)
        keep_no_bg[-1 if self.no_background_drops_last_class else 0] = False
        if self.protocol == "default":
            with_bg, no_bg = seen, seen & keep_no_bg
        else:  # unseen classes count as 0 in the mean over all classes
            with_bg, no_bg = torch.ones_like(seen), keep_no_bg
        return {
            "miou": iou[with_bg].mean(),
            "mf": f[with_bg].mean(),
            "miou_no_bg": iou[no_bg].mean(),
            "mf_no_bg": f[no_bg].mean(),
            "n_frames": self.n_frames.clone(),
            "n_classes_seen": seen.sum(),
        }
