"""Hierarchical fusion (HFRA: "Audio-Visual Separation with Hierarchical Fusion and Representation Alignment").

Middle and late fusion at once, with *separate* single-layer projections of the source's visual embedding ``e``
(HFRA's hierarchical fusion):

    M = Proj1(e) ⊙ Dec(Tile(Proj2(e)) ⊕ Enc(X))                   (HFRA, hierarchical fusion)

    Proj2(e) = sigmoid(Linear(D → P)(e))    middle: tiled over the bottleneck grid, concatenated  (MiddleFusion)
    Proj1(e) = sigmoid(Linear(D → K)(e))    late: per-channel inner product with the decoder output (LateFusion)

where ``⊙`` is the late-fusion inner product ``Σ_k α_k · Proj1(e)_k · S_k + b`` over the decoder's K output maps.
The module wraps the U-Net: :meth:`HierarchicalFusion.fuse_bottleneck` runs between ``encode`` and ``decode``,
the decoder runs once per source, and :meth:`HierarchicalFusion.readout` turns each source's features into its
mask logits. Each source uses its own visual vector in both stages (the public HFRA code computes every source's
mask from the last source's features; that bug is not reproduced).

The paper's ablation rows are switch settings of this one module:

- ``middle=True, late=True``: hierarchical (HFRA).
- ``middle=False, late=True``: late only: the bottleneck is repeated per source unchanged, so every source decodes
  the same features and the readout is exactly ``LateFusion(K, D)`` (Sound of Pixels / CLIPSep late).
- ``middle=True, late=False``: middle only: ``MiddleFusion(D, P)`` and a visual-independent learned readout, a
  1×1 convolution K → 1 with bias (CLIPSep middle).

A switched-off stage's submodule (``fusion.middle`` / ``fusion.late``) is ``None``.
"""

from collections.abc import Callable

from torch import Tensor, nn

from avtoolkit.fusion.late import LateFusion
from avtoolkit.fusion.middle import MiddleFusion


class HierarchicalFusion(nn.Module):
    """HFRA's hierarchical audio-visual fusion around a U-Net, with middle and late switches for the ablation.

    Args:
        visual_dim: D, the size of a source's visual embedding (512 for CLIP ViT-B/32).
        bottleneck_channels: C, the channels of the U-Net's innermost encoder output (512 in the recipe).
        middle_channels: P, the size of the middle projection ``Proj2(e)`` tiled over the bottleneck (unused when
            ``middle`` is off).
        feature_channels: K, the channels of the decoder output that the late fusion reads (32 in the recipe).
        middle: Concatenate ``Tile(Proj2(e))`` to the bottleneck before decoding.
        late: Read the mask out with the late inner product ``Proj1(e) ⊙ features``; when off, a learned 1×1
            convolution K → 1 that does not see the visual input.
    """

    def __init__(
        self,
        visual_dim: int,
        bottleneck_channels: int,
        middle_channels: int,
        feature_channels: int,
        middle: bool = True,
        late: bool = True,
    ) -> None:
        super().__init__()
        if not (middle or late):
            raise ValueError("HierarchicalFusion needs middle or late fusion (or both); both are off")
        self.visual_dim = visual_dim
        self.bottleneck_channels = bottleneck_channels
        self.feature_channels = feature_channels
        # Proj2 lives in the middle fusion, Proj1 in the late fusion: two separate linear layers. A switched-off
        # stage is None (as nn.Linear's bias is with bias=False), so `fusion.middle is not None` tests the switch.
        self.middle: MiddleFusion | None = MiddleFusion(visual_dim, middle_channels) if middle else None
        self.late: LateFusion | None = LateFusion(feature_channels, visual_dim) if late else None
        self.conv_readout: nn.Conv2d | None = None if late else nn.Conv2d(feature_channels, 1, kernel_size=1)

    @property
    def decoder_in_channels(self) -> int:
        """C': the channels of :meth:`fuse_bottleneck`'s output, which the decoder's innermost level must accept."""
        if self.middle is None:
            return self.bottleneck_channels
        return self.middle.out_channels(self.bottleneck_channels)

    def fuse_bottleneck(self, bottleneck: Tensor, visual: Tensor) -> Tensor:
        """Middle stage: ``Tile(Proj2(e)) ⊕ Enc(X)`` per source.

        Args:
            bottleneck: ``(B, C, h, w)`` innermost encoder output of the mixture.
            visual: ``(B, N, D)`` visual embeddings, one per source.

        Returns:
            ``(B, N, C', h, w)`` with ``C' = decoder_in_channels``. With middle fusion off, the bottleneck repeated
            per source (an expanded view; flattening it for the decoder copies it).
        """
        if bottleneck.dim() != 4 or bottleneck.shape[1] != self.bottleneck_channels:
            raise ValueError(
                f"HierarchicalFusion expects a bottleneck (B, {self.bottleneck_channels}, h, w), "
                f"got {tuple(bottleneck.shape)}"
            )
        if self.middle is not None:
            return self.middle(bottleneck, visual)
        if visual.dim() != 3 or visual.shape[-1] != self.visual_dim:
            raise ValueError(
                f"HierarchicalFusion expects visual embeddings (B, N, {self.visual_dim}), got {tuple(visual.shape)}"
            )
        return bottleneck.unsqueeze(1).expand(-1, visual.shape[1], -1, -1, -1)

    def readout(self, features: Tensor, visual: Tensor) -> Tensor:
        """Late stage: ``Proj1(e) ⊙ Dec(...)`` per source, or the visual-independent 1×1 conv readout.

        Args:
            features: ``(B, N, K, F, T)`` decoder output, one set of K maps per source.
            visual: ``(B, N, D)`` visual embeddings, one per source (ignored when late fusion is off).

        Returns:
            ``(B, N, F, T)`` mask logits.
        """
        if features.dim() != 5 or features.shape[2] != self.feature_channels:
            raise ValueError(
                f"HierarchicalFusion expects per-source features (B, N, {self.feature_channels}, F, T), "
                f"got {tuple(features.shape)}"
            )
        if self.late is not None:
            return self.late(features, visual)
        assert self.conv_readout is not None
        return self.conv_readout(features.flatten(0, 1)).squeeze(1).unflatten(0, features.shape[:2])

    def forward(self, bottleneck: Tensor, visual: Tensor, decoder: Callable[[Tensor], Tensor]) -> Tensor:
        """The whole fusion, ``M = Proj1(e) ⊙ Dec(Tile(Proj2(e)) ⊕ Enc(X))``.

        Args:
            bottleneck: ``(B, C, h, w)`` innermost encoder output of the mixture.
            visual: ``(B, N, D)`` visual embeddings, one per source.
            decoder: Maps ``(B·N, C', h, w)`` fused bottlenecks (sources flattened into the batch, source-major
                within each mixture) to ``(B·N, K, F, T)`` features; for the U-Net, ``decode`` with each skip
                repeated per source (``skip.repeat_interleave(N, 0)``).

        Returns:
            ``(B, N, F, T)`` mask logits.
        """
        fused = self.fuse_bottleneck(bottleneck, visual)
        features = decoder(fused.flatten(0, 1)).unflatten(0, fused.shape[:2])
        return self.readout(features, visual)
