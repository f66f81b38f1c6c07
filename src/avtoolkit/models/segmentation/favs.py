"""FAVS: frequency-aware audio-visual segmentation, and its baseline without FDED/SCMC.

"Frequency-Domain Decomposition and Recomposition for Robust Audio-Visual Segmentation". Pipeline (Eq. 1), for the
``T`` frames of each clip (``N = B·T`` frames in all):

    P_4, {P_32, P_16, P_8} = PixelDecoder(Backbone(V))                     multi-scale per-pixel embeddings, C channels
    F_a = Proj(VGGish(log-mel))                                            (N, C, 6, 4) audio feature map per frame
    stage 1:   (F̂_v¹, F̂_a¹) = SCMC(FDED_v(P_32), FDED_a(F_a))
    stage i>1: (F̂_vⁱ, F̂_aⁱ) = SCMC(FDED_v(Conv([Up(F̂_vⁱ⁻¹), P_i])), FDED_a(F̂_aⁱ⁻¹))     i = 2, 3 (P_16, P_8)
    queries    = E_q + MLP(GAP(F̂_a³))                                      audio-derived queries
    masks      = MaskedAttentionDecoder(queries, [F̂_v¹, F̂_v², F̂_v³], P_4 + Conv(Up(F̂_v³)))

Resolutions of what the paper leaves open: the per-pixel embeddings P_i are at strides 32, 16, 8 (the paper's
(H, W)/2^{i+1} would give strides 4, 8, 16, too costly for attention); the audio feature map is VGGish's last conv
block (time × frequency = 6 × 4 per 0.96 s window), so FDED and the attention see an audio *map*; the fused stride-8
visual output is added (1×1 conv, upsampled) to the stride-4 mask features so the per-pixel embeddings the masks are
read from carry the audio-visual fusion too.

Binary maps (S4, MS3) are a two-class problem for the mask-classification head: background (0) and foreground (1),
each a set-loss target where present, and the foreground logit is the two-class semantic inference
(:func:`~avtoolkit.models.segmentation.mask_decoder.prediction_logits`).

With the SFM plug-ins (``ars_stages``, ``msau``; see
:class:`~avtoolkit.models.segmentation.base.PyramidSegmentationModel`), MSAU upsamples the final prediction's query
masks to the frames before the set loss matches them, so it is trained by the loss and ``logits`` comes from them.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.data.batch import AUDIO, FRAMES, Batch
from avtoolkit.fusion.fded import FDED
from avtoolkit.fusion.scmc import SCMC
from avtoolkit.models.encoders.vggish import VGGish
from avtoolkit.models.segmentation.base import MaskPrediction, PyramidSegmentationModel, SegmentationOutput
from avtoolkit.models.segmentation.mask_decoder import MaskedAttentionDecoder, prediction_logits
from avtoolkit.models.segmentation.pixel_decoder import MSDeformAttnPixelDecoder


class AudioFeatureMap(nn.Module):
    """VGGish's last conv block projected to the model width: ``(B, T, 1, 96, 64)`` → ``(B, T, C, 6, 4)``.

    Args:
        dim: C, the model width.
        weights: Local VGGish state dict (random initialisation when ``None``).
        width: VGGish channel multiplier (1 = the official network; smaller for CPU runs).
        freeze: Keep VGGish fixed (eval mode, no gradients).
    """

    def __init__(self, dim: int, weights: str | None = None, width: float = 1.0, freeze: bool = False) -> None:
        super().__init__()
        self.vggish = VGGish(weights, width, freeze, with_embedding=False)
        self.project = nn.Sequential(nn.Conv2d(self.vggish.feature_channels, dim, 1), nn.GroupNorm(_groups(dim), dim))

    def forward(self, log_mel: Tensor) -> Tensor:
        """Audio feature map per frame."""
        return self.project(self.vggish.feature_map(log_mel.flatten(0, 1))).unflatten(0, log_mel.shape[:2])


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class FAVSStage(nn.Module):
    """One stage of Eq. 1: optional visual input fusion, FDED per modality, SCMC.

    Args:
        dim: Model width C.
        fuse_previous: Whether the visual input is ``Conv([Up(previous output), P_i])`` (stages 2 and 3).
        use_fded: Apply FDED to both modalities (off: identity).
        use_scmc: Apply SCMC (off: the streams pass through; the audio then reaches the masks through the
            queries only).
        num_experts: SCMC experts N_e.
        heads: Attention heads.
        top_k: Fixed number of experts instead of the entropy-guided k.
        balance_weight: Weight of SCMC's load-balancing loss.
        entropy_weight: Weight of SCMC's per-frame routing-entropy penalty.
        thresholds: FDED band edges on the normalised radial frequency.
    """

    def __init__(
        self,
        dim: int,
        fuse_previous: bool,
        use_fded: bool,
        use_scmc: bool,
        num_experts: int,
        heads: int,
        top_k: int | None,
        balance_weight: float,
        entropy_weight: float,
        thresholds: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.fuse = (
            nn.Sequential(nn.Conv2d(2 * dim, dim, 3, padding=1), nn.GroupNorm(_groups(dim), dim), nn.ReLU())
            if fuse_previous
            else None
        )
        self.fded_visual = FDED(dim, "visual", thresholds) if use_fded else None
        self.fded_audio = FDED(dim, "audio", thresholds) if use_fded else None
        self.scmc = (
            SCMC(dim, num_experts, heads, top_k=top_k, balance_weight=balance_weight, entropy_weight=entropy_weight)
            if use_scmc
            else None
        )

    def forward(
        self, pixels: Tensor, audio: Tensor, previous: Tensor | None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``pixels`` ``(B, T, C, H, W)`` (P_i), ``audio`` ``(B, T, C, h, w)``, ``previous`` stage output or ``None``.

        Returns:
            The stage's visual and audio outputs, its weighted auxiliary losses and its routing statistics (mean k
            and each expert's share of the frames, per stream), by name.
        """
        visual = pixels
        if self.fuse is not None and previous is not None:
            upsampled = F.interpolate(
                previous.flatten(0, 1), size=pixels.shape[-2:], mode="bilinear", align_corners=False
            )
            visual = self.fuse(torch.cat([upsampled, pixels.flatten(0, 1)], dim=1)).unflatten(0, pixels.shape[:2])
        if self.fded_visual is not None and self.fded_audio is not None:
            visual, audio = self.fded_visual(visual), self.fded_audio(audio)  # Eqs. 2-6
        losses: dict[str, Tensor] = {}
        stats: dict[str, Tensor] = {}
        if self.scmc is not None:
            routed = self.scmc(visual, audio)  # Eqs. 7-10
            visual, audio = routed.visual, routed.audio
            losses = {"balance_loss": routed.balance_loss}
            if self.scmc.entropy_weight > 0:
                losses["entropy_loss"] = routed.entropy_loss
            for stream, k, usage in (
                ("visual", routed.k_visual, routed.usage_visual),
                ("audio", routed.k_audio, routed.usage_audio),
            ):
                stats[f"mean_k_{stream}"] = k.float().mean()
                stats.update({f"usage_{stream}/expert{e}": share for e, share in enumerate(usage)})
        return visual, audio, losses, stats


