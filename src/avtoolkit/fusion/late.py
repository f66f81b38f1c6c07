"""Late fusion by a per-channel inner product (Sound of Pixels, Zhao et al. 2018; CLIPSep late fusion).

For each source with visual vector ``v ∈ R^K`` and the K audio feature maps ``S_k`` (Sound of Pixels' synthesizer):

    M = Σ_k α_k · v_k · S_k + b                                   (SoP "synthesizer")

with a learned per-channel scale ``α`` (initialised to 1) and bias ``b`` (initialised to 0); ``M`` is a mask logit
map per source. ``v`` comes in one of two ways:

- already computed by the visual branch and passed through its activation (Sound of Pixels: the pooled, sigmoid
  frame features; ``visual_dim=None``);
- projected here from a visual embedding ``e ∈ R^D`` (CLIPSep late fusion; HFRA's ``Proj1``):

      v = sigmoid(Linear(D → K)(e))

The audio features are either shared by all sources (the U-Net output of the mixture, ``(B, K, F, T)``) or given per
source (``(B, N, K, F, T)``: HFRA decodes a separately middle-fused bottleneck for every source).
"""

import torch
from torch import Tensor, nn


class LateFusion(nn.Module):
    """Inner product of per-source visual vectors with the audio feature maps.

    Args:
        channels: K, the number of audio feature maps (and visual vector size).
        visual_dim: D, the size of a visual embedding to project to the K-vector with ``sigmoid(Linear(D → K))``
            (CLIPSep, HFRA). ``None`` (Sound of Pixels): the visual input already is the activated K-vector.
    """

    def __init__(self, channels: int, visual_dim: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.visual_dim = visual_dim
        self.scale = nn.Parameter(torch.ones(channels))  # α_k, initialised to 1
        self.bias = nn.Parameter(torch.zeros(1))  # b, initialised to 0
        self.projection: nn.Linear | None = nn.Linear(visual_dim, channels) if visual_dim is not None else None

    def project(self, visual: Tensor) -> Tensor:
        """The per-source visual K-vector ``v``: ``(B, N, D)`` → ``sigmoid(Linear(e))``, or ``(B, N, K)`` as given."""
        expected = self.channels if self.projection is None else self.visual_dim
        if visual.dim() != 3 or visual.shape[-1] != expected:
            raise ValueError(f"LateFusion expects visual input (B, N, {expected}), got {tuple(visual.shape)}")
        if self.projection is None:
            return visual
        return torch.sigmoid(self.projection(visual))

    def forward(self, audio_features: Tensor, visual: Tensor) -> Tensor:
        """Fuse audio features with per-source visual input into per-source mask logits.

        Args:
            audio_features: ``(B, K, F, T)`` shared by all sources, or ``(B, N, K, F, T)`` one map set per source.
            visual: ``(B, N, K)`` activated visual vectors (``visual_dim=None``) or ``(B, N, D)`` embeddings.

        Returns:
            ``(B, N, F, T)`` mask logits ``M = Σ_k α_k v_k S_k + b``.
        """
        v = self.project(visual) * self.scale  # α_k · v_k
        if audio_features.dim() == 4 and audio_features.shape[1] == self.channels:
            return torch.einsum("bnk,bkft->bnft", v, audio_features) + self.bias
        if audio_features.dim() == 5 and audio_features.shape[2] == self.channels:
            if audio_features.shape[1] != v.shape[1]:
                raise ValueError(
                    f"LateFusion got per-source audio features for {audio_features.shape[1]} sources "
                    f"but visual input for {v.shape[1]}"
                )
            return torch.einsum("bnk,bnkft->bnft", v, audio_features) + self.bias
        raise ValueError(
            f"LateFusion expects audio features (B, {self.channels}, F, T) or (B, N, {self.channels}, F, T), "
            f"got {tuple(audio_features.shape)}"
        )
