"""Middle fusion at the U-Net bottleneck (CLIPSep, Dong et al. 2023; HFRA's middle branch).

Each source's visual embedding ``e ∈ R^D`` is projected, tiled over the ``h × w`` bottleneck grid of the mixture's
encoder and concatenated with it on channels (CLIPSep's middle fusion):

    Proj2(e) = sigmoid(Linear(D → P)(e))                          (P = ``channels``)
    Z_n = Enc(X) ⊕ Tile(Proj2(e_n))        ∈ R^{(C + P) × h × w}   (HFRA: Tile(Proj2(e)) ⊕ Enc(X))

``⊕`` is channel concatenation. We put the audio channels first, so ``Z_n[:C]`` is the bottleneck unchanged; the
order is a fixed permutation of the decoder's first-layer weights and changes nothing else. The decoder then runs
once per source on ``Z_n`` (with the encoder skips repeated per source) and its first layer must accept
``out_channels(C) = C + P`` channels.
"""

import torch
from torch import Tensor, nn


class MiddleFusion(nn.Module):
    """Concatenate a tiled, projected visual vector to the audio bottleneck, one copy per source.

    Args:
        visual_dim: D, the size of a source's visual embedding.
        channels: P, the channels of the projected visual vector tiled over the bottleneck grid.
    """

    def __init__(self, visual_dim: int, channels: int) -> None:
        super().__init__()
        self.visual_dim = visual_dim
        self.channels = channels
        self.projection = nn.Linear(visual_dim, channels)  # Proj2

    def out_channels(self, bottleneck_channels: int) -> int:
        """Channels of the fused bottleneck, ``C + P``: what the decoder's innermost level must accept."""
        return bottleneck_channels + self.channels

    def project(self, visual: Tensor) -> Tensor:
        """``Proj2(e) = sigmoid(Linear(e))``: ``(B, N, D)`` → ``(B, N, P)``."""
        if visual.dim() != 3 or visual.shape[-1] != self.visual_dim:
            raise ValueError(
                f"MiddleFusion expects visual embeddings (B, N, {self.visual_dim}), got {tuple(visual.shape)}"
            )
        return torch.sigmoid(self.projection(visual))

    def forward(self, bottleneck: Tensor, visual: Tensor) -> Tensor:
        """Fuse the bottleneck with every source's visual embedding.

        Args:
            bottleneck: ``(B, C, h, w)`` innermost encoder output of the mixture (or ``(B, N, C, h, w)``, one per
                source).
            visual: ``(B, N, D)`` visual embeddings, one per source.

        Returns:
            ``(B, N, C + P, h, w)``: per source, the bottleneck followed by the tiled ``Proj2(e)``.
        """
        p = self.project(visual)
        B, N = p.shape[:2]
        if bottleneck.dim() == 4:
            bottleneck = bottleneck.unsqueeze(1).expand(-1, N, -1, -1, -1)
        elif bottleneck.dim() != 5 or bottleneck.shape[1] != N:
            raise ValueError(
                f"MiddleFusion expects a bottleneck (B, C, h, w) or (B, {N}, C, h, w), got {tuple(bottleneck.shape)}"
            )
        if bottleneck.shape[0] != B:
            raise ValueError(f"MiddleFusion got a bottleneck batch of {bottleneck.shape[0]} and visual batch of {B}")
        h, w = bottleneck.shape[-2:]
        tiled = p[..., None, None].expand(-1, -1, -1, h, w)  # Tile(Proj2(e))
        return torch.cat([bottleneck, tiled], dim=2)  # Enc(X) ⊕ Tile(Proj2(e))
