"""Cross-modal attention blocks and the DETR 2-D sine positional encoding.

Queries from one modality attend to the keys and values of the other, in a pre-norm transformer block (as in
Mask2Former's and DETR's ``normalize_before`` layers; pre-norm trains stably without warm-up tricks and keeps the
residual stream an exact identity path):

    u  = MHA(LN_q(x) + p_x, LN_c(c) + p_c, LN_c(c))               (cross-attention update; positions on q and k only)
    x' = x + Dropout(u)                                           (residual)
    y  = x' + Dropout(FFN(LN_f(x')))                              (FFN = Linear → GELU → Dropout → Linear)

``x`` ``(B, Lq, dim)`` is the query stream, ``c`` ``(B, Lc, dim)`` the context (the other modality), ``p_x`` and
``p_c`` optional positional encodings, and a key padding mask removes padded context positions from the softmax.
The output stream is not normalised (pre-norm): a stack of blocks ends with its own LayerNorm where needed.

:class:`BidirectionalCrossAttention` updates both streams at once from the *inputs* (audio attends to visual,
visual attends to audio), so neither direction sees the other's update.

:func:`sine_positional_encoding_2d` is DETR's ``PositionEmbeddingSine`` (normalised, scale 2π) for an ``H × W`` grid
flattened row-major, as the query decoders (Mask2Former-style pixel/mask decoders, DGFNet's transformer) use it.
"""

import math

import torch
from torch import Tensor, nn


def sine_positional_encoding_2d(
    height: int,
    width: int,
    dim: int,
    temperature: float = 10000.0,
    normalize: bool = True,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """DETR-style 2-D sine positional encoding of an ``height × width`` grid.

    Half of the channels encode the row, half the column; each half interleaves ``sin`` and ``cos`` of the
    1-based position divided by ``temperature^(2i / (dim / 2))``. With ``normalize`` the positions are first
    scaled to ``(0, 2π]`` (DETR's ``normalize=True, scale=2π``).

    Args:
        height: H, rows of the grid.
        width: W, columns of the grid.
        dim: Encoding size; a multiple of 4 (sin/cos pairs for each of the two axes).
        temperature: Base of the geometric frequency progression.
        normalize: Scale positions to ``(0, 2π]`` so the encoding does not depend on the grid size's scale.
        device: Device of the result.
        dtype: Floating-point type of the result (default: torch's default dtype).

    Returns:
        ``(H·W, dim)``: row ``h·W + w`` encodes position ``(h, w)``; channels ``[:dim/2]`` the row, ``[dim/2:]`` the
        column. Values lie in ``[-1, 1]``.
    """
    if dim % 4 != 0 or dim <= 0:
        raise ValueError(f"sine_positional_encoding_2d needs dim to be a positive multiple of 4, got {dim}")
    if height <= 0 or width <= 0:
        raise ValueError(f"sine_positional_encoding_2d needs a non-empty grid, got {height}×{width}")
    half = dim // 2
    y = torch.arange(1, height + 1, device=device, dtype=torch.float64)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float64)
    if normalize:
        eps = 1e-6
        y = y / (height + eps) * 2 * math.pi
        x = x / (width + eps) * 2 * math.pi
    i = torch.arange(half, device=device, dtype=torch.float64)
    frequencies = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)  # dim_t in DETR

    def encode(positions: Tensor) -> Tensor:
        angles = positions[:, None] / frequencies  # (L, dim/2)
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=2).flatten(1)  # sin, cos interleaved

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    out = torch.cat([pos_y, pos_x], dim=2).reshape(height * width, dim)
    return out.to(dtype if dtype is not None else torch.get_default_dtype())


def _with_position(x: Tensor, position: Tensor | None) -> Tensor:
    return x if position is None else x + position


