"""Query-based audio-visual transformer decoder (iQuery, Chen et al., CVPR 2023; Mask2Former-style), DGFNet's head.

DGFNet's head: visual features initialise/offset the source's query; 1 encoder layer over the fused audio tokens
with 2-D sine positions, 4 decoder layers (d 256, 8 heads, FFN 1024); a mask-embedding MLP whose output is
dot-multiplied with the U-Net's 32-channel output gives the mask.

Two ways to feed the audio. A shared map ``(B, C, h, w)`` (e.g. the mixture's features): the N source queries
read the same tokens and exchange information through self-attention. Per-source maps ``(B, N, C, h, w)`` (DGFNet,
after its per-source gating fusion): each source's query is decoded on its own, from its own map's tokens, so no
query reads another source's map or query and each source's mask depends on its own picture and the mixture only.

Notation: ``A ∈ R^{C×h×w}`` the (fused) audio features, ``v_n ∈ R^D`` the visual feature of source n,
``S ∈ R^{K×F×T}`` the U-Net's per-pixel features (K = ``mask_channels``).

Audio tokens (DETR Sec. 3.2 / Mask2Former Sec. 3.2)::

    M^(0) = flatten(Conv1×1(A)) ∈ R^{hw×d},   P = sine_positional_encoding_2d(h, w, d) (DETR)
    M^(l) = EncoderLayer(M^(l−1), P)          (self-attention with P added to queries and keys, then FFN)

Source queries (the choice made here for "visual features initialise/offset the source's query")::

    e_n     = W_v v_n + b_v                   (visual offset, one linear projection shared by all sources)
    q_n^(0) = q_base + e_n                    (content query: one learnable base query, offset per source)
    p_n     = e_n                             (query position, re-added to the attention queries/keys of
                                               every decoder layer, as DETR's object queries are)

The base query is shared by every source, so the N queries differ only by their visual offsets: nothing ties a
query to a slot index, which makes the decoder permutation-equivariant in the sources and lets N change from
call to call. Re-injecting ``e_n`` at every layer keeps the source identity after self-attention has mixed the
queries (Mask2Former keeps ``query_feat`` and ``query_embed`` apart for the same reason).

Decoder layer l (DETR ordering; iQuery keeps it)::

    q ← q + SelfAttn(q + p, q + p, q)                 (sources exchange information)
    q ← q + CrossAttn(q + p, M + P, M)                (queries read the audio tokens)
    q ← q + FFN(q)                                    (each followed by LayerNorm, or preceded with norm_first)

Mask prediction (MaskFormer Eq. 3 / iQuery Eq. 5)::

    m_n = MLP(LayerNorm(q_n^(L))) ∈ R^K,      logits_n(f, t) = ⟨m_n, S(:, f, t)⟩

The same final LayerNorm and MLP applied to every layer's queries give the deep-supervision predictions of
:meth:`AVQueryDecoder.forward_layers`.
"""

import torch
from torch import Tensor, nn

from avtoolkit.fusion.attention import sine_positional_encoding_2d


class _FeedForward(nn.Module):
    """Position-wise FFN: Linear(d → ffn) → ReLU → dropout → Linear(ffn → d)."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d)`` → ``(..., d)``."""
        return self.net(x)


class AudioEncoderLayer(nn.Module):
    """DETR encoder layer: self-attention over the audio tokens (positions added to queries and keys), FFN.

    Args:
        dim: Token size d.
        heads: Attention heads.
        ffn_dim: FFN hidden size.
        dropout: Dropout on attention weights and residual branches.
        norm_first: Pre-norm (LayerNorm before each sub-layer) instead of DETR's post-norm.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = _FeedForward(dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """Tokens ``(B, L, d)`` and positions ``(L, d)`` (or ``(B, L, d)``) → ``(B, L, d)``."""
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout(self.self_attn(h + pos, h + pos, h, need_weights=False)[0])
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.dropout(self.self_attn(x + pos, x + pos, x, need_weights=False)[0]))
        return self.norm2(x + self.ffn(x))


class QueryDecoderLayer(nn.Module):
    """DETR decoder layer: self-attention among source queries, cross-attention to audio tokens, FFN.

    Args:
        dim: Token size d.
        heads: Attention heads.
        ffn_dim: FFN hidden size.
        dropout: Dropout on attention weights and residual branches.
        norm_first: Pre-norm (LayerNorm before each sub-layer) instead of DETR's post-norm.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = _FeedForward(dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor) -> Tensor:
        """Queries ``(B, N, d)`` + positions ``(B, N, d)``, audio tokens ``(B, L, d)`` + positions → ``(B, N, d)``."""
        keys = memory + memory_pos
        if self.norm_first:
            h = self.norm1(q)
            q = q + self.dropout(self.self_attn(h + query_pos, h + query_pos, h, need_weights=False)[0])
            h = self.norm2(q)
            q = q + self.dropout(self.cross_attn(h + query_pos, keys, memory, need_weights=False)[0])
            return q + self.ffn(self.norm3(q))
        q = self.norm1(q + self.dropout(self.self_attn(q + query_pos, q + query_pos, q, need_weights=False)[0]))
        q = self.norm2(q + self.dropout(self.cross_attn(q + query_pos, keys, memory, need_weights=False)[0]))
        return self.norm3(q + self.ffn(q))


