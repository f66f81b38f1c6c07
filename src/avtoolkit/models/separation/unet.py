"""The audio U-Net of the Sound-of-Pixels lineage (Sound of Pixels' 7-level U-Net).

Down level i: 4×4 conv, stride 2 (the outermost has no activation/normalisation, middle levels are
LeakyReLU(0.2) → conv → BN, the innermost LeakyReLU → conv). Up levels: ReLU → bilinear ×2 → 3×3 conv → BN,
concatenated with the skip from the mirrored down level. The outermost up level is a plain 3×3 conv to K output
channels, with no BN or activation, so late-fusion features can be negative (with BN + ReLU there a late-fusion
model collapses to a constant mask).
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn


class UNet(nn.Module):
    """Configurable U-Net on a one-channel spectrogram.

    Args:
        depth: Number of down (and up) levels; the input's height and width must be divisible by ``2**depth``.
            7 in the paper recipe (256×256 → 2×2 bottleneck).
        base_channels: Channels of the first level, doubled per level (64 in the recipe).
        max_channels: Cap on the channels of a level (512 in the recipe).
        out_channels: K, the channels of the output feature maps (32 in the recipe).
        bottleneck_extra_channels: Channels a middle fusion concatenates to the bottleneck before decoding
            (the innermost up level accepts ``C + extra``).
    """

    def __init__(
        self,
        depth: int = 7,
        base_channels: int = 64,
        max_channels: int = 512,
        out_channels: int = 32,
        bottleneck_extra_channels: int = 0,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"UNet depth must be at least 2, got {depth}")
        self.depth = depth
        widths = [min(base_channels * 2**i, max_channels) for i in range(depth)]
        self.widths = widths
        self.input_norm = nn.BatchNorm2d(1)
        self.down = nn.ModuleList()
        for i in range(depth):
            conv = nn.Conv2d(1 if i == 0 else widths[i - 1], widths[i], kernel_size=4, stride=2, padding=1)
            if i == 0:
                self.down.append(conv)
            elif i == depth - 1:
                self.down.append(nn.Sequential(nn.LeakyReLU(0.2), conv))
            else:
                self.down.append(nn.Sequential(nn.LeakyReLU(0.2), conv, nn.BatchNorm2d(widths[i])))
        self.up = nn.ModuleList()
        for i in range(depth):
            # Up level i takes the output of the level below (concatenated with its skip, except innermost).
            in_channels = widths[i] + bottleneck_extra_channels if i == depth - 1 else 2 * widths[i]
            out = out_channels if i == 0 else widths[i - 1]
            layers: list[nn.Module] = [
                nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out, kernel_size=3, padding=1),
            ]
            if i > 0:
                layers.append(nn.BatchNorm2d(out))
            self.up.append(nn.Sequential(*layers))

    @property
    def bottleneck_channels(self) -> int:
        """Channels of the innermost encoder output."""
        return self.widths[-1]

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, 1, F, T)`` → bottleneck ``(B, C, F/2^depth, T/2^depth)`` and the skips, outermost first."""
        factor = 2**self.depth
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"UNet of depth {self.depth} needs height and width divisible by {factor}, got {tuple(x.shape[-2:])}"
            )
        h = self.input_norm(x)
        skips = []
        for level in self.down:
            h = level(h)
            skips.append(h)
        return skips.pop(), skips

    def level_channels(self, level: int) -> int:
        """Channels of the output of up level ``level`` (``depth - 1`` innermost, 0 outermost)."""
        level_layers = self.up[level]
        assert isinstance(level_layers, nn.Sequential)
        conv = level_layers[2]
        assert isinstance(conv, nn.Conv2d)
        return conv.out_channels

    def decode(
        self, bottleneck: Tensor, skips: list[Tensor], after_level: Callable[[int, Tensor], Tensor] | None = None
    ) -> Tensor:
        """Bottleneck and skips → ``(B', K, F, T)`` output feature maps.

        Args:
            bottleneck: ``(B', C, h, w)``; ``B'`` may be a multiple of the skips' batch (one decoding per source
                after a middle fusion): the skips are then repeated.
            skips: Encoder outputs, outermost first.
            after_level: Called as ``after_level(i, h)`` on the output of every up level ``i`` (innermost first,
                before the skip is concatenated), returning the features to continue with; their batch may grow
                by a whole factor (a fusion that splits the mixture's features per source).
        """
        h = bottleneck
        for i in reversed(range(self.depth)):
            h = self.up[i](h)
            if after_level is not None:
                h = after_level(i, h)
            if i > 0:
                skip = skips[i - 1]
                if h.shape[0] != skip.shape[0]:
                    skip = skip.repeat_interleave(h.shape[0] // skip.shape[0], dim=0)
                h = torch.cat([skip, h], dim=1)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, F, T)`` log-magnitude spectrogram → ``(B, K, F, T)`` feature maps."""
        return self.decode(*self.encode(x))
