"""What every segmentation network looks like to :class:`~avtoolkit.tasks.segmentation.AVSegmentationTask`."""

from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.nn import Parameter

from avtoolkit.data.batch import Batch


@dataclass
class MaskPrediction:
    """One mask-classification prediction (Mask2Former style) for ``N = B·T`` frames and ``Q`` queries.

    Attributes:
        class_logits: ``(N, Q, K + 1)`` logits over the ``K`` classes plus "no object" (the last).
        mask_logits: ``(N, Q, h, w)`` mask logits of each query (stride 4 of the input).
    """

    class_logits: Tensor
    mask_logits: Tensor


@dataclass
class SegmentationOutput:
    """A segmentation network's output.

    Attributes:
        logits: ``(B, T, K, h, w)`` per-pixel scores the metrics and predictions read: with ``K = 1`` the
            foreground logit (S4/MS3); with ``K > 1`` class scores whose argmax is the label (AVSS, 0 =
            background). ``h × w`` may be smaller than the input; the task resizes bilinearly.
        predictions: Mask-classification predictions, the final one last and the deep-supervision ones before
            it (empty for per-pixel networks). The task's set criterion consumes them.
        losses: Auxiliary training losses, already weighted (e.g. SCMC's load balance), added by the task.
        stats: Detached quantities to log (e.g. expert usage, mean k), by name.
    """

    logits: Tensor
    predictions: list[MaskPrediction] = field(default_factory=list)
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


class SegmentationModel(nn.Module):
    """Base class: ``forward(batch) -> SegmentationOutput``.

    ``batch`` holds ``frames`` ``(B, T, 3, H, W)`` float in [0, 1] and ``audio`` ``(B, T, 1, 96, 64)`` log-mel
    (see ``avtoolkit.data.batch``).

    Attributes:
        num_classes: ``K``: 1 for binary foreground segmentation (S4, MS3), 71 for AVSS (0 = background).
    """

    num_classes: int

    def forward(self, batch: Batch) -> SegmentationOutput:
        """Per-pixel scores (and mask predictions) for every frame of every clip."""
        raise NotImplementedError

    def backbone_parameters(self) -> list[Parameter]:
        """Parameters of the image backbone (trained at the task's ``backbone_lr_multiplier``); none by default."""
        return []
