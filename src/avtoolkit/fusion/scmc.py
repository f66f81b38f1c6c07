"""SCMC, the sparse cross-modal mixture of experts of FAVS (Eqs. 7–10).

FAVS: "Frequency-Domain Decomposition and Recomposition for Robust Audio-Visual Segmentation".

Inputs are per-frame feature maps of both modalities, ``F_v`` ``(B, T, C, H, W)`` and ``F_a`` ``(B, T, C, h, w)``
(an audio map per frame, e.g. 6 × 4). Each of the N_e experts normalises its query, key and value inputs, enhances
them with STC gates and runs bidirectional cross-modal attention, frame by frame (tokens are the positions of one
frame):

    F̄_v^e = F_v + MHA(STC_q^e(LN(F_v)) + p_v, STC_k^e(LN(F_a)) + p_a, STC_v^e(LN(F_a)))       (Eq. 7)
    F̄_a^e = F_a + MHA(STC_q^e(LN(F_a)) + p_a, STC_k^e(LN(F_v)) + p_v, STC_v^e(LN(F_v)))

Each stream is routed by the *other* modality, one routing vector per frame:

    W_v = softmax(MLP_a(Pool(STC_a(F_a)))),   W_a = softmax(MLP_v(Pool(STC_v(F_v))))     (Eq. 8), W ∈ R^{B×T×N_e}

and uses as many experts as its routing is uncertain:

    E = −Σ_e W_e log(W_e + 1e-8),   E_norm = E / log N_e                                  (Eq. 9)
    k = clamp(ceil(k_min + (k_max − k_min) · E_norm), k_min, k_max)
    W̄ = top-k(W) / Σ top-k(W)   (the k largest weights kept, the rest zero, renormalised)

    F̃ = Σ_e W̄^e F̄^e = F + Σ_e W̄^e u^e   where k ≥ 1;   F̃ = F where k = 0                 (Eq. 10)

with ``u^e = F̄^e − F`` the attention update of expert e. The module computes the right-hand form (equal to the
left because the W̄ of a frame sum to one); it makes ``k = 0`` the exact identity and lets the sparse path skip
unselected experts. Sparse dispatch runs expert e only on the (flattened ``B·T``) frames whose stream selected it
(``index_select`` → expert → weighted ``index_add``); ``dense=True`` runs every expert on every frame and combines
with the same W̄, so both paths give the same output.

Resolutions where the paper is silent:

- STC (:class:`STC`) multiplies the input by three gates in turn: temporal (one weight per frame, from a 1-D
  convolution over T of the spatially pooled channel vectors), channel (squeeze-excitation), spatial (a convolution
  of the channel-mean and channel-max maps). Each gate is ``2·sigmoid(z)`` with the layer producing ``z``
  zero-initialised, so every STC is exactly the identity at initialisation (and a gate can both damp and amplify,
  range (0, 2)).
- Order inside an expert: LayerNorm first, then the STC gates, then the positions, then attention. A per-frame
  (temporal) or per-token (spatial) scalar gate applied *before* a per-token LayerNorm would be cancelled by it
  (only the LayerNorm's ε lets it through), so the gates act on the normalised q, k and v. The temporal gate of a
  frame is computed from the spatially pooled *raw* features of the whole sequence (its convolution looks at the
  neighbouring frames; pooled vectors are cheap), so the per-token work (LayerNorm, channel and spatial gates,
  attention) runs on the selected frames only and equals the work on the full sequence restricted to them. The
  spatial gate reads the channel mean and max of the normalised tokens (the mean carries information once the
  LayerNorm's affine parameters or the channel gate leave their initial values). At initialisation every STC is
  the identity, so the order does not change the initial output, and the parameter names are unchanged.
- The same ``STC_q^e, STC_k^e, STC_v^e`` serve both directions, as Eq. 7 writes them; each direction has its own
  attention (``nn.MultiheadAttention``, since key and value come from different enhancers) and its own LayerNorms
  on q, k and v. 2-D sine positions (DETR) are added to queries and keys, not values. There is no FFN.
- k is computed in float64 from the detached W and is not differentiable; the W̄ values are the renormalised
  softmax values and carry the router's gradient (with k = 1 a single renormalised weight is the constant 1, so
  only frames with k ≥ 2, and the auxiliary losses, train the router).
- Because the ceiling rounds up, any visible routing uncertainty gives k ≥ k_min + 1; k = k_min (0 by default)
  needs a (numerically) one-hot W, for which the 1e-8 in the log makes E ≤ 0. With N_e = 1 the entropy is always
  zero; E_norm is then defined as 1, so k = k_max (1 unless ``k_max = 0``).
- ``top_k`` replaces Eq. 9 by a fixed k for every frame (the "fixed top-k" ablation); k_min and k_max are then
  unused.
- Load balancing: ``balance_weight · (KL(mean W_v ‖ U) + KL(mean W_a ‖ U))`` with the dense routing
  softmax W averaged over all frames of the batch and U uniform (one term per stream, summed).
- Routing-entropy penalty (our remedy for a dense "dynamic" top-k): ``entropy_weight · (mean E_norm(W_v) +
  mean E_norm(W_a))``, the normalised entropy of Eq. 9 of the dense W averaged over the frames of the batch
  (0 for N_e = 1), returned as ``entropy_loss``. Nothing else pushes a single frame's routing away from uniform:
  the balance loss is minimal at per-frame-uniform routing, and with N_e = 4 a frame gets k < N_e only when its
  E_norm is below 3/4 (a top weight above ≈ 0.65 when the other three are equal), so without the penalty routing
  starts, and may stay, at k = N_e on every frame. The balance loss keeps the batch-mean usage spread over the
  experts, the penalty makes each frame confident, and together they give frame-dependent k < N_e. Off by default
  (``entropy_weight = 0``); the model chooses the weight. The penalty keeps pushing a confident frame towards a
  one-hot W, for which Eq. 9 gives k = k_min: with the paper's k_min = 0 such a frame bypasses the experts, so
  pair a strong penalty with ``k_min = 1`` if every frame should use an expert.
- Sparse dispatch costs one host synchronisation per forward for both streams together: the number of frames of
  each (stream, expert) is read in one ``tolist()``, and the frame indices of every expert come from one stable sort
  of the selection mask (selected frames first, in ascending frame order), cut at those counts. Statistics for
  logging (per-expert usage, the histogram of k) stay on the device.
"""

