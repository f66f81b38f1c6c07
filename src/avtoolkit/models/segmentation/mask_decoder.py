"""Mask2Former's masked-attention transformer decoder, the mask-classification head of FAVS.

In FAVS, queries (learnable embeddings plus an audio-derived vector, built by the caller) read
the multi-scale visual features through *masked* cross-attention and predict class logits and mask embeddings;
masks are mask embeddings dotted with the stride-4 per-pixel embeddings (Mask2Former, Cheng et al., CVPR 2022).

Notation: ``X_l ∈ R^{N×H_l·W_l×d}`` the memory of level l (coarse to fine, strides 32, 16, 8), ``E ∈ R^{N×d×h×w}``
the mask features (stride 4), ``q ∈ R^{N×Q×d}`` the query stream, ``p_q`` the learnable query positions.

Memory (Mask2Former Sec. 3.2.2, "efficient multi-scale strategy")::

    keys/values of level l:  X_l = flatten(memory_l) + e_l          (e_l: learnable level embedding)
    key positions:           P_l = sine_positional_encoding_2d(H_l, W_l, d)   (DETR sine, normalised)
    layer i reads level      l(i) = i mod levels                     (round-robin, coarse to fine)

Prediction head, applied to the initial queries and after every layer (Mask2Former Sec. 3.1 / MaskFormer Eq. 3)::

    ĉ = Linear(LN(q)) ∈ R^{Q×(K+1)}                                  (K classes + "no object", the last)
    m = MLP₃(LN(q)) ∈ R^{Q×d},   mask(x, y) = ⟨m, E(:, x, y)⟩        (einsum with the mask features)

Masked attention (Mask2Former Eq. 2–4): the attention mask of layer i comes from the *previous* prediction's mask
logits, resized bilinearly to level l(i)'s grid::

    M_{i−1}(x, y) = 0 if sigmoid(mask_{i−1}(x, y)) ≥ 0.5 else −∞    (Eq. 4; here a boolean "masked" flag)
    rows of M that are −∞ everywhere are set to 0                    (a query with an empty mask sees everything)
    q ← LN(q + CrossAttn(q + p_q, X_l + P_l, X_l; M_{i−1}))          (Eq. 2, post-norm)
    q ← LN(q + SelfAttn(q + p_q, q + p_q, q))
    q ← LN(q + FFN(q))                                               (FFN = Linear → ReLU → Dropout → Linear)

The mask is detached (no gradient flows through the thresholding), as in Mask2Former.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.fusion.attention import sine_positional_encoding_2d
from avtoolkit.models.segmentation.base import MaskPrediction


def attention_mask_from_logits(mask_logits: Tensor, size: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """The masked-attention mask (Mask2Former Eq. 4) of one memory level from a prediction's mask logits.

    The logits are resized bilinearly (``align_corners=False``) to the level's grid; a position is masked where
    ``sigmoid(logit) < threshold``. A query whose row would be masked everywhere is unmasked entirely (it attends
    to every position), which also keeps the attention softmax finite.

    Args:
        mask_logits: ``(N, Q, h, w)`` mask logits of the previous prediction.
        size: ``(H_l, W_l)``, the grid of the memory level the next layer reads.
        threshold: Foreground probability below which a position is masked.

    Returns:
        ``(N, Q, H_l·W_l)`` boolean, ``True`` where the query must *not* attend (PyTorch's boolean ``attn_mask``
        convention), positions flattened row-major like the memory tokens. Detached.
    """
    if mask_logits.dim() != 4:
        raise ValueError(f"attention_mask_from_logits expects mask_logits (N, Q, h, w), got {tuple(mask_logits.shape)}")
    resized = F.interpolate(mask_logits.detach(), size=size, mode="bilinear", align_corners=False)
    masked = resized.sigmoid().flatten(2) < threshold  # Eq. 4: −∞ outside the predicted foreground
    return masked & ~masked.all(dim=-1, keepdim=True)  # a fully masked row attends everywhere instead


class MaskedAttentionLayer(nn.Module):
    """One post-norm Mask2Former decoder layer: masked cross-attention, self-attention, FFN.

    Args:
        dim: Model width d; divisible by ``heads``.
        heads: Attention heads.
        ffn_dim: Hidden width of the FFN.
        dropout: Dropout on the attention weights and the residual branches.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"MaskedAttentionLayer needs heads ({heads}) to divide dim ({dim})")
        self.heads = heads
        self.cross_attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for parameter in self.parameters():  # Mask2Former initialises its decoder layers with Xavier-uniform
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(
        self, query: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, attention_mask: Tensor | None
    ) -> Tensor:
        """Update the query stream.

        Args:
            query: ``(N, Q, d)`` query stream.
            query_pos: ``(N, Q, d)`` or ``(Q, d)`` query positions, added to the attention queries (and self-attention
                keys).
            memory: ``(N, L, d)`` memory tokens (keys and values of the cross-attention).
            memory_pos: ``(N, L, d)`` or ``(L, d)`` memory positions, added to the keys.
            attention_mask: ``(N, Q, L)`` boolean, ``True`` where a query must not attend (see
                :func:`attention_mask_from_logits`), or ``None`` for unmasked attention.

        Returns:
            ``(N, Q, d)`` updated query stream.
        """
        mask = None  # boolean (N·heads, Q, L), frame-major as nn.MultiheadAttention reads it
        if attention_mask is not None:
            mask = attention_mask.repeat_interleave(self.heads, dim=0)
        u = self.cross_attention(query + query_pos, memory + memory_pos, memory, attn_mask=mask, need_weights=False)[0]
        x = self.norm_cross(query + self.dropout(u))  # Eq. 2, post-norm
        qk = x + query_pos
        x = self.norm_self(x + self.dropout(self.self_attention(qk, qk, x, need_weights=False)[0]))
        return self.norm_ffn(x + self.dropout(self.ffn(x)))


