"""HFRA: audio-visual separation with Hierarchical Fusion and Representation Alignment.

A U-Net separates the mixture's log-magnitude spectrogram X, conditioned on each source's visual embedding e
(CLIP ViT-B/32 by default) at two depths:

    M = Proj1(e) ⊙ Dec(Tile(Proj2(e)) ⊕ Enc(X))                                     (hierarchical fusion)

— the middle fusion (Proj2, tiled and concatenated at the bottleneck) and the late fusion (Proj1, an inner
product with the decoder's K output channels). Switching one off gives the CLIPSep baselines (late-only,
middle-only), which is how the paper's ablation is run. Each source is decoded from *its own* middle-fused
bottleneck (the public code computed every source's mask from the last source's features).

Representation alignment pulls the pooled innermost encoder features towards the CLAP embedding of the mixture:

    z_a = GAP(Enc(X)),   L_align = 1 − cos(z_a, z_CLAP),   L = L_sep + λ L_align               (alignment)

z_a is the pooled innermost encoder output before the visual vector is concatenated; a linear projection maps it
to CLAP's width only when the widths differ (the paper's 7-level U-Net has a 512-channel bottleneck, CLAP a
512-d embedding: no projection, so the separation head cannot absorb the alignment into a layer of its own).
z_CLAP comes precomputed with the batch (``mixture_emb``, an embedding cache) or from a frozen CLAP audio
encoder run on the mixture. The alignment is a training loss only: evaluation and prediction skip it (and CLAP).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.data.batch import MIXTURE, MIXTURE_EMB, Batch
from avtoolkit.fusion.hierarchical import HierarchicalFusion
from avtoolkit.models.separation.base import SeparationModel, SeparationOutput, VisualStandardizer, visual_vectors
from avtoolkit.models.separation.unet import UNet


class HFRA(SeparationModel):
    """Hierarchical (middle + late) visual fusion around a U-Net, with optional CLAP representation alignment.

    Args:
        visual_dim: D, the size of the visual embeddings (512 for CLIP ViT-B/32).
        middle: Middle fusion at the bottleneck (Proj2, tile, concatenate).
        late: Late fusion at the output (Proj1 inner product with the K feature maps).
        middle_channels: Channels of the tiled visual projection concatenated to the bottleneck.
        channels: K, the U-Net's output feature maps.
        unet_depth: U-Net levels (7 for 256×256 spectrograms).
        unet_base_channels: Channels of the first U-Net level.
        unet_max_channels: Channel cap of the U-Net.
        visual_encoder: Computes visual vectors from the frames when the batch has no precomputed ``visual_emb``
            (a frozen ``CLIPImageEncoder`` on the fly, or a trainable frame encoder such as
            ``PooledFrameEncoder`` for the ResNet-18 row of the ablation). ``None``: embeddings must come with
            the batch.
        align_weight: λ of the representation-alignment loss (0 disables it; HFRA: 1.0).
        align_dim: Size of the alignment target (512 for CLAP); the pooled bottleneck is projected to it when its
            width differs.
        audio_encoder: Frozen audio encoder (``CLAPAudioEncoder``) giving the target on the fly when the batch
            has no precomputed ``mixture_emb``.
        standardize_visual: Standardise the visual vectors with statistics of the training clips' embeddings
            (for frozen embeddings; see :class:`~avtoolkit.models.separation.base.VisualStandardizer`).
    """

    def __init__(
        self,
        visual_dim: int = 512,
        middle: bool = True,
        late: bool = True,
        middle_channels: int = 32,
        channels: int = 32,
        unet_depth: int = 7,
        unet_base_channels: int = 64,
        unet_max_channels: int = 512,
        visual_encoder: nn.Module | None = None,
        align_weight: float = 0.0,
        align_dim: int = 512,
        audio_encoder: nn.Module | None = None,
        standardize_visual: bool = False,
    ) -> None:
        super().__init__()
        bottleneck = min(unet_base_channels * 2 ** (unet_depth - 1), unet_max_channels)
        self.fusion = HierarchicalFusion(visual_dim, bottleneck, middle_channels, channels, middle=middle, late=late)
        self.unet = UNet(
            unet_depth,
            unet_base_channels,
            unet_max_channels,
            out_channels=channels,
            bottleneck_extra_channels=self.fusion.decoder_in_channels - bottleneck,
        )
        self.visual_encoder = visual_encoder
        self.visual_norm = VisualStandardizer(visual_dim) if standardize_visual else None
        self.align_weight = align_weight
        self.audio_encoder = audio_encoder
        self.align_dim = align_dim
        project = align_weight > 0 and bottleneck != align_dim
        self.align_projection = nn.Linear(bottleneck, align_dim) if project else None

    def forward(self, spectrogram: Tensor, batch: Batch) -> SeparationOutput:
        """``(B, 1, F, T)`` log-magnitude mixture + per-source visual input → ``(B, N, F, T)`` mask logits."""
        embeddings = visual_vectors(batch, self.visual_encoder, self.visual_norm)  # (B, N, D)
        B, N = embeddings.shape[:2]
        bottleneck, skips = self.unet.encode(spectrogram)
        if self.fusion.middle is not None:  # one decoding per source, from its own fused bottleneck
            fused = self.fusion.fuse_bottleneck(bottleneck, embeddings)  # (B, N, C', h, w)
            features = self.unet.decode(fused.flatten(0, 1), skips).unflatten(0, (B, N))
        else:  # late fusion only: every source shares the mixture's decoding
            features = self.unet.decode(bottleneck, skips).unsqueeze(1).expand(-1, N, -1, -1, -1)
        output = SeparationOutput(mask_logits=self.fusion.readout(features, embeddings))
        if self.align_weight > 0 and self.training:  # a training loss: evaluation and prediction skip CLAP
            output.losses["align"] = self.align_weight * self.alignment_loss(bottleneck, batch)
        return output

    def aligned_features(self, bottleneck: Tensor) -> Tensor:
        """z_a: the pooled innermost encoder output ``(B, C, h, w)`` → ``(B, align_dim)`` (projected if needed)."""
        pooled = bottleneck.mean(dim=(-2, -1))
        return pooled if self.align_projection is None else self.align_projection(pooled)

    def alignment_loss(self, bottleneck: Tensor, batch: Batch) -> Tensor:
        """``1 − cos(z_a, z_CLAP)``, averaged over the mixtures (unweighted)."""
        z_audio = self.aligned_features(bottleneck)
        target = self._alignment_target(batch)
        if target.shape != z_audio.shape:
            raise ValueError(
                f"HFRA align_dim is {self.align_dim} but the mixture embeddings are {tuple(target.shape)}: set "
                "align_dim to the audio encoder's embedding size"
            )
        return 1.0 - F.cosine_similarity(z_audio, target.to(z_audio.dtype), dim=-1).mean()

    def _alignment_target(self, batch: Batch) -> Tensor:
        if MIXTURE_EMB in batch:
            return batch[MIXTURE_EMB]
        if self.audio_encoder is None:
            raise ValueError(
                "align_weight > 0 needs the mixture's audio embedding: configure the datamodule's mixture "
                "embedding cache, or give the model an audio_encoder (CLAPAudioEncoder) to compute it on the fly"
            )
        with torch.no_grad():
            return self.audio_encoder(batch[MIXTURE])


class CLIPSep(HFRA):
    """CLIPSep (Dong et al., ICLR 2023) with image queries: CLIP embeddings fused in the middle or late.

    The baseline HFRA improves on; it is HFRA with one fusion switched off and no alignment.

    Args:
        fusion: "middle" (tile + concatenate at the bottleneck, mask read out by a 1×1 conv) or "late"
            (inner product of the projected embedding with the K output maps).
        visual_dim: D, the size of the visual embeddings.
        middle_channels: Channels of the tiled projection (middle fusion).
        channels: K, the U-Net's output feature maps.
        unet_depth: U-Net levels.
        unet_base_channels: Channels of the first U-Net level.
        unet_max_channels: Channel cap of the U-Net.
        visual_encoder: Visual encoder for batches without precomputed embeddings.
        standardize_visual: Standardise the visual vectors with statistics of the training clips' embeddings.
    """

    def __init__(
        self,
        fusion: Literal["middle", "late"] = "late",
        visual_dim: int = 512,
        middle_channels: int = 32,
        channels: int = 32,
        unet_depth: int = 7,
        unet_base_channels: int = 64,
        unet_max_channels: int = 512,
        visual_encoder: nn.Module | None = None,
        standardize_visual: bool = False,
    ) -> None:
        if fusion not in ("middle", "late"):
            raise ValueError(f"CLIPSep fusion must be 'middle' or 'late', got {fusion!r}")
        super().__init__(
            visual_dim=visual_dim,
            middle=fusion == "middle",
            late=fusion == "late",
            middle_channels=middle_channels,
            channels=channels,
            unet_depth=unet_depth,
            unet_base_channels=unet_base_channels,
            unet_max_channels=unet_max_channels,
            visual_encoder=visual_encoder,
            standardize_visual=standardize_visual,
        )