import math
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor, nn

from avtoolkit.fusion.attention import sine_positional_encoding_2d


def _zero_(module: nn.Module) -> None:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)


class STC(nn.Module):
    """Spatial, temporal and channel gating enhancer for per-frame feature maps ``(B, T, C, H, W)``.

    ``out = x · g_t · g_c · g_s`` with, per frame, a temporal gate ``g_t`` (scalar; 1-D convolution over T of the
    spatially pooled channel vectors), a channel gate ``g_c`` (C values; squeeze-excitation of the temporally gated
    frame) and a spatial gate ``g_s`` (H × W values; convolution of the channel-mean and channel-max maps of the
    channel-gated frame). Every gate is ``2·sigmoid(z)`` with a zero-initialised last layer, so the module starts
    as the exact identity.

    Args:
        dim: C, channels of the feature maps.
        reduction: Squeeze-excitation reduction; the hidden width is ``max(dim // reduction, 1)``.
        spatial_kernel: Odd kernel size of the spatial gate's convolution.
        temporal_kernel: Odd kernel size of the temporal gate's convolution over frames (zero padding at the ends).
    """

    def __init__(self, dim: int, reduction: int = 4, spatial_kernel: int = 7, temporal_kernel: int = 3) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"STC needs a positive dim, got {dim}")
        if reduction <= 0:
            raise ValueError(f"STC needs a positive reduction, got {reduction}")
        for name, kernel in (("spatial_kernel", spatial_kernel), ("temporal_kernel", temporal_kernel)):
            if kernel <= 0 or kernel % 2 == 0:
                raise ValueError(f"STC needs {name} to be a positive odd number (same-size padding), got {kernel}")
        self.dim = dim
        hidden = max(dim // reduction, 1)
        self.temporal = nn.Conv1d(dim, 1, temporal_kernel, padding=temporal_kernel // 2)  # g_t
        self.channel = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))  # g_c (SE)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)  # g_s
        for gate_output in (self.temporal, self.channel[2], self.spatial):  # 2·sigmoid(0) = 1: identity at start
            _zero_(gate_output)

    def temporal_gate(self, pooled: Tensor) -> Tensor:
        """The temporal gate of every frame of a sequence.

        Args:
            pooled: ``(B, T, C)`` spatially averaged feature maps.

        Returns:
            ``(B, T)`` gates ``g_t`` in (0, 2).
        """
        if pooled.dim() != 3 or pooled.shape[-1] != self.dim:
            raise ValueError(f"STC.temporal_gate expects pooled features (B, T, {self.dim}), got {tuple(pooled.shape)}")
        return 2 * torch.sigmoid(self.temporal(pooled.transpose(1, 2))).squeeze(1)

    def channel_gate(self, frames: Tensor) -> Tensor:
        """The channel gate ``g_c`` of frames ``(N, C, H, W)``: squeeze-excitation of the pooled frame, ``(N, C)``."""
        return 2 * torch.sigmoid(self.channel(frames.mean(dim=(-2, -1))))

    def spatial_gate(self, frames: Tensor) -> Tensor:
        """The spatial gate ``g_s`` of frames ``(N, C, H, W)``, from their channel-mean and channel-max maps.

        Returns:
            ``(N, 1, H, W)`` gates in (0, 2).
        """
        pooled_map = torch.cat([frames.mean(dim=1, keepdim=True), frames.amax(dim=1, keepdim=True)], dim=1)
        return 2 * torch.sigmoid(self.spatial(pooled_map))

    def forward_frames(self, frames: Tensor, temporal_gate: Tensor) -> Tensor:
        """Gate single frames whose temporal gates are already known (see :meth:`temporal_gate`).

        Args:
            frames: ``(N, C, H, W)`` frames, any selection of a sequence's flattened ``B·T`` frames.
            temporal_gate: ``(N,)`` the frames' temporal gates.

        Returns:
            ``(N, C, H, W)``.
        """
        if frames.dim() != 4 or frames.shape[1] != self.dim:
            raise ValueError(f"STC.forward_frames expects frames (N, {self.dim}, H, W), got {tuple(frames.shape)}")
        if temporal_gate.shape != frames.shape[:1]:
            raise ValueError(
                f"STC.forward_frames expects one temporal gate per frame, ({frames.shape[0]},), "
                f"got {tuple(temporal_gate.shape)}"
            )
        x = frames * temporal_gate[:, None, None, None]  # temporal gate
        x = x * self.channel_gate(x)[:, :, None, None]
        return x * self.spatial_gate(x)

    def forward(self, x: Tensor) -> Tensor:
        """Enhance a sequence of feature maps.

        Args:
            x: ``(B, T, C, H, W)``.

        Returns:
            ``(B, T, C, H, W)``.
        """
        if x.dim() != 5 or x.shape[2] != self.dim:
            raise ValueError(f"STC expects features (B, T, {self.dim}, H, W), got {tuple(x.shape)}")
        gate = self.temporal_gate(x.mean(dim=(-2, -1)))
        return self.forward_frames(x.flatten(0, 1), gate.flatten()).unflatten(0, x.shape[:2])