class FAVS(PyramidSegmentationModel):
    """FAVS: FDED + SCMC stages between a deformable pixel decoder and a Mask2Former-style decoder.

    With ``use_fded=False, use_scmc=False`` it is the ablation baseline (the same pipeline; audio enters through
    the queries only).

    Args:
        num_classes: K: 1 (binary foreground, S4/MS3) or 71 (AVSS, 0 = background).
        backbone: timm model name (features-only): ``swin_base_patch4_window7_224``, ``pvt_v2_b5``,
            ``resnet50``, or a tiny one for tests (``test_resnet``).
        backbone_weights: Local weight file of the backbone (random initialisation when ``None``).
        audio_weights: Local VGGish state dict (random initialisation when ``None``).
        audio_width: VGGish channel multiplier (1 = the official network).
        freeze_audio: Keep VGGish fixed.
        dim: Model width C.
        num_queries: Queries of the transformer decoder.
        decoder_layers: Masked-attention decoder layers.
        decoder_ffn_dim: Feed-forward width in the decoder.
        encoder_layers: Deformable-attention encoder layers of the pixel decoder.
        encoder_ffn_dim: Feed-forward width in the pixel decoder.
        heads: Attention heads everywhere.
        use_fded: Frequency decomposition stages (FDED) on.
        use_scmc: Mixture of cross-modal attention experts (SCMC) on.
        num_experts: SCMC experts N_e.
        top_k: Fixed number of experts per frame (``None``: entropy-guided k, Eq. 9).
        balance_weight: SCMC load-balancing loss weight (0: off).
        entropy_weight: SCMC per-frame routing-entropy penalty weight (0: off). The balance loss alone is lowest
            when every frame routes uniformly, which keeps the entropy-guided k at N_e; this penalty makes single
            frames confident so that k varies (Eq. 9), while the balance loss keeps the experts evenly used.
        fded_thresholds: FDED radial band edges τ.
        ars_stages: Backbone transitions (by output stride: 8, 16, 32) preceded by adaptive resampling (SFM).
        msau: Upsample the final prediction's query masks to the frames with multi-scale adaptive upsampling (SFM),
            before the set loss matches them.
    """

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = "swin_base_patch4_window7_224",
        backbone_weights: str | None = None,
        audio_weights: str | None = None,
        audio_width: float = 1.0,
        freeze_audio: bool = False,
        dim: int = 256,
        num_queries: int = 100,
        decoder_layers: int = 9,
        decoder_ffn_dim: int = 2048,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 1024,
        heads: int = 8,
        use_fded: bool = True,
        use_scmc: bool = True,
        num_experts: int = 4,
        top_k: int | None = None,
        balance_weight: float = 0.01,
        entropy_weight: float = 0.01,
        fded_thresholds: tuple[float, ...] = (0.5, 0.25, 0.125),
        ars_stages: tuple[int, ...] = (),
        msau: bool = False,
    ) -> None:
        super().__init__(num_classes, backbone, backbone_weights, ars_stages, msau)
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            self.backbone.channels, dim, dim, encoder_layers, heads, ffn_dim=encoder_ffn_dim
        )
        self.audio = AudioFeatureMap(dim, audio_weights, audio_width, freeze_audio)
        self.stages = nn.ModuleList(
            FAVSStage(
                dim,
                i > 0,
                use_fded,
                use_scmc,
                num_experts,
                heads,
                top_k,
                balance_weight,
                entropy_weight,
                fded_thresholds,
            )
            for i in range(3)
        )
        self.fused_to_mask = nn.Conv2d(dim, dim, 1)
        self.query_embed = nn.Embedding(num_queries, dim)  # E_q
        self.audio_to_query = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))  # channel MLP
        decoder_classes = 2 if num_classes == 1 else num_classes  # binary: background and foreground
        self.decoder = MaskedAttentionDecoder(dim, num_queries, decoder_classes, decoder_layers, heads, decoder_ffn_dim)

    def forward(self, batch: Batch) -> SegmentationOutput:
        """Mask predictions of every decoder layer and the per-pixel scores of the last."""
        frames = batch[FRAMES]
        B, T = frames.shape[:2]
        frame_pyramid = self.frame_pyramid(frames.flatten(0, 1))
        mask_features, pyramid = self.pixel_decoder(frame_pyramid.features)  # (N, C, H/4, W/4); P_32, P_16, P_8
        audio = self.audio(batch[AUDIO])  # (B, T, C, 6, 4)
        visual: Tensor | None = None
        memory, losses, stats = [], {}, {}
        for i, (stage, pixels) in enumerate(zip(self.stages, pyramid, strict=True), start=1):
            visual, audio, stage_losses, stage_stats = stage(pixels.unflatten(0, (B, T)), audio, visual)
            memory.append(visual.flatten(0, 1))
            losses.update({f"stage{i}/{name}": value for name, value in stage_losses.items()})
            stats.update({f"stage{i}/{name}": value.detach() for name, value in stage_stats.items()})
        assert visual is not None
        fused = F.interpolate(memory[-1], size=mask_features.shape[-2:], mode="bilinear", align_corners=False)
        mask_features = mask_features + self.fused_to_mask(fused)
        audio_vector = audio.mean(dim=(-2, -1)).flatten(0, 1)  # GAP of the final audio feature, (N, C)
        queries = self.query_embed.weight.unsqueeze(0) + self.audio_to_query(audio_vector).unsqueeze(1)
        predictions = self.decoder(queries, memory, mask_features)
        if self.msau is not None:  # the final query masks, upsampled to the frames, are what the set loss matches
            final = predictions[-1]
            predictions[-1] = MaskPrediction(final.class_logits, self.upsample(final.mask_logits, frame_pyramid))
        logits = prediction_logits(predictions[-1], binary=self.num_classes == 1)  # (N, K, h, w)
        return SegmentationOutput(logits.unflatten(0, (B, T)), predictions, losses, stats)
