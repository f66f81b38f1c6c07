"""Efficient Multi-Scale Attention (EMA; Ouyang et al., ICASSP 2023), DGFNet's audio-attention block.

DGFNet places one EMA block, residually, after each up level of the U-Net
decoder. Notation of the paper (Sec. 3): the input ``X ∈ R^{C×H×W}`` (here H = frequency rows, W = time frames)
is split into G groups of ``c = C/G`` channels, ``X = [X_0, …, X_{G−1}]``; every group is processed alone, with
weights shared by all groups (the groups are folded into the batch dimension):

1×1 branch — coordinate attention from the two 1-D global poolings (Sec. 3, Eq. 1–2)::

    z^H_c(h) = 1/W Σ_w x_c(h, w)            (average along W → a C×H×1 "column")
    z^W_c(w) = 1/H Σ_h x_c(h, w)            (average along H → a C×1×W "row")
    [a^H; a^W] = Conv1×1([z^H; z^W])        (concatenate along the spatial axis, one shared 1×1 conv, split)
    X1 = GroupNorm(X ⊙ σ(a^H) ⊙ σ(a^W))     (re-weight by both sigmoid gates, broadcast over W resp. H)

3×3 branch — local multi-scale context::

    X2 = Conv3×3(X)

Cross-spatial learning — each branch's channel descriptor (global average pool, softmax over the c channels)
is matrix-multiplied with the *other* branch's spatial map, giving two 1×H·W spatial attention maps::

    Y1 = softmax(GAP(X1)) · reshape(X2, c × HW)     (1 × c) · (c × HW) → 1 × HW
    Y2 = softmax(GAP(X2)) · reshape(X1, c × HW)
    A  = σ(Y1 + Y2) ∈ (0, 1)^{H×W}                  (one map per group, shared by its c channels)
    EMA(X) = X ⊙ A

Residual use (the choice made here). :class:`EMAttention` is the paper's block, ``X ⊙ A``: a pure
re-weighting, bounded by the input (``|EMA(X)| ≤ |X|`` element-wise). DGFNet uses it residually; the
residual lives in the wrapper :class:`ResidualEMA`::

    Y = X + γ ⊙ EMA(X),    γ ∈ R^C learnable, initialised to 0 (``init_scale``)

Why a zero-initialised scale rather than the plain ``X + X ⊙ A`` or ``X ⊙ A``: at initialisation ``A ≈ σ(·)``
is neither 0 nor 1 but a data-dependent map around 0.5, so the plain multiplicative form halves every decoder
activation (and ``X + X ⊙ A`` scales it by ≈1.5) in an input-dependent way, seven times in a row in the
paper's U-Net, which changes the statistics the following BatchNorm/conv layers see. With ``γ = 0`` the block
is *exactly* the identity at initialisation (LayerScale/ReZero argument), so a DGFNet starts as the plain
U-Net; ``∂L/∂γ = EMA(X) · ∂L/∂Y ≠ 0`` from the first step, after which the EMA weights receive gradients too.
``init_scale=1.0`` gives the plain ``X + EMA(X)`` when wanted.
"""

import torch
from torch import Tensor, nn