class MaskedAttentionDecoder(nn.Module):
    """Mask2Former's transformer decoder: masked cross-attention over multi-scale memory, class and mask heads.

    See the module docstring for the equations. The defaults are Mask2Former's (d 256, 100 queries, 9 layers over
    3 levels, 8 heads, FFN 2048, no dropout).

    The caller builds the initial content queries (FAVS: learnable embeddings plus an audio-derived vector) and
    passes them to :meth:`forward`; the decoder holds only the query *positions*, so every parameter here takes
    part in every forward pass (DDP needs no unused-parameter search).

    Attributes:
        query_position: ``Q × d`` learnable query positions ``p_q``, added inside every attention.
        level_embedding: ``levels × d`` learnable level embeddings ``e_l``.

    Args:
        dim: Model width d: the channels of the memory maps and mask features. Divisible by ``heads`` and by 4
            (sine positions).
        num_queries: Q, the number of queries.
        num_classes: K, the classes (without "no object"): 1 for S4/MS3, 71 for AVSS.
        layers: Decoder layers; ``layers + 1`` predictions are made (one from the initial queries).
        heads: Attention heads.
        ffn_dim: Hidden width of each layer's FFN.
        levels: Number of memory levels read round-robin, coarse to fine.
        dropout: Dropout in attention and FFN.
    """

    def __init__(
        self,
        dim: int = 256,
        num_queries: int = 100,
        num_classes: int = 1,
        layers: int = 9,
        heads: int = 8,
        ffn_dim: int = 2048,
        levels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim <= 0 or dim % 4 != 0:
            raise ValueError(f"MaskedAttentionDecoder dim must be a positive multiple of 4 (sine positions), got {dim}")
        if heads <= 0 or dim % heads != 0:
            raise ValueError(f"MaskedAttentionDecoder needs heads ({heads}) to divide dim ({dim})")
        if num_queries < 1 or num_classes < 1 or levels < 1 or layers < 0:
            raise ValueError(
                "MaskedAttentionDecoder needs num_queries ≥ 1, num_classes ≥ 1, levels ≥ 1 and layers ≥ 0, got "
                f"num_queries={num_queries}, num_classes={num_classes}, levels={levels}, layers={layers}"
            )
        self.dim = dim
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.levels = levels
        self.query_position = nn.Embedding(num_queries, dim)  # p_q
        self.level_embedding = nn.Embedding(levels, dim)  # e_l
        self.layers = nn.ModuleList(MaskedAttentionLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)  # ĉ: K classes + no object
        self.mask_head = nn.Sequential(  # MLP₃: 3 layers, ReLU between
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)
        )

    def predict(self, queries: Tensor, mask_features: Tensor) -> MaskPrediction:
        """The prediction head on a query stream.

        Args:
            queries: ``(N, Q, d)``.
            mask_features: ``(N, d, h, w)`` per-pixel embeddings.

        Returns:
            Class logits ``(N, Q, K + 1)`` and mask logits ``(N, Q, h, w)``.
        """
        q = self.decoder_norm(queries)
        class_logits = self.class_head(q)  # ĉ = Linear(LN(q))
        mask_embedding = self.mask_head(q)  # m = MLP₃(LN(q))
        mask_logits = torch.einsum("nqc,nchw->nqhw", mask_embedding, mask_features)  # ⟨m, E(:, x, y)⟩
        return MaskPrediction(class_logits=class_logits, mask_logits=mask_logits)

    def _check(self, queries: Tensor, memory: list[Tensor], mask_features: Tensor) -> None:
        d, Q = self.dim, self.num_queries
        if queries.dim() != 3 or queries.shape[1:] != (Q, d):
            raise ValueError(f"MaskedAttentionDecoder expects queries (N, {Q}, {d}), got {tuple(queries.shape)}")
        N = queries.shape[0]
        if len(memory) != self.levels:
            raise ValueError(
                f"MaskedAttentionDecoder built for levels={self.levels} memory maps, got {len(memory)}; "
                "pass one (N, d, H_l, W_l) map per level, coarse to fine"
            )
        for level, feature in enumerate(memory):
            if feature.dim() != 4 or feature.shape[:2] != (N, d):
                raise ValueError(
                    f"MaskedAttentionDecoder expects memory[{level}] (N={N}, {d}, H, W), got {tuple(feature.shape)}"
                )
        if mask_features.dim() != 4 or mask_features.shape[:2] != (N, d):
            raise ValueError(
                f"MaskedAttentionDecoder expects mask_features (N={N}, {d}, h, w), got {tuple(mask_features.shape)}"
            )

    def forward(self, queries: Tensor, memory: list[Tensor], mask_features: Tensor) -> list[MaskPrediction]:
        """Decode the queries into ``layers + 1`` mask-classification predictions.

        Args:
            queries: ``(N, Q, d)`` initial query features (content queries, built by the caller).
            memory: ``levels`` maps ``(N, d, H_l, W_l)``, coarse to fine (strides 32, 16, 8), read round-robin.
            mask_features: ``(N, d, h, w)`` per-pixel embeddings (stride 4).

        Returns:
            ``layers + 1`` predictions, each class logits ``(N, Q, K + 1)`` and mask logits ``(N, Q, h, w)``: the one
            from the initial queries first, the final one last.
        """
        self._check(queries, memory, mask_features)
        sizes: list[tuple[int, int]] = []
        tokens: list[Tensor] = []
        positions: list[Tensor] = []
        for level, feature in enumerate(memory):
            H, W = feature.shape[-2:]
            sizes.append((H, W))
            tokens.append(feature.flatten(2).transpose(1, 2) + self.level_embedding.weight[level])  # X_l + e_l
            positions.append(sine_positional_encoding_2d(H, W, self.dim, device=feature.device, dtype=feature.dtype))
        query_pos = self.query_position.weight  # p_q, (Q, d), broadcast over frames

        q = queries
        prediction = self.predict(q, mask_features)
        predictions = [prediction]
        for i, layer in enumerate(self.layers):
            level = i % self.levels  # l(i): round-robin over the levels
            mask = attention_mask_from_logits(prediction.mask_logits, sizes[level])  # M_{i−1}, Eq. 4
            q = layer(q, query_pos, tokens[level], positions[level], mask)
            prediction = self.predict(q, mask_features)
            predictions.append(prediction)
        return predictions


