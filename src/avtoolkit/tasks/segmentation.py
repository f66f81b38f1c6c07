"""Audio-visual segmentation: segment the sounding objects of video frames (AVSBench S4 / MS3 / AVSS)."""

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from avtoolkit.data.batch import FRAMES, MASK_VALID, MASKS, Batch
from avtoolkit.losses.segmentation import MaskClassificationCriterion, SegmentationCriterion
from avtoolkit.metrics.segmentation import BinarySegmentationMetrics, SemanticSegmentationMetrics
from avtoolkit.models.segmentation.base import SegmentationModel, SegmentationOutput
from avtoolkit.tasks.base import BaseAVTask, no_weight_decay_parameters


class AVSegmentationTask(BaseAVTask):
    """Segment the objects that sound, frame by frame, from the frames and their audio.

    The network gives per-pixel scores (and, for mask-classification networks, the per-query predictions the
    set criterion trains); the task resizes the scores to the ground truth and evaluates the frames that have
    one: M_J and M_F for binary maps (``model.num_classes == 1``: S4, MS3), mIoU and mean F for class maps
    (AVSS). Only frames with a ground-truth mask (``mask_valid``) are trained on and evaluated.

    Args:
        model: The segmentation network.
        criterion: The training objective (default: Mask2Former's set loss,
            :class:`~avtoolkit.losses.segmentation.MaskClassificationCriterion`).
        protocol: Metric protocol, "default" (dataset level) or "avsbench" (the published AVSBench code's:
            per-batch means and maxima, float32).
        avsbench_batch_size: Clips per evaluation batch under the ``"avsbench"`` protocol of binary maps (the
            published test scripts' ``--test_batch_size``); the default protocol does not depend on it.
        backbone_lr_multiplier: Learning-rate factor of the network's pre-trained image backbone (the FAVS recipe:
            0.1); layers inserted into it (ARS) train at the full rate.
        optimizer: Optimiser factory.
        lr_scheduler: Scheduler factory, or ``None``.
        lr_scheduler_interval: Step the scheduler per optimiser step or per epoch.
    """

    def __init__(
        self,
        model: SegmentationModel,
        criterion: SegmentationCriterion | None = None,
        protocol: Literal["default", "avsbench"] = "default",
        avsbench_batch_size: int = 1,
        backbone_lr_multiplier: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval)
        if backbone_lr_multiplier < 0:
            raise ValueError(f"backbone_lr_multiplier must be >= 0, got {backbone_lr_multiplier}")
        self.model = model
        self.criterion = MaskClassificationCriterion() if criterion is None else criterion
        self.backbone_lr_multiplier = backbone_lr_multiplier
        self.num_classes = model.num_classes
        self.val_metrics = self._metrics(protocol, avsbench_batch_size)
        self.test_metrics = self._metrics(protocol, avsbench_batch_size)

    def _metrics(
        self, protocol: Literal["default", "avsbench"], avsbench_batch_size: int
    ) -> BinarySegmentationMetrics | SemanticSegmentationMetrics:
        if self.num_classes == 1:
            return BinarySegmentationMetrics(protocol, avsbench_batch_size)
        return SemanticSegmentationMetrics(self.num_classes, protocol)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's groups, as in Mask2Former.

        The image backbone's parameters train at ``backbone_lr_multiplier`` × the rate, the rest at the rate; in
        both, norm layers, embeddings and the scalars that make a module the identity at initialisation (a module's
        ``no_weight_decay()``) get no weight decay, which would pull them away from their neutral values.
        """
        backbone = {id(p) for p in self.model.backbone_parameters()}
        no_decay = no_weight_decay_parameters(self)
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = []
        for in_backbone in (False, True):
            for decay in (True, False):
                params = [
                    p for p in trainable if (id(p) in backbone) == in_backbone and (id(p) not in no_decay) == decay
                ]
                group: dict[str, Any] = {"params": params}
                if in_backbone:
                    group["lr_multiplier"] = self.backbone_lr_multiplier
                if not decay:
                    group["weight_decay"] = 0.0
                if params:
                    groups.append(group)
        return groups

    # -- the shared forward pass -----------------------------------------------------------------------------

    def scores(self, output: SegmentationOutput, size: tuple[int, ...]) -> Tensor:
        """The network's per-pixel scores resized (bilinear) to ``size`` ``(H, W)``: ``(B, T, K, H, W)``."""
        logits = output.logits
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        resized = F.interpolate(logits.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
        return resized.unflatten(0, logits.shape[:2])

    def forward(self, batch: Batch) -> SegmentationOutput:
        """The network's output for a batch (frames + audio)."""
        return self.model(batch)

    def _loss(self, output: SegmentationOutput, batch: Batch, stage: str) -> Tensor:
        losses = self.criterion(output, batch[MASKS], batch[MASK_VALID])
        loss = losses.pop("loss")
        options: dict[str, Any] = {
            "batch_size": batch[FRAMES].shape[0],
            "sync_dist": stage != "train",
            "add_dataloader_idx": False,  # a test set's name is its prefix
        }
        for name, value in {**losses, **output.losses}.items():
            self.log(f"{stage}/{name}", value, **options)
        loss = loss + sum(output.losses.values(), torch.zeros_like(loss))
        for name, value in output.stats.items():
            self.log(f"{stage}/{name}", value.float(), **options)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", **options)
        return loss

    # -- Lightning hooks -------------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The criterion on the frames with ground truth, plus the network's auxiliary losses."""
        return self._loss(self(batch), batch, "train")

    def _evaluate(self, batch: Batch, stage: str) -> Tensor:
        output = self(batch)
        self._loss(output, batch, stage)
        scores = self.scores(output, tuple(batch[MASKS].shape[-2:]))
        metrics = self.evaluation_metrics(stage)
        metrics.update(scores[:, :, 0] if self.num_classes == 1 else scores, batch[MASKS], batch[MASK_VALID])
        return scores

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Loss and segmentation metrics on the held-out clips; returns the per-pixel scores for media callbacks."""
        return {"scores": self._evaluate(batch, "val")}

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Loss and segmentation metrics of the batch's test set; returns the per-pixel scores for report callbacks."""
        return {"scores": self._evaluate(batch, self.test_sets()[dataloader_idx])}

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Predicted masks ``(B, T, H, W)`` at the frames' size: 0/1 (binary) or class indices."""
        scores = self.scores(self(batch), tuple(batch[FRAMES].shape[-2:]))
        return (scores[:, :, 0] > 0).long() if self.num_classes == 1 else scores.argmax(2)