class CrossModalAttention(nn.Module):
    """One pre-norm cross-attention block: queries of one modality attend to the other modality, then an FFN.

    Args:
        dim: Model width of both streams (project the modalities to a common width first).
        heads: Attention heads; must divide ``dim``.
        ffn_dim: Hidden width of the feed-forward network (default ``4 · dim``).
        dropout: Dropout on the attention weights, after the attention and inside/after the FFN.
    """

    def __init__(self, dim: int, heads: int = 8, ffn_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"CrossModalAttention needs heads ({heads}) to divide dim ({dim})")
        ffn_dim = 4 * dim if ffn_dim is None else ffn_dim
        self.dim = dim
        self.heads = heads
        self.norm_query = nn.LayerNorm(dim)  # LN_q
        self.norm_context = nn.LayerNorm(dim)  # LN_c
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout_attention = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(dim)  # LN_f
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)
        )

    def attention_update(
        self,
        query: Tensor,
        context: Tensor,
        query_pos: Tensor | None = None,
        context_pos: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """The cross-attention update ``u`` before the residual (see :meth:`forward` for the arguments).

        Returns:
            ``(B, Lq, dim)``.
        """
        if context_padding_mask is not None and context_padding_mask.dtype != torch.bool:
            raise TypeError(f"context_padding_mask must be boolean (True = padding), got {context_padding_mask.dtype}")
        q = self.norm_query(query)
        c = self.norm_context(context)
        u, _ = self.attention(
            _with_position(q, query_pos),
            _with_position(c, context_pos),
            c,
            key_padding_mask=context_padding_mask,
            need_weights=False,
        )
        return u

    def forward(
        self,
        query: Tensor,
        context: Tensor,
        query_pos: Tensor | None = None,
        context_pos: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Update the query stream with what it reads from the context stream.

        Args:
            query: ``(B, Lq, dim)`` tokens of the attending modality.
            context: ``(B, Lc, dim)`` tokens of the other modality (keys and values).
            query_pos: Positional encoding added to the queries, ``(B, Lq, dim)`` or ``(Lq, dim)``.
            context_pos: Positional encoding added to the keys (not the values), ``(B, Lc, dim)`` or ``(Lc, dim)``.
            context_padding_mask: ``(B, Lc)`` boolean, ``True`` where a context position is padding and must not be
                attended to. A query row whose context is entirely padding gives NaN (as in PyTorch).

        Returns:
            ``(B, Lq, dim)`` updated query stream.
        """
        u = self.attention_update(query, context, query_pos, context_pos, context_padding_mask)
        x = query + self.dropout_attention(u)
        return x + self.ffn(self.norm_ffn(x))


class BidirectionalCrossAttention(nn.Module):
    """Audio attends to visual and visual attends to audio, both from the input streams.

    Args:
        dim: Model width of both streams.
        heads: Attention heads of each direction; must divide ``dim``.
        ffn_dim: Hidden width of each direction's feed-forward network (default ``4 · dim``).
        dropout: Dropout of both directions (see :class:`CrossModalAttention`).
    """

    def __init__(self, dim: int, heads: int = 8, ffn_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.audio_to_visual = CrossModalAttention(dim, heads, ffn_dim, dropout)  # audio queries, visual context
        self.visual_to_audio = CrossModalAttention(dim, heads, ffn_dim, dropout)  # visual queries, audio context

    def forward(
        self,
        audio: Tensor,
        visual: Tensor,
        audio_pos: Tensor | None = None,
        visual_pos: Tensor | None = None,
        audio_padding_mask: Tensor | None = None,
        visual_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Update both streams with each other.

        Args:
            audio: ``(B, La, dim)`` audio tokens.
            visual: ``(B, Lv, dim)`` visual tokens.
            audio_pos: Positional encoding of the audio tokens, ``(B, La, dim)`` or ``(La, dim)``.
            visual_pos: Positional encoding of the visual tokens, ``(B, Lv, dim)`` or ``(Lv, dim)``.
            audio_padding_mask: ``(B, La)`` boolean, ``True`` at padded audio tokens (excluded as context).
            visual_padding_mask: ``(B, Lv)`` boolean, ``True`` at padded visual tokens (excluded as context).

        Returns:
            ``(audio', visual')``, shaped like the inputs.
        """
        new_audio = self.audio_to_visual(audio, visual, audio_pos, visual_pos, visual_padding_mask)
        new_visual = self.visual_to_audio(visual, audio, visual_pos, audio_pos, audio_padding_mask)
        return new_audio, new_visual