_PROBABILITY_EPS = 1e-6


def semantic_inference(prediction: MaskPrediction) -> Tensor:
    """Mask2Former's semantic inference: class-probability-weighted sum of the query masks.

    ``S(k, x, y) = Σ_q softmax(ĉ_q)[k] · sigmoid(m_q(x, y))`` for the K real classes (no object dropped).

    Args:
        prediction: Class logits ``(N, Q, K + 1)`` and mask logits ``(N, Q, h, w)``.

    Returns:
        ``(N, K, h, w)`` non-negative class scores (at most Q).
    """
    probabilities = prediction.class_logits.softmax(dim=-1)[..., :-1]  # (N, Q, K)
    return torch.einsum("nqk,nqhw->nkhw", probabilities, prediction.mask_logits.sigmoid())


def prediction_logits(prediction: MaskPrediction, binary: bool) -> Tensor:
    """Per-pixel logits of a mask-classification prediction, from :func:`semantic_inference`.

    Class maps (``binary=False``): ``log S`` ``(N, K, h, w)``, whose argmax is Mask2Former's semantic label.

    Binary maps (``binary=True``; two classes, 0 background and 1 foreground, as the set loss trains them): the
    foreground logit ``log S_1 − log S_0`` ``(N, 1, h, w)``, so ``sigmoid = S_1 / (S_0 + S_1)`` and 0.5 is the
    argmax of the two-class semantic inference. A query claims pixels for the background as well as for the
    foreground, and the unmatched queries (mostly "no object") add to both sides alike, so the decision does not
    drift with the number of queries (a noisy-OR of the foreground claims of every query would).

    Args:
        prediction: Class logits ``(N, Q, K + 1)`` and mask logits ``(N, Q, h, w)``.
        binary: Whether the K = 2 classes are background and foreground of a binary map.

    Returns:
        ``(N, 1, h, w)`` (binary) or ``(N, K, h, w)``.
    """
    scores = semantic_inference(prediction).clamp_min(_PROBABILITY_EPS).log()
    if not binary:
        return scores
    if scores.shape[1] != 2:
        raise ValueError(f"binary prediction_logits needs two classes (background, foreground), got {scores.shape[1]}")
    return scores[:, 1:] - scores[:, :1]