def entropy_guided_k(weights: Tensor, k_min: int, k_max: int) -> Tensor:
    """Eq. 9: the number of experts per routing vector, growing with the routing entropy.

    ``k = clamp(ceil(k_min + (k_max − k_min) · E / log N_e), k_min, k_max)`` with
    ``E = −Σ W log(W + 1e-8)``, computed in float64. With N_e = 1, ``E / log N_e`` is defined as 1 (k = k_max).
    Because of the ceiling, every W that is not (numerically) one-hot gets k ≥ k_min + 1 when k_min < k_max.

    Args:
        weights: ``(..., N_e)`` routing probabilities (rows sum to one).
        k_min: Experts for fully confident routing.
        k_max: Experts for uniform routing; ``k_min ≤ k_max ≤ N_e``.

    Returns:
        ``(...)`` int64, in ``[k_min, k_max]``; not differentiable.
    """
    num_experts = weights.shape[-1]
    if not 0 <= k_min <= k_max <= num_experts:
        raise ValueError(f"entropy_guided_k needs 0 ≤ k_min ≤ k_max ≤ N_e = {num_experts}, got {k_min}, {k_max}")
    w = weights.detach().double()
    if num_experts == 1:
        normalised = torch.ones_like(w[..., 0])  # one expert: no choice to be uncertain about
    else:
        entropy = -(w * torch.log(w + 1e-8)).sum(dim=-1)  # E
        normalised = entropy / math.log(num_experts)  # E_norm
    k = torch.ceil(k_min + (k_max - k_min) * normalised)
    return k.clamp(k_min, k_max).long()