class EMAttention(nn.Module):
    """The EMA block, ``X ⊙ A`` with a per-group spatial attention map ``A ∈ (0, 1)`` (module docstring).

    The 1×1 conv, 3×3 conv and GroupNorm are shared by the G groups (the paper folds the groups into the batch
    dimension), so each group is processed independently of the others, and of the other samples in the batch:
    there is no batch statistic (GroupNorm with one channel per group normalises each channel of each sample
    over its own H×W).

    Args:
        channels: C, the input and output channels; must be divisible by ``groups``.
        groups: G, the number of channel groups (the paper's "factor", 8 by default, 32 in some of its tables).
    """

    def __init__(self, channels: int, groups: int = 8) -> None:
        super().__init__()
        if channels <= 0 or groups <= 0:
            raise ValueError(f"EMAttention needs positive channels and groups, got channels={channels}, {groups=}")
        if channels % groups:
            raise ValueError(f"EMAttention channels ({channels}) must be divisible by groups ({groups})")
        self.channels = channels
        self.groups = groups
        c = channels // groups
        # 1×1 branch: one 1×1 conv shared by the H- and W-pooled descriptors (Eq. 1–2), then a GroupNorm with one
        # channel per group (= per-channel normalisation over H×W with an affine, as in the paper).
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.norm = nn.GroupNorm(c, c)
        # 3×3 branch: local context at a second scale.
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def attention_weights(self, x: Tensor) -> Tensor:
        """The spatial attention maps ``A = σ(Y1 + Y2)``: ``(B, C, H, W)`` → ``(B, G, H, W)``, values in (0, 1)."""
        B, C, H, W = x.shape
        if self.channels != C:
            raise ValueError(f"EMAttention built for {self.channels} channels got input with {C}")
        G = self.groups
        xg = x.reshape(B * G, C // G, H, W)  # X_g, groups folded into the batch dimension

        # 1×1 branch, coordinate attention (Eq. 1–2).
        z_h = xg.mean(dim=3, keepdim=True)  # z^H: average along W → (BG, c, H, 1)
        z_w = xg.mean(dim=2, keepdim=True).transpose(2, 3)  # z^W: average along H → (BG, c, W, 1)
        a = self.conv1x1(torch.cat([z_h, z_w], dim=2))  # concatenate along space, shared 1×1 conv: (BG, c, H+W, 1)
        a_h, a_w = torch.split(a, [H, W], dim=2)  # split back into the H and W descriptors
        x1 = self.norm(xg * a_h.sigmoid() * a_w.transpose(2, 3).sigmoid())  # X1 = GN(X ⊙ σ(a^H) ⊙ σ(a^W))

        # 3×3 branch.
        x2 = self.conv3x3(xg)  # X2 = Conv3×3(X)

        # Cross-spatial learning: softmax over channels of one branch's GAP, times the other branch's map.
        s1 = x1.mean(dim=(2, 3)).softmax(dim=1).unsqueeze(1)  # softmax(GAP(X1)): (BG, 1, c)
        s2 = x2.mean(dim=(2, 3)).softmax(dim=1).unsqueeze(1)  # softmax(GAP(X2)): (BG, 1, c)
        y1 = torch.bmm(s1, x2.flatten(2))  # Y1 = softmax(GAP(X1)) · X2: (BG, 1, HW)
        y2 = torch.bmm(s2, x1.flatten(2))  # Y2 = softmax(GAP(X2)) · X1: (BG, 1, HW)
        return (y1 + y2).sigmoid().reshape(B, G, H, W)  # A = σ(Y1 + Y2)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``X ⊙ A`` of the same shape (each group's channels share one map)."""
        B, C, H, W = x.shape
        weights = self.attention_weights(x)
        return (x.reshape(B, self.groups, C // self.groups, H, W) * weights.unsqueeze(2)).reshape(B, C, H, W)


class ResidualEMA(nn.Module):
    """Residual EMA block used after each DGFNet decoder up level: ``Y = X + γ ⊙ EMA(X)``.

    ``γ`` is a learnable per-channel scale; with the default ``init_scale=0`` the block is exactly the identity
    at initialisation (see the module docstring for why), with ``init_scale=1`` it is the plain ``X + EMA(X)``.

    Args:
        channels: C, the input and output channels; must be divisible by ``groups``.
        groups: G, the number of EMA channel groups.
        init_scale: Initial value of every entry of γ.
    """

    def __init__(self, channels: int, groups: int = 8, init_scale: float = 0.0) -> None:
        super().__init__()
        self.attention = EMAttention(channels, groups)
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), float(init_scale)))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``X + γ ⊙ EMA(X)`` of the same shape."""
        return x + self.scale * self.attention(x)
