"""Sound of Pixels (Zhao et al., ECCV 2018): audio U-Net + dilated ResNet-18 frames + late fusion."""

from typing import Literal

from torch import Tensor

from avtoolkit.data.batch import FRAMES, Batch
from avtoolkit.fusion.late import LateFusion
from avtoolkit.models.encoders.visual import PooledFrameEncoder
from avtoolkit.models.separation.base import SeparationModel, SeparationOutput
from avtoolkit.models.separation.unet import UNet


class SoundOfPixels(SeparationModel):
    """The Sound-of-Pixels baseline.

    The U-Net turns the mixture spectrogram into K feature maps S_k; each source's frames give a K-vector
    v (max-pooled over frames and space, sigmoid); its mask logit is Σ_k α_k v_k S_k + b (late fusion).

    Args:
        channels: K, audio feature maps = visual vector size (32 in the paper).
        unet_depth: U-Net levels (7 for 256×256 spectrograms).
        unet_base_channels: Channels of the first U-Net level (64 in the paper).
        unet_max_channels: Channel cap of the U-Net (512 in the paper).
        backbone: timm name of the frame backbone (``resnet18``; ``test_resnet`` for tests).
        backbone_weights: Local weight file for the backbone; random initialisation when ``None``.
        output_stride: Frame backbone output stride (16 = dilated last stage).
        visual_activation: Activation of the visual vector.
    """

    def __init__(
        self,
        channels: int = 32,
        unet_depth: int = 7,
        unet_base_channels: int = 64,
        unet_max_channels: int = 512,
        backbone: str = "resnet18",
        backbone_weights: str | None = None,
        output_stride: int = 16,
        visual_activation: Literal["sigmoid", "none"] = "sigmoid",
    ) -> None:
        super().__init__()
        self.unet = UNet(unet_depth, unet_base_channels, unet_max_channels, out_channels=channels)
        self.visual = PooledFrameEncoder(backbone, channels, output_stride, backbone_weights, visual_activation)
        self.fusion = LateFusion(channels)

    def forward(self, spectrogram: Tensor, batch: Batch) -> SeparationOutput:
        """``(B, 1, F, T)`` log-magnitude and ``batch["frames"]`` ``(B, N, Tv, 3, H, W)`` → ``(B, N, F, T)``."""
        audio_features = self.unet(spectrogram)
        visual = self.visual(batch[FRAMES])
        return SeparationOutput(mask_logits=self.fusion(audio_features, visual))
