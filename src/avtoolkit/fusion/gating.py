"""Dynamic gating fusion module, DGFM, of DGFNet.

DGFNet: "End-to-End Audio-Visual Source Separation Based on Dynamic Gating Fusion".

At the intermediate audio features ``F_mid ∈ R^{C×H×W}`` (e.g. 256 × 32 × 32 after the U-Net's 4th up level) and a
per-source visual object feature ``o ∈ R^D`` (DGFNet's dynamic gating fusion module, DGFM):

    F_av = fuse(F_mid, Tile(W_o · o))                             (audio-visual features; fuse = 1×1 conv on
                                                                   the channel concatenation, 2C → C)
    σ    = sigmoid(Conv1×1([F_mid; F_av]))                        (gate: element-wise C×H×W, or channel-wise
                                                                   C×1×1 from globally averaged inputs)
    out  = σ ⊙ F_av + (1 − σ) ⊙ F_mid                             (gated fusion)

σ is returned with the output so that it can be analysed (mean gate per source, the "noise stress test": a corrupted
visual input should close the gate). The gate convolution starts at zero (weights and bias), so every gate starts
exactly half-open, σ = 0.5. The public DGFNet fork overwrote the gated output with ``F_av`` (a no-op gate); here
σ takes part in the output by construction, and the tests check it.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedFusion(nn.Module):
    """DGFM: fuse a per-source visual vector into audio feature maps through a learned sigmoid gate.

    Args:
        channels: C, the channels of the audio feature maps ``F_mid``.
        visual_dim: D, the size of a source's visual object feature ``o``.
        gate: ``"element"``: one gate value per channel and position (C×H×W); ``"channel"``: one per channel
            (C×1×1), computed from the globally average-pooled ``[F_mid; F_av]``.
    """

    def __init__(self, channels: int, visual_dim: int, gate: Literal["element", "channel"] = "element") -> None:
        super().__init__()
        if gate not in ("element", "channel"):
            raise ValueError(f"GatedFusion gate must be 'element' or 'channel', got {gate!r}")
        self.channels = channels
        self.visual_dim = visual_dim
        self.gate = gate
        self.visual_projection = nn.Linear(visual_dim, channels)  # W_o
        self.fuse = nn.Conv2d(2 * channels, channels, kernel_size=1)  # fuse([F_mid; Tile(W_o·o)]) → F_av
        self.gate_conv = nn.Conv2d(2 * channels, channels, kernel_size=1)  # σ = sigmoid(gate_conv([F_mid; F_av]))
        for parameter in self.gate_conv.parameters():  # half-open start: σ = sigmoid(0) = 0.5 everywhere
            nn.init.zeros_(parameter)

    def _check(self, features: Tensor, visual: Tensor) -> None:
        if visual.dim() != 3 or visual.shape[-1] != self.visual_dim:
            raise ValueError(
                f"GatedFusion expects visual features (B, N, {self.visual_dim}), got {tuple(visual.shape)}"
            )
        B, N = visual.shape[:2]
        shared = features.dim() == 4 and features.shape[:2] == (B, self.channels)
        per_source = features.dim() == 5 and features.shape[:3] == (B, N, self.channels)
        if not (shared or per_source):
            raise ValueError(
                f"GatedFusion expects audio features (B, {self.channels}, H, W) or (B, N, {self.channels}, H, W) "
                f"with B={B}, N={N}, got {tuple(features.shape)}"
            )

    def visual_audio(self, features: Tensor, visual: Tensor) -> Tensor:
        """The audio-visual features ``F_av = fuse(F_mid, Tile(W_o · o))``.

        Args:
            features: ``F_mid``, ``(B, N, C, H, W)`` per source or ``(B, C, H, W)`` shared by all sources.
            visual: ``o``, ``(B, N, D)`` one visual object feature per source.

        Returns:
            ``(B, N, C, H, W)``.
        """
        self._check(features, visual)
        C = self.channels
        # A 1×1 conv over [F_mid; Tile(v)] is W_a·F_mid + W_v·v + b with the weight split by input channel; the
        # visual half is the same at every position, so it is computed once per source instead of tiled.
        weight = self.fuse.weight[:, :, 0, 0]
        v = self.visual_projection(visual)  # W_o · o, (B, N, C)
        visual_part = F.linear(v, weight[:, C:])  # (B, N, C)
        audio_part = F.conv2d(features.flatten(0, -4), self.fuse.weight[:, :C], self.fuse.bias)
        audio_part = audio_part.unflatten(0, features.shape[:-3])
        if features.dim() == 4:
            audio_part = audio_part.unsqueeze(1)  # shared features: the same for every source
        return audio_part + visual_part[..., None, None]

    def forward(self, features: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        """Gate the audio-visual features against the audio features.

        Args:
            features: ``F_mid``, ``(B, N, C, H, W)`` per source or ``(B, C, H, W)`` shared by all sources
                (expanded per source).
            visual: ``o``, ``(B, N, D)`` one visual object feature per source.

        Returns:
            ``(out, σ)``, both ``(B, N, C, H, W)``: ``out = σ ⊙ F_av + (1 − σ) ⊙ F_mid`` and the gate σ ∈ [0, 1]
            (channel-wise gates are returned expanded over H×W, as a view).
        """
        f_av = self.visual_audio(features, visual)
        f_mid = features if features.dim() == 5 else features.unsqueeze(1).expand_as(f_av)
        gate_input = torch.cat([f_mid, f_av], dim=2).flatten(0, 1)  # [F_mid; F_av], (B·N, 2C, H, W)
        if self.gate == "channel":
            gate_input = gate_input.mean(dim=(-2, -1), keepdim=True)  # global average pooling → C×1×1 gate
        sigma = torch.sigmoid(self.gate_conv(gate_input)).unflatten(0, f_av.shape[:2]).expand_as(f_av)
        out = sigma * f_av + (1 - sigma) * f_mid
        return out, sigma
