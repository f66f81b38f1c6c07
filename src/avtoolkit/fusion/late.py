"""Late fusion by a per-channel inner product (Sound of Pixels, Zhao et al. 2018; CLIPSep late fusion).

For each source with visual vector ``v ∈ R^K`` and the K audio feature maps ``S_k`` of the mixture:

    M = Σ_k α_k · v_k · S_k + b                                   (SoP "synthesizer")

with a learned per-channel scale ``α`` (initialised to 1) and bias ``b``. ``v`` is produced by the visual
branch (already passed through its activation); ``M`` is a mask logit map per source.
"""

import torch
from torch import Tensor, nn


class LateFusion(nn.Module):
    """Inner product of per-source visual vectors with the audio feature maps.

    Args:
        channels: K, the number of audio feature maps (and visual vector size).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, audio_features: Tensor, visual: Tensor) -> Tensor:
        """Fuse ``(B, K, F, T)`` audio features with ``(B, N, K)`` visual vectors → ``(B, N, F, T)`` logits."""
        return torch.einsum("bnk,bkft->bnft", visual * self.scale, audio_features) + self.bias
