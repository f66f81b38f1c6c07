"""DGFNet: end-to-end audio-visual source separation with dynamic gating fusion.

A U-Net decodes the mixture spectrogram with an EMA audio-attention block after each up level. At an
intermediate level (256 × 32 × 32 after the 4th up level of the 7-level U-Net) the dynamic gating fusion
module mixes, per source, audio-visual and audio features by a learned gate σ:

    F_av = fuse(F_mid, tile(W_o · o)),  σ = sigmoid(conv1×1([F_mid; F_av])),  F = σ ⊙ F_av + (1 − σ) ⊙ F_mid

and the rest of the decoder runs per source from F. A query-based audio-visual transformer decoder (iQuery
style) turns each source's visual feature into a query over the tokens of *that source's* gated features (the
gate is per source, so no query reads another source's map); its mask embedding, dotted with that source's
K-channel U-Net output, gives the source's mask. Each source is thus decoded from its own picture and the mixture
only. σ is returned by the gating module (hook
``model.gate`` to observe it: the analysis tools do).
"""

from typing import Literal

from torch import Tensor, nn

from avtoolkit.data.batch import Batch
from avtoolkit.fusion.gating import GatedFusion
from avtoolkit.models.separation.base import SeparationModel, SeparationOutput, VisualStandardizer, visual_vectors
from avtoolkit.models.separation.ema import ResidualEMA
from avtoolkit.models.separation.query_decoder import AVQueryDecoder
from avtoolkit.models.separation.unet import UNet


class DGFNet(SeparationModel):
    """U-Net + EMA audio attention + dynamic gating fusion + audio-visual query decoder.

    Args:
        visual_dim: D, the size of the per-source visual feature (512 for CLIP).
        channels: K, the U-Net's output feature maps, dotted with the mask embeddings.
        unet_depth: U-Net levels.
        unet_base_channels: Channels of the first U-Net level.
        unet_max_channels: Channel cap of the U-Net.
        gate_level: The up level after which the gating fusion sits (levels count from ``unet_depth - 1``,
            innermost, to 0; 3 is the 256 × 32 × 32 level of the paper's 7-level U-Net).
        gate: Element-wise (C×H×W) or channel-wise (C×1×1) gate σ.
        attention_groups: Channel groups of the EMA attention blocks.
        decoder_dim: Width of the query transformer.
        decoder_heads: Attention heads of the query transformer.
        decoder_ffn_dim: Feed-forward width of the query transformer.
        decoder_encoder_layers: Transformer encoder layers over the fused audio tokens.
        decoder_layers: Query decoder layers.
        visual_encoder: Computes visual features from frames when the batch has no ``visual_emb``.
        standardize_visual: Standardise the visual vectors with statistics of the training clips' embeddings
            (for frozen embeddings; see :class:`~avtoolkit.models.separation.base.VisualStandardizer`).
    """

    def __init__(
        self,
        visual_dim: int = 512,
        channels: int = 32,
        unet_depth: int = 7,
        unet_base_channels: int = 64,
        unet_max_channels: int = 512,
        gate_level: int = 3,
        gate: Literal["element", "channel"] = "element",
        attention_groups: int = 8,
        decoder_dim: int = 256,
        decoder_heads: int = 8,
        decoder_ffn_dim: int = 1024,
        decoder_encoder_layers: int = 1,
        decoder_layers: int = 4,
        visual_encoder: nn.Module | None = None,
        standardize_visual: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < gate_level < unet_depth:
            raise ValueError(f"gate_level must be an inner up level, in 1..{unet_depth - 1}; got {gate_level}")
        self.unet = UNet(unet_depth, unet_base_channels, unet_max_channels, out_channels=channels)
        # EMA audio attention after every up level but the output layer (whose K maps form the mask features).
        self.attention = nn.ModuleDict(
            {str(i): ResidualEMA(self.unet.level_channels(i), attention_groups) for i in range(1, unet_depth)}
        )
        gate_channels = self.unet.level_channels(gate_level)
        self.gate_level = gate_level
        self.gate = GatedFusion(gate_channels, visual_dim, gate=gate)
        self.decoder = AVQueryDecoder(
            audio_channels=gate_channels,
            visual_dim=visual_dim,
            mask_channels=channels,
            dim=decoder_dim,
            heads=decoder_heads,
            ffn_dim=decoder_ffn_dim,
            encoder_layers=decoder_encoder_layers,
            decoder_layers=decoder_layers,
        )
        self.visual_encoder = visual_encoder
        self.visual_norm = VisualStandardizer(visual_dim) if standardize_visual else None

    def forward(self, spectrogram: Tensor, batch: Batch) -> SeparationOutput:
        """``(B, 1, F, T)`` log-magnitude mixture + per-source visual input → ``(B, N, F, T)`` mask logits."""
        visual = visual_vectors(batch, self.visual_encoder, self.visual_norm)  # (B, N, D)
        B, N = visual.shape[:2]
        bottleneck, skips = self.unet.encode(spectrogram)
        fused: list[Tensor] = []

        def after_level(level: int, features: Tensor) -> Tensor:
            if str(level) in self.attention:
                features = self.attention[str(level)](features)
            if level == self.gate_level:  # from here on, one decoding per source
                gated, _gate = self.gate(features, visual)  # (B, N, C, H, W)
                fused.append(gated.flatten(0, 1))
                return fused[0]
            return features

        pixel_features = self.unet.decode(bottleneck, skips, after_level).unflatten(0, (B, N))  # (B, N, K, F, T)
        # each source's query reads its own gated tokens and masks its own pixel features
        logits = self.decoder(fused[0].unflatten(0, (B, N)), visual, pixel_features)
        return SeparationOutput(mask_logits=logits)
