"""Frame encoders built on timm backbones (``features_only``), with local weight files and random init."""

from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import Tensor, nn


def create_backbone(
    name: str, weights: str | Path | None, output_stride: int, out_indices: tuple[int, ...]
) -> nn.Module:
    """A timm ``features_only`` backbone, randomly initialised or loaded from a local weight file.

    ``output_stride`` 32 is every backbone's native stride and is not passed on, so backbones without dilation
    support (PVT-v2, Swin) build too.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the weights do not match the architecture (the message names both).
    """
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"backbone weights not found: {weights}")
    dilation: dict[str, Any] = {} if output_stride == 32 else {"output_stride": output_stride}
    try:
        return timm.create_model(
            name,
            pretrained=weights is not None,
            pretrained_cfg_overlay={"file": str(weights)} if weights is not None else None,
            features_only=True,
            out_indices=out_indices,
            **dilation,
        )
    except RuntimeError as err:
        raise ValueError(f"weights {weights} do not fit the timm architecture {name!r}: {err}") from err


class PooledFrameEncoder(nn.Module):
    """Sound-of-Pixels visual branch: dilated CNN → 3×3 conv → max-pool over frames and space → activation.

    Input frames are floats in [0, 1] and normalised here with the backbone's mean/std.

    Args:
        backbone: timm model name (``resnet18`` in Sound of Pixels; ``test_resnet`` for tests).
        out_channels: K, the size of the visual vector (matches the audio network's output channels).
        output_stride: Backbone output stride (16: the last stage dilated, as in the paper).
        weights: Local weight file for the backbone (random initialisation when ``None``).
        activation: Applied to the pooled vector (``sigmoid`` in Sound of Pixels).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        backbone: str = "resnet18",
        out_channels: int = 32,
        output_stride: int = 16,
        weights: str | None = None,
        activation: Literal["sigmoid", "none"] = "sigmoid",
    ) -> None:
        super().__init__()
        network: Any = create_backbone(backbone, weights, output_stride, out_indices=(-1,))  # timm FeatureListNet
        self.backbone = network
        self.project = nn.Conv2d(network.feature_info.channels()[-1], out_channels, kernel_size=3, padding=1)
        self.activation = nn.Sigmoid() if activation == "sigmoid" else nn.Identity()
        config = network.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, N, Tv, 3, H, W)`` frames → ``(B, N, K)`` one vector per source."""
        B, N, Tv = frames.shape[:3]
        x = (frames.flatten(0, 2) - self.mean) / self.std
        features = self.project(self.backbone(x)[-1])  # (B·N·Tv, K, h, w)
        pooled = features.amax(dim=(-2, -1)).view(B, N, Tv, -1).amax(dim=2)
        return self.activation(pooled)