class AVQueryDecoder(nn.Module):
    """Audio-visual query transformer decoder: per-source mask logits from audio tokens and visual queries.

    See the module docstring for the equations. The defaults are DGFNet's (d 256, 8 heads, FFN 1024, 1 encoder
    and 4 decoder layers, 32 mask channels).

    Args:
        audio_channels: C, channels of the (fused) audio feature map the tokens are made from.
        visual_dim: D, size of each source's visual feature.
        mask_channels: K, channels of the per-pixel features (the U-Net output) and of the mask embedding.
        dim: Transformer width d (divisible by ``heads`` and by 4 for the sine positions).
        heads: Attention heads.
        ffn_dim: FFN hidden size.
        encoder_layers: Transformer encoder layers over the audio tokens (0 skips the encoder).
        decoder_layers: Query decoder layers (at least 1).
        dropout: Dropout in attention and FFN.
        norm_first: Pre-norm layers (LayerNorm before each sub-layer) instead of DETR/Mask2Former's post-norm;
            a final LayerNorm closes the encoder in that case.
    """

    def __init__(
        self,
        audio_channels: int,
        visual_dim: int,
        mask_channels: int = 32,
        dim: int = 256,
        heads: int = 8,
        ffn_dim: int = 1024,
        encoder_layers: int = 1,
        decoder_layers: int = 4,
        dropout: float = 0.0,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"AVQueryDecoder dim ({dim}) must be divisible by heads ({heads})")
        if dim % 4:
            raise ValueError(f"AVQueryDecoder dim ({dim}) must be divisible by 4 for the 2-D sine positions")
        if encoder_layers < 0 or decoder_layers < 1:
            raise ValueError(
                "AVQueryDecoder needs encoder_layers ≥ 0 and decoder_layers ≥ 1, "
                f"got {encoder_layers} and {decoder_layers}"
            )
        self.dim = dim
        self.visual_dim = visual_dim
        self.mask_channels = mask_channels
        # M^(0) = Conv1×1(A): audio feature map → d-dimensional tokens.
        self.audio_proj = nn.Conv2d(audio_channels, dim, kernel_size=1)
        self.encoder = nn.ModuleList(
            AudioEncoderLayer(dim, heads, ffn_dim, dropout, norm_first) for _ in range(encoder_layers)
        )
        self.encoder_norm: nn.Module = nn.LayerNorm(dim) if norm_first and encoder_layers else nn.Identity()
        # q_n^(0) = q_base + e_n,  e_n = W_v v_n + b_v.
        self.base_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.visual_proj = nn.Linear(visual_dim, dim)
        self.decoder = nn.ModuleList(
            QueryDecoderLayer(dim, heads, ffn_dim, dropout, norm_first) for _ in range(decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        # m_n = MLP(q_n): 3 layers, ReLU between (MaskFormer's mask-embedding MLP).
        self.mask_embed = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, mask_channels)
        )

    def _check(self, audio_features: Tensor, visual: Tensor, pixel_features: Tensor) -> None:
        if audio_features.ndim not in (4, 5) or visual.ndim != 3 or pixel_features.ndim not in (4, 5):
            raise ValueError(
                "AVQueryDecoder expects audio_features (B, C, h, w) or per source (B, N, C, h, w), visual (B, N, D), "
                "pixel_features (B, K, F, T) or per source (B, N, K, F, T); "
                f"got {tuple(audio_features.shape)}, {tuple(visual.shape)}, {tuple(pixel_features.shape)}"
            )
        if visual.shape[-1] != self.visual_dim:
            raise ValueError(f"AVQueryDecoder built for visual_dim={self.visual_dim}, got {visual.shape[-1]}")
        if pixel_features.shape[-3] != self.mask_channels:
            raise ValueError(
                f"AVQueryDecoder built for mask_channels={self.mask_channels}, "
                f"got pixel_features with {pixel_features.shape[-3]} channels"
            )
        if audio_features.ndim == 5 and audio_features.shape[1] != visual.shape[1]:
            raise ValueError(
                f"AVQueryDecoder got per-source audio maps for {audio_features.shape[1]} sources but "
                f"{visual.shape[1]} visual features"
            )
        if not audio_features.shape[0] == visual.shape[0] == pixel_features.shape[0]:
            raise ValueError(
                f"AVQueryDecoder batch sizes differ: audio {audio_features.shape[0]}, visual {visual.shape[0]}, "
                f"pixel {pixel_features.shape[0]}"
            )

    def encode_audio(self, audio_features: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, h, w)`` → encoded audio tokens ``M^(L_enc)`` ``(B, h·w, d)`` and their positions ``(h·w, d)``.

        Per-source maps are decoded one source at a time (:meth:`decode_queries`): flatten them to ``(B·N, C, h, w)``
        first.
        """
        h, w = audio_features.shape[-2:]
        tokens = self.audio_proj(audio_features).flatten(2).transpose(1, 2)  # M^(0): (B, hw, d), row-major
        pos = sine_positional_encoding_2d(h, w, self.dim, device=tokens.device, dtype=tokens.dtype)  # P
        for layer in self.encoder:
            tokens = layer(tokens, pos)
        return self.encoder_norm(tokens), pos

    def decode_queries(self, audio_features: Tensor, visual: Tensor) -> list[Tensor]:
        """Every decoder layer's source queries, each ``(B, N, d)`` (last = final), before the final LayerNorm.

        A shared map ``(B, C, h, w)`` is read by all N queries together; per-source maps ``(B, N, C, h, w)`` are each
        read by their own source's query alone (decoded as B·N independent one-query problems).
        """
        if audio_features.ndim == 5:
            B, N = visual.shape[:2]
            states = self.decode_queries(audio_features.flatten(0, 1), visual.flatten(0, 1).unsqueeze(1))
            return [state.view(B, N, -1) for state in states]
        memory, pos = self.encode_audio(audio_features)
        offset = self.visual_proj(visual)  # e_n = W_v v_n + b_v: (B, N, d)
        q = self.base_query + offset  # q_n^(0) = q_base + e_n
        states = []
        for layer in self.decoder:
            q = layer(q, offset, memory, pos)  # query position p_n = e_n at every layer
            states.append(q)
        return states

    def predict_masks(self, queries: Tensor, pixel_features: Tensor) -> Tensor:
        """Mask logits ``(B, N, F, T)`` from queries ``(B, N, d)`` and pixel features.

        Pixel features are shared, ``(B, K, F, T)``, or per source, ``(B, N, K, F, T)``.
        """
        m = self.mask_embed(self.decoder_norm(queries))  # m_n = MLP(LN(q_n)): (B, N, K)
        if pixel_features.ndim == 5:
            return torch.einsum("bnk,bnkft->bnft", m, pixel_features)  # logits_n(f, t) = ⟨m_n, S_n(:, f, t)⟩
        return torch.einsum("bnk,bkft->bnft", m, pixel_features)  # logits_n(f, t) = ⟨m_n, S(:, f, t)⟩

    def forward_layers(self, audio_features: Tensor, visual: Tensor, pixel_features: Tensor) -> list[Tensor]:
        """Mask logits after every decoder layer (deep supervision), each ``(B, N, F, T)``; the last is the output.

        Args:
            audio_features: ``(B, C, h, w)`` shared audio feature map, or per source ``(B, N, C, h, w)``.
            visual: ``(B, N, D)`` one visual feature per source.
            pixel_features: ``(B, K, F, T)`` per-pixel features (the U-Net output).

        Returns:
            One ``(B, N, F, T)`` mask-logit tensor per decoder layer, first layer first.
        """
        self._check(audio_features, visual, pixel_features)
        return [self.predict_masks(q, pixel_features) for q in self.decode_queries(audio_features, visual)]

    def forward(self, audio_features: Tensor, visual: Tensor, pixel_features: Tensor) -> Tensor:
        """Per-source mask logits.

        Args:
            audio_features: ``(B, C, h, w)`` shared audio feature map, or per source ``(B, N, C, h, w)`` (the DGFM
                output: each query then reads its own source's map only).
            visual: ``(B, N, D)`` one visual feature per source; N may change from call to call.
            pixel_features: ``(B, K, F, T)`` per-pixel features (the U-Net's K-channel output).

        Returns:
            ``(B, N, F, T)`` mask logits.
        """
        self._check(audio_features, visual, pixel_features)
        return self.predict_masks(self.decode_queries(audio_features, visual)[-1], pixel_features)