def sparse_routing_weights(weights: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Keep each routing vector's k largest weights, zero the rest and renormalise (W̄ of Eq. 9).

    Ties are broken towards the lower expert index. Rows with k = 0 become all zero.

    Args:
        weights: ``(..., N_e)`` routing probabilities.
        k: ``(...)`` integer number of experts per row, in ``[0, N_e]``.

    Returns:
        ``(W̄, selected)``: ``(..., N_e)`` sparse weights (rows with k ≥ 1 sum to one; differentiable with respect
        to ``weights``) and the ``(..., N_e)`` boolean mask of the selected experts.
    """
    if k.shape != weights.shape[:-1]:
        raise ValueError(
            f"sparse_routing_weights needs one k per routing row, {tuple(weights.shape[:-1])}, got {tuple(k.shape)}"
        )
    order = torch.sort(weights.detach(), dim=-1, descending=True, stable=True).indices
    ranks = order.argsort(dim=-1)  # rank of each expert in its row (the inverse permutation)
    selected = ranks < k.unsqueeze(-1)
    kept = weights * selected
    total = kept.sum(dim=-1, keepdim=True)
    return kept / total.clamp_min(torch.finfo(weights.dtype).tiny), selected


class _CrossAttention(nn.Module):
    """One direction of an expert: the LayerNorms of its q, k and v inputs and ``MHA(q + p_q, k + p_k, v)``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_key = nn.LayerNorm(dim)
        self.norm_value = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        """Attention on token sequences ``(N, L, C)`` that are already normalised and gated; returns ``(N, L_q, C)``."""
        u, _ = self.attention(query + query_pos, key + key_pos, value, need_weights=False)
        return self.dropout(u)


def _norm_maps(norm: nn.LayerNorm, frames: Tensor) -> Tensor:
    """A per-token LayerNorm over the channels of frames ``(N, C, H, W)``."""
    return norm(frames.movedim(1, -1)).movedim(-1, 1)


def _tokens(frames: Tensor) -> Tensor:
    """``(N, C, H, W)`` → ``(N, H·W, C)``."""
    return frames.flatten(2).transpose(1, 2)


class SCMCExpert(nn.Module):
    """One SCMC expert (Eq. 7): normalised, STC-gated query, key and value, then per-frame cross-modal attention.

    The three enhancers are shared by both directions; each direction has its own attention and LayerNorms.

    Args:
        dim: C, channels of both modalities.
        heads: Attention heads; must divide ``dim``.
        dropout: Dropout on the attention weights and on the update.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.stc_query = STC(dim)  # STC_q^e
        self.stc_key = STC(dim)  # STC_k^e
        self.stc_value = STC(dim)  # STC_v^e
        self.visual_attention = _CrossAttention(dim, heads, dropout)  # visual queries, audio keys/values
        self.audio_attention = _CrossAttention(dim, heads, dropout)  # audio queries, visual keys/values

    def update(
        self,
        stream: Literal["visual", "audio"],
        query: Tensor,
        context: Tensor,
        frames: Tensor,
        query_pos: Tensor,
        context_pos: Tensor,
    ) -> Tensor:
        """The update ``u^e = F̄^e − F`` of one stream on some of its frames (Eq. 7 without the residual).

        ``u = MHA(STC_q(LN_q(F)) + p, STC_k(LN_k(G)) + p', STC_v(LN_v(G)))`` with G the other modality. The
        temporal gates read the spatially pooled raw features of the whole sequences (they look at neighbouring
        frames); everything else runs on the selected frames only.

        Args:
            stream: Which stream is updated (selects the direction's attention and LayerNorms).
            query: ``(B, T, C, H, W)`` the updated stream's features.
            context: ``(B, T, C, h, w)`` the other modality's features.
            frames: ``(N,)`` int64 indices into the flattened ``B·T`` frames to compute.
            query_pos: ``(H·W, C)`` positional encoding of the query tokens.
            context_pos: ``(h·w, C)`` positional encoding of the context tokens.

        Returns:
            ``(N, C, H, W)`` the update of the selected frames.
        """
        if stream not in ("visual", "audio"):
            raise ValueError(f"SCMCExpert.update stream must be 'visual' or 'audio', got {stream!r}")
        attention = self.visual_attention if stream == "visual" else self.audio_attention
        query_pooled, context_pooled = query.mean(dim=(-2, -1)), context.mean(dim=(-2, -1))  # (B, T, C)
        gate_q = self.stc_query.temporal_gate(query_pooled).flatten().index_select(0, frames)
        gate_k = self.stc_key.temporal_gate(context_pooled).flatten().index_select(0, frames)
        gate_v = self.stc_value.temporal_gate(context_pooled).flatten().index_select(0, frames)
        query_frames = query.flatten(0, 1).index_select(0, frames)  # (N, C, H, W)
        context_frames = context.flatten(0, 1).index_select(0, frames)  # (N, C, h, w)
        # normalise first, then gate (a gate before the per-token LayerNorm would be cancelled by it)
        q = self.stc_query.forward_frames(_norm_maps(attention.norm_query, query_frames), gate_q)
        k = self.stc_key.forward_frames(_norm_maps(attention.norm_key, context_frames), gate_k)
        v = self.stc_value.forward_frames(_norm_maps(attention.norm_value, context_frames), gate_v)
        u = attention(_tokens(q), _tokens(k), _tokens(v), query_pos, context_pos)  # (N, H·W, C)
        return u.transpose(1, 2).reshape(query_frames.shape)


class _Router(nn.Module):
    """Eq. 8 routing logits of the other stream: ``MLP(Pool(STC(F)))`` per frame."""

    def __init__(self, dim: int, num_experts: int) -> None:
        super().__init__()
        self.stc = STC(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_experts))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.stc(x).mean(dim=(-2, -1)))  # (B, T, N_e)


@dataclass
class SCMCOutput:
    """What :class:`SCMC` returns.

    Attributes:
        visual: ``(B, T, C, H, W)`` fused visual features F̃_v.
        audio: ``(B, T, C, h, w)`` fused audio features F̃_a.
        balance_loss: Scalar load-balancing loss, already multiplied by ``balance_weight`` (0 when the weight is 0).
        k_visual: ``(B, T)`` int64, experts used per frame by the visual stream.
        k_audio: ``(B, T)`` int64, experts used per frame by the audio stream.
        usage_visual: ``(N_e,)`` fraction of the ``B·T`` frames whose visual stream selected each expert
            (sums to the mean of ``k_visual``).
        usage_audio: ``(N_e,)`` the same for the audio stream.
        weights_visual: ``(B, T, N_e)`` sparse renormalised routing weights W̄_v.
        weights_audio: ``(B, T, N_e)`` sparse renormalised routing weights W̄_a.
        entropy_loss: Scalar routing-entropy penalty, already multiplied by ``entropy_weight`` (0 when the weight
            is 0).
        selected_visual: ``(B, T, N_e)`` bool, the experts each frame of the visual stream selected.
        selected_audio: ``(B, T, N_e)`` bool, the same for the audio stream.
        k_histogram_visual: ``(N_e + 1,)`` int64, number of frames with k = 0, 1, ..., N_e in the visual stream.
        k_histogram_audio: ``(N_e + 1,)`` int64, the same for the audio stream.
    """

    visual: Tensor
    audio: Tensor
    balance_loss: Tensor
    k_visual: Tensor
    k_audio: Tensor
    usage_visual: Tensor
    usage_audio: Tensor
    weights_visual: Tensor
    weights_audio: Tensor
    entropy_loss: Tensor
    selected_visual: Tensor
    selected_audio: Tensor
    k_histogram_visual: Tensor
    k_histogram_audio: Tensor

    @property
    def auxiliary_loss(self) -> Tensor:
        """All auxiliary training losses, already weighted: ``balance_loss + entropy_loss``."""
        return self.balance_loss + self.entropy_loss


def _balance_kl(weights: Tensor) -> Tensor:
    """``KL(mean routing ‖ uniform) = Σ_e p̄_e log(p̄_e · N_e)``, clamped at 0 against rounding."""
    mean = weights.flatten(0, -2).mean(dim=0)
    return torch.xlogy(mean, mean * weights.shape[-1]).sum().clamp_min(0.0)


def _mean_normalised_entropy(weights: Tensor) -> Tensor:
    """Mean over routing rows of ``E_norm = −Σ_e W_e log(W_e + 1e-8) / log N_e`` (Eq. 9); 0 for N_e = 1."""
    num_experts = weights.shape[-1]
    if num_experts == 1:
        return weights.new_zeros(())
    entropy = -(weights * torch.log(weights + 1e-8)).sum(dim=-1)
    return entropy.mean() / math.log(num_experts)


def _k_histogram(k: Tensor, num_experts: int) -> Tensor:
    """``(N_e + 1,)`` counts of k = 0..N_e, on k's device without a host synchronisation (unlike CUDA bincount)."""
    values = torch.arange(num_experts + 1, device=k.device)
    return (k.flatten()[:, None] == values).sum(dim=0)


class SCMC(nn.Module):
    """Sparse cross-modal mixture of experts (FAVS Eqs. 7–10), each stream routed per frame by the other modality.

    Args:
        dim: C, channels of both modalities' feature maps; a multiple of 4 (sine positions) divisible by ``heads``.
        num_experts: N_e, experts (the paper's ablation peaks at 4).
        heads: Attention heads of every expert.
        k_min: Experts used by a frame with fully confident routing (Eq. 9).
        k_max: Experts used by a frame with uniform routing (default ``num_experts``); ``k_min ≤ k_max ≤ N_e``.
        top_k: A fixed number of experts for every frame instead of the entropy-guided k (``0 ≤ top_k ≤ N_e``).
        balance_weight: Weight of the load-balancing loss (0 disables it).
        dropout: Dropout on the experts' attention weights and updates.
        entropy_weight: Weight of the per-frame routing-entropy penalty (0 disables it), which makes each frame's
            routing confident so that Eq. 9 gives k < N_e.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int = 4,
        heads: int = 8,
        k_min: int = 0,
        k_max: int | None = None,
        top_k: int | None = None,
        balance_weight: float = 0.01,
        dropout: float = 0.0,
        entropy_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"SCMC needs at least one expert, got num_experts={num_experts}")
        if heads < 1 or dim < 1 or dim % heads != 0:
            raise ValueError(f"SCMC needs heads ({heads}) to be positive and divide dim ({dim})")
        if dim % 4 != 0:
            raise ValueError(f"SCMC needs dim to be a multiple of 4 for the 2-D sine positions, got {dim}")
        k_max = num_experts if k_max is None else k_max
        if not 0 <= k_min <= k_max <= num_experts:
            raise ValueError(
                f"SCMC needs 0 ≤ k_min ≤ k_max ≤ num_experts ({num_experts}), got k_min={k_min}, k_max={k_max}"
            )
        if top_k is not None and not 0 <= top_k <= num_experts:
            raise ValueError(f"SCMC needs 0 ≤ top_k ≤ num_experts ({num_experts}) or None, got top_k={top_k}")
        if balance_weight < 0:
            raise ValueError(f"SCMC needs a non-negative balance_weight, got {balance_weight}")
        if not entropy_weight >= 0:  # also rejects NaN
            raise ValueError(f"SCMC needs a non-negative entropy_weight, got {entropy_weight}")
        if not 0 <= dropout < 1:
            raise ValueError(f"SCMC needs dropout in [0, 1), got {dropout}")
        self.dim = dim
        self.num_experts = num_experts
        self.heads = heads
        self.k_min = k_min
        self.k_max = k_max
        self.top_k = top_k
        self.balance_weight = balance_weight
        self.entropy_weight = entropy_weight
        self.experts = nn.ModuleList([SCMCExpert(dim, heads, dropout) for _ in range(num_experts)])
        # MLP_a(STC_a(F_a)) → W_v and MLP_v(STC_v(F_v)) → W_a; a single expert has nothing to route (W ≡ 1).
        self.router_from_audio = _Router(dim, num_experts) if num_experts > 1 else None
        self.router_from_visual = _Router(dim, num_experts) if num_experts > 1 else None

    def _check(self, visual: Tensor, audio: Tensor) -> None:
        if visual.dim() != 5 or visual.shape[2] != self.dim:
            raise ValueError(f"SCMC expects visual features (B, T, {self.dim}, H, W), got {tuple(visual.shape)}")
        if audio.dim() != 5 or audio.shape[2] != self.dim or audio.shape[:2] != visual.shape[:2]:
            raise ValueError(
                f"SCMC expects audio features (B, T, {self.dim}, h, w) with the visual B, T = "
                f"{tuple(visual.shape[:2])}, got {tuple(audio.shape)}"
            )

    def route(self, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 9: number of experts and sparse weights from routing probabilities.

        Args:
            weights: ``(B, T, N_e)`` routing probabilities W.

        Returns:
            ``(k, W̄, selected)``: ``(B, T)`` int64, ``(B, T, N_e)`` sparse renormalised weights, ``(B, T, N_e)``
            boolean selection.
        """
        if self.top_k is not None:
            k = torch.full(weights.shape[:-1], self.top_k, dtype=torch.long, device=weights.device)
        else:
            k = entropy_guided_k(weights, self.k_min, self.k_max)
        sparse, selected = sparse_routing_weights(weights, k)
        return k, sparse, selected

    def _dispatch(self, selected_visual: Tensor, selected_audio: Tensor) -> list[list[Tensor]]:
        """The frames each expert runs on, per stream, with one host synchronisation for both streams.

        Args:
            selected_visual: ``(B, T, N_e)`` bool selection of the visual stream.
            selected_audio: ``(B, T, N_e)`` bool selection of the audio stream.

        Returns:
            ``[visual, audio]``, each a list over experts of ``(n_e,)`` int64 indices into the flattened ``B·T``
            frames, in ascending order.
        """
        masks = torch.stack([selected_visual.flatten(0, 1).T, selected_audio.flatten(0, 1).T])  # (2, N_e, B·T)
        counts = masks.sum(dim=-1).tolist()  # the one host synchronisation
        # stable sort of "not selected": the selected frames of each (stream, expert) first, in frame order
        order = torch.sort((~masks).to(torch.uint8), dim=-1, stable=True).indices
        return [[order[s, e, :n] for e, n in enumerate(row)] for s, row in enumerate(counts)]

    def _mixture(
        self,
        stream: Literal["visual", "audio"],
        query: Tensor,
        context: Tensor,
        sparse: Tensor,
        frames_per_expert: list[Tensor] | None,
        query_pos: Tensor,
        context_pos: Tensor,
    ) -> Tensor:
        """Eq. 10 for one stream, ``F + Σ_e W̄^e u^e``, each expert on its frames (``None``: all frames, dense)."""
        out = query.flatten(0, 1)
        weights = sparse.flatten(0, 1)  # (B·T, N_e)
        all_frames = torch.arange(out.shape[0], device=out.device)
        for e, module in enumerate(self.experts):
            expert = cast(SCMCExpert, module)
            frames = all_frames if frames_per_expert is None else frames_per_expert[e]
            if frames.numel() == 0:
                continue  # no frame routed here: the expert is not run
            u = expert.update(stream, query, context, frames, query_pos, context_pos)
            update = weights.index_select(0, frames)[:, e, None, None, None] * u
            out = out.index_add(0, frames, update.to(out.dtype))  # scatter back, weighted (autocast: u may be bf16)
        return out.unflatten(0, query.shape[:2])

    def _routing(self, router: "_Router | None", other: Tensor) -> Tensor:
        """Eq. 8: ``softmax(MLP(Pool(STC(F))))`` of the other stream, ``(B, T, N_e)``; all ones for one expert."""
        if router is None:
            return other.new_ones((*other.shape[:2], 1))
        return torch.softmax(router(other), dim=-1)

    def forward(self, visual: Tensor, audio: Tensor, dense: bool = False) -> SCMCOutput:
        """Fuse the two streams through the routed experts.

        Args:
            visual: ``F_v``, ``(B, T, C, H, W)`` per-frame visual feature maps.
            audio: ``F_a``, ``(B, T, C, h, w)`` per-frame audio feature maps.
            dense: Run every expert on every frame (a reference for the sparse dispatch; same result, and no host
                synchronisation).

        Returns:
            :class:`SCMCOutput`; the fused features have the input shapes.
        """
        self._check(visual, audio)
        C, H, W = visual.shape[-3:]
        h, w = audio.shape[-2:]
        pos_visual = sine_positional_encoding_2d(H, W, C, device=visual.device, dtype=visual.dtype)
        pos_audio = sine_positional_encoding_2d(h, w, C, device=audio.device, dtype=audio.dtype)

        routing_visual = self._routing(self.router_from_audio, audio)  # W_v (Eq. 8)
        routing_audio = self._routing(self.router_from_visual, visual)  # W_a
        k_visual, sparse_visual, selected_visual = self.route(routing_visual)  # (Eq. 9)
        k_audio, sparse_audio, selected_audio = self.route(routing_audio)

        frames_visual: list[Tensor] | None = None
        frames_audio: list[Tensor] | None = None
        if not dense:
            frames_visual, frames_audio = self._dispatch(selected_visual, selected_audio)
        out_visual = self._mixture("visual", visual, audio, sparse_visual, frames_visual, pos_visual, pos_audio)
        out_audio = self._mixture("audio", audio, visual, sparse_audio, frames_audio, pos_audio, pos_visual)  # Eq. 10

        if self.balance_weight > 0:
            balance_loss = self.balance_weight * (_balance_kl(routing_visual) + _balance_kl(routing_audio))
        else:
            balance_loss = visual.new_zeros(())
        if self.entropy_weight > 0:
            entropy = _mean_normalised_entropy(routing_visual) + _mean_normalised_entropy(routing_audio)
            entropy_loss = self.entropy_weight * entropy
        else:
            entropy_loss = visual.new_zeros(())
        return SCMCOutput(
            visual=out_visual,
            audio=out_audio,
            balance_loss=balance_loss,
            k_visual=k_visual,
            k_audio=k_audio,
            usage_visual=selected_visual.flatten(0, 1).to(visual.dtype).mean(dim=0),
            usage_audio=selected_audio.flatten(0, 1).to(audio.dtype).mean(dim=0),
            weights_visual=sparse_visual,
            weights_audio=sparse_audio,
            entropy_loss=entropy_loss,
            selected_visual=selected_visual,
            selected_audio=selected_audio,
            k_histogram_visual=_k_histogram(k_visual, self.num_experts),
            k_histogram_audio=_k_histogram(k_audio, self.num_experts),
        )
