"""A light TPAVI-style network (the AVSBench baseline's design) for quick runs.

Backbone features at strides 4, 8, 16, 32 are projected to C channels; at each scale a temporal pixel-wise
audio-visual interaction (TPAVI) block lets every position of every frame read the clip's visual features,
weighted by how well they match the audio of each frame (a non-local block whose keys are the audio, tiled
over space):

    a_t      = Linear(VGGish embedding of frame t)                          (B, T, C), tiled to (B, C, T, H, W)
    f_ij     = θ(V_i) · φ(A_j) / (T·H·W)                                    dot-product affinity, i, j over T×H×W
    Z_i      = V_i + W_z(Σ_j f_ij g(V_j))                                   residual; W_z (1×1×1 conv + BN) zero-init

then a top-down FPN decoder predicts per-pixel logits at stride 4 (K channels). Trained per pixel
(:class:`~avtoolkit.losses.segmentation.PixelCriterion`).
"""

import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.data.batch import AUDIO, FRAMES, Batch
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.models.segmentation.base import PyramidSegmentationModel, SegmentationOutput


class TPAVI(nn.Module):
    """Temporal pixel-wise audio-visual interaction (non-local block with audio keys).

    Args:
        dim: Channels C of the visual and audio features.
        inner_dim: Channels of θ, φ, g (default C / 2).
    """

    def __init__(self, dim: int, inner_dim: int | None = None) -> None:
        super().__init__()
        inner_dim = dim // 2 if inner_dim is None else inner_dim
        self.theta = nn.Conv3d(dim, inner_dim, 1)
        self.phi = nn.Conv3d(dim, inner_dim, 1)
        self.g = nn.Conv3d(dim, inner_dim, 1)
        norm = nn.BatchNorm3d(dim)
        nn.init.zeros_(norm.weight)  # the block starts as the identity
        self.out = nn.Sequential(nn.Conv3d(inner_dim, dim, 1), norm)

    def forward(self, visual: Tensor, audio: Tensor) -> Tensor:
        """``visual`` ``(B, T, C, H, W)``, ``audio`` ``(B, T, C)`` → ``(B, T, C, H, W)``."""
        B, T, C, H, W = visual.shape
        v = visual.transpose(1, 2)  # (B, C, T, H, W)
        a = audio.transpose(1, 2)[..., None, None].expand(B, C, T, H, W)
        theta = self.theta(v).flatten(2).transpose(1, 2)  # (B, THW, C')
        phi = self.phi(a).flatten(2)  # (B, C', THW)
        g = self.g(v).flatten(2).transpose(1, 2)  # (B, THW, C')
        affinity = theta @ phi / phi.shape[-1]  # f_ij, dot-product normalised by T·H·W
        y = (affinity @ g).transpose(1, 2).reshape(B, -1, T, H, W)
        return visual + self.out(y).transpose(1, 2)


class TPAVINet(PyramidSegmentationModel):
    """Backbone → per-scale projection + TPAVI → FPN decoder → per-pixel logits at stride 4.

    Args:
        num_classes: K: 1 (binary foreground) or the number of classes (0 = background).
        backbone: timm model name (features-only), e.g. ``resnet18``, ``resnet50``, ``pvt_v2_b5``.
        backbone_weights: Local weight file of the backbone (random initialisation when ``None``).
        audio_weights: Local VGGish state dict (random initialisation when ``None``).
        audio_width: VGGish channel multiplier (1 = the official network).
        freeze_audio: Keep VGGish fixed.
        dim: Decoder width C.
        tpavi_stages: Which scales (indices 0..3 for strides 4..32) get a TPAVI block.
        ars_stages: Backbone transitions (by output stride) preceded by adaptive resampling (SFM).
        msau: Upsample the logits to the frame size with multi-scale adaptive upsampling (SFM).
    """

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        audio_weights: str | None = None,
        audio_width: float = 1.0,
        freeze_audio: bool = False,
        dim: int = 128,
        tpavi_stages: tuple[int, ...] = (0, 1, 2, 3),
        ars_stages: tuple[int, ...] = (),
        msau: bool = False,
    ) -> None:
        if any(stage not in range(4) for stage in tpavi_stages):
            raise ValueError(f"tpavi_stages must be indices in 0..3 (strides 4, 8, 16, 32), got {tpavi_stages}")
        super().__init__(num_classes, backbone, backbone_weights, ars_stages, msau)
        self.vggish = VGGish(audio_weights, audio_width, freeze_audio)
        self.audio_project = nn.Linear(128, dim)
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 3, padding=1) for c in self.backbone.channels)
        self.tpavi = nn.ModuleDict({str(i): TPAVI(dim) for i in tpavi_stages})
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU()) for _ in range(3)
        )
        self.head = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1),
            nn.BatchNorm2d(dim // 2),
            nn.ReLU(),
            nn.Conv2d(dim // 2, num_classes, 1),
        )

    def forward(self, batch: Batch) -> SegmentationOutput:
        """Per-pixel logits ``(B, T, K, H/4, W/4)`` (``H × W`` with MSAU)."""
        frames = batch[FRAMES]
        B, T = frames.shape[:2]
        pyramid = self.frame_pyramid(frames.flatten(0, 1))
        _, embedding = self.vggish(batch[AUDIO].flatten(0, 1))
        audio = self.audio_project(embedding).unflatten(0, (B, T))  # (B, T, C)
        levels = []
        for i, (lateral, feature) in enumerate(zip(self.lateral, pyramid.features, strict=True)):
            x = lateral(feature)
            if str(i) in self.tpavi:
                x = self.tpavi[str(i)](x.unflatten(0, (B, T)), audio).flatten(0, 1)
            levels.append(x)
        x = levels[-1]  # top-down FPN: stride 32 → 4
        for level, smooth in zip(reversed(levels[:-1]), self.smooth, strict=True):
            x = smooth(level + F.interpolate(x, size=level.shape[-2:], mode="bilinear", align_corners=False))
        logits = self.upsample(self.head(x), pyramid)
        return SegmentationOutput(logits.unflatten(0, (B, T)))
