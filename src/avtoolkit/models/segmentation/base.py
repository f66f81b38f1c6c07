"""What every segmentation network looks like to :class:`~avtoolkit.tasks.segmentation.AVSegmentationTask`."""

from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.nn import Parameter

from avtoolkit.data.batch import Batch
from avtoolkit.fusion.sfm import MSAU, demodulate
from avtoolkit.models.encoders.multiscale import MultiScaleBackbone


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


@dataclass
class FramePyramid:
    """What a multi-scale backbone makes of ``N`` frames (see :class:`PyramidSegmentationModel`).

    Attributes:
        frames: ``(N, 3, H, W)`` the frames, in [0, 1].
        features: Maps at strides 4, 8, 16, 32 in the regular geometry, each at its own resolution: what the body
            of a network reads (its multi-scale fusion needs the scales aligned).
        modulated: The same maps as the backbone computed them, after the ARS grids applied before each.
        grids: For each map, the ARS grids applied before it, in the order applied (empty without ARS).
    """

    frames: Tensor
    features: list[Tensor]
    modulated: list[Tensor]
    grids: list[list[Tensor]]


class PyramidSegmentationModel(SegmentationModel):
    """A segmentation network on a multi-scale timm backbone, with the optional SFM plug-ins.

    With ``ars_stages``, adaptive resampling (ARS) zooms into salient regions before those stage transitions. The
    body of the network reads every scale mapped back to the regular geometry at its own resolution (the scales must
    line up for multi-scale fusion). With ``msau``, the final prediction is upsampled to the frames' resolution by
    multi-scale adaptive upsampling, whose reassembly kernels are predicted from the frames and from every backbone
    scale demodulated *at the output resolution*: the path on which the detail the zoom kept reaches the output.

    Args:
        num_classes: K: 1 (binary foreground) or the number of classes (0 = background).
        backbone: timm model name (features-only).
        backbone_weights: Local weight file of the backbone (random initialisation when ``None``).
        ars_stages: Backbone transitions (by output stride: 8, 16, 32) preceded by ARS.
        msau: Upsample the final prediction with MSAU.
    """

    def __init__(
        self, num_classes: int, backbone: str, backbone_weights: str | None, ars_stages: tuple[int, ...], msau: bool
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (1: binary foreground), got {num_classes}")
        self.num_classes = num_classes
        self.backbone = MultiScaleBackbone(backbone, backbone_weights, (4, 8, 16, 32), ars_stages)
        self.msau = MSAU(tuple(self.backbone.channels)) if msau else None

    def backbone_parameters(self) -> list[Parameter]:
        """The pre-trained image backbone's parameters (not the ARS modules inserted into it: they are new)."""
        new = {id(p) for stage in self.backbone.ars_modules() for p in stage.ars.parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in new]

    def frame_pyramid(self, frames: Tensor) -> FramePyramid:
        """The backbone's multi-scale features of ``(N, 3, H, W)`` frames, aligned and as computed."""
        modulated, grids = self.backbone(frames)
        strides = self.backbone.strides
        applied = [
            [grid for ars_stride, grid in zip(self.backbone.ars_stages, grids, strict=True) if ars_stride <= stride]
            for stride in strides
        ]
        features = [
            demodulate(feature, before, (feature.shape[-2], feature.shape[-1])) if before else feature
            for feature, before in zip(modulated, applied, strict=True)
        ]
        return FramePyramid(frames, features, modulated, applied)

    def upsample(self, x: Tensor, pyramid: FramePyramid) -> Tensor:
        """``(N, K, h, w)`` predictions upsampled to the frames by MSAU; unchanged without MSAU."""
        if self.msau is None:
            return x
        return self.msau(x, pyramid.frames, pyramid.modulated, pyramid.grids)
