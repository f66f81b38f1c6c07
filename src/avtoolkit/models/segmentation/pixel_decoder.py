"""Multi-scale deformable attention and the Mask2Former pixel decoder built on it, in plain PyTorch.

Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3). A query ``z_q`` with a normalised
reference point ``p̂_q ∈ [0, 1]²`` (x, y) reads ``P`` sampled points from each of ``L`` feature levels ``x^l``, per
head ``m``:

    Δp_mlqk = W^Δ z_q                                              (sampling offsets, in pixels of level l)
    A_mlqk  = softmax_{l,k}(W^A z_q),  Σ_l Σ_k A_mlqk = 1          (attention weights over levels × points)
    u_mq    = Σ_l Σ_k A_mlqk · W'_m x^l(φ_l(p̂_q) + Δp_mlqk)         (x^l(·): bilinear sample of the projected
                                                                     values; φ_l scales p̂_q to level l)
    out_q   = W_o [u_1q; …; u_Mq]                                  (heads concatenated, output projection)

A sampling location ``s = p̂_q + Δp / (W_l, H_l)`` (normalised) is read with ``F.grid_sample(2s − 1,
align_corners=False)``, so ``s = ((j + 0.5) / W_l, (i + 0.5) / H_l)`` is exactly the centre of pixel ``(i, j)`` and
locations outside the map read zeros. Initialisation as in Deformable DETR: ``W^Δ = 0`` with a bias that puts
head ``m``'s ``k``-th point ``k + 1`` pixels away along direction ``2πm / M`` (a ring of directions, growing with
the point index), ``W^A = 0`` (uniform weights at start), Xavier-uniform ``W'`` and ``W_o``.

The pixel decoder (Mask2Former's ``MSDeformAttnPixelDecoder``) on backbone maps ``C_2 … C_5`` at strides 4 … 32:

    X^l = GN(Conv1×1(C_l)),  l ∈ {5, 4, 3}                          (input projections to ``dim``)
    pos^l = sine(H_l, W_l) + e_l                                    (2-D sine encoding + learned level embedding)
    Z   = EncoderLayer^{n}([X^5; X^4; X^3], pos)                    (n post-norm layers: z ← LN(z + MSDA(z + pos,
                                                                     z)); z ← LN(z + FFN(z)); every pixel of
                                                                     every level is a query, its own centre its
                                                                     reference point on all levels)
    P_3, P_2, P_1 = split(Z)                                        (strides 32, 16, 8; coarse to fine)
    Y   = ReLU(GN(Conv3×3(GN(Conv1×1(C_2)) + Up(P_1))))             (FPN step to stride 4; Up: bilinear)
    mask_features = Conv1×1(Y)                                      (per-pixel embeddings, ``mask_dim``)

Only the sampling core differs from the reference implementation, which uses a custom CUDA kernel; this one is
``grid_sample`` per level (slower, the same result up to floating point).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avtoolkit.fusion.attention import sine_positional_encoding_2d

_GROUPS = 32  # GroupNorm groups of Mask2Former (fewer, gcd(32, dim), when dim is not a multiple of 32)
_LEVELS = 3  # levels the encoder attends over: strides 32, 16, 8


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{owner} needs {name} ≥ 1, got {value}")


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR Eq. 3), sampled with ``F.grid_sample``.

    Args:
        dim: Width of queries and values; must be divisible by ``heads``.
        levels: L, the number of feature levels in the value.
        heads: M, attention heads.
        points: P, sampling points per head and level.

    Raises:
        ValueError: a count is not positive, or ``heads`` does not divide ``dim``.
    """

    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        _check_positive("MultiScaleDeformableAttention", dim=dim, levels=levels, heads=heads, points=points)
        if dim % heads != 0:
            raise ValueError(
                f"MultiScaleDeformableAttention needs heads ({heads}) to divide dim ({dim}); pick heads among the "
                "divisors of dim"
            )
        self.dim = dim
        self.levels = levels
        self.heads = heads
        self.points = points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)  # W^Δ
        self.attention_weights = nn.Linear(dim, heads * levels * points)  # W^A
        self.value_proj = nn.Linear(dim, dim)  # W'
        self.output_proj = nn.Linear(dim, dim)  # W_o
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation (see the module docstring)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float64) * (2 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (M, 2), (x, y)
        directions = directions / directions.abs().amax(dim=-1, keepdim=True)  # on the square: max(|x|, |y|) = 1
        distance = torch.arange(1, self.points + 1, dtype=torch.float64)  # point k sits k + 1 pixels out
        ring = directions[:, None, None, :] * distance[None, None, :, None]  # (M, 1, P, 2)
        ring = ring.expand(self.heads, self.levels, self.points, 2)  # the same ring on every level
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def sampling(self, query: Tensor, reference_points: Tensor, spatial_shapes: Tensor) -> tuple[Tensor, Tensor]:
        """Where each query samples and with which weights.

        Args:
            query: ``(N, Lq, dim)``.
            reference_points: ``(N, Lq, levels, 2)`` normalised (x, y) in [0, 1].
            spatial_shapes: ``(levels, 2)`` long, ``(H_l, W_l)`` of each level.

        Returns:
            ``(locations, weights)``: normalised sampling locations ``(N, Lq, heads, levels, points, 2)`` (x, y)
            and attention weights ``(N, Lq, heads, levels, points)``, summing to 1 over levels × points.
        """
        N, Lq = query.shape[:2]
        M, L, P = self.heads, self.levels, self.points
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)  # Δp_mlqk in pixels of level l
        logits = self.attention_weights(query).view(N, Lq, M, L * P)
        weights = logits.softmax(dim=-1).view(N, Lq, M, L, P)  # A_mlqk, softmax over levels × points
        size_xy = spatial_shapes.flip(-1).to(offsets.dtype)  # (W_l, H_l): offsets are (x, y) pixels
        locations = reference_points[:, :, None, :, None, :] + offsets / size_xy[None, None, None, :, None, :]
        return locations, weights

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        value_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from each query to sampled points of the multi-scale value.

        Args:
            query: ``(N, Lq, dim)`` queries ``z_q`` (with their positional encoding already added).
            reference_points: ``(N, Lq, levels, 2)`` normalised (x, y) in [0, 1] on each level.
            value: ``(N, Lv, dim)`` the levels flattened row-major and concatenated, ``Lv = Σ_l H_l·W_l``.
            spatial_shapes: ``(levels, 2)`` long, ``(H_l, W_l)`` of each level.
            level_start_index: ``(levels,)`` long, where each level starts in ``value``.
            value_padding_mask: ``(N, Lv)`` boolean, ``True`` at padded positions (their values read as zero).

        Returns:
            ``(N, Lq, dim)``.
        """
        self._check(query, reference_points, value, spatial_shapes, level_start_index, value_padding_mask)
        N, Lq = query.shape[:2]
        M, L, P = self.heads, self.levels, self.points
        head_dim = self.dim // M
        projected = self.value_proj(value)  # W' x
        if value_padding_mask is not None:
            projected = projected.masked_fill(value_padding_mask[..., None], 0.0)
        locations, weights = self.sampling(query, reference_points, spatial_shapes)
        grids = 2 * locations - 1  # grid_sample's [-1, 1] coordinates (align_corners=False)
        sampled = []
        level_starts = zip(spatial_shapes.tolist(), level_start_index.tolist(), strict=True)
        for level, ((height, width), start) in enumerate(level_starts):
            level_value = projected[:, start : start + height * width]  # (N, H·W, dim)
            level_value = level_value.view(N, height, width, M, head_dim).permute(0, 3, 4, 1, 2)
            level_value = level_value.reshape(N * M, head_dim, height, width)
            grid = grids[:, :, :, level].transpose(1, 2).reshape(N * M, Lq, P, 2)
            # Sample in the wider of the two dtypes (fp32 locations under autocast: fp16 would misplace them).
            dtype = torch.promote_types(level_value.dtype, grid.dtype)
            sampled.append(
                F.grid_sample(
                    level_value.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False
                )
            )
        values = torch.stack(sampled, dim=-2).flatten(-2)  # (N·M, head_dim, Lq, L·P): x^l(φ_l(p̂_q) + Δp_mlqk)
        weights = weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
        heads = (values * weights).sum(dim=-1)  # u_mq, (N·M, head_dim, Lq)
        heads = heads.view(N, M * head_dim, Lq).transpose(1, 2)  # [u_1q; …; u_Mq], (N, Lq, dim)
        return self.output_proj(heads)

    def _check(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        value_padding_mask: Tensor | None,
    ) -> None:
        name = "MultiScaleDeformableAttention"
        if query.dim() != 3 or query.shape[-1] != self.dim:
            raise ValueError(f"{name} expects query (N, Lq, {self.dim}), got {tuple(query.shape)}")
        N, Lq = query.shape[:2]
        if tuple(reference_points.shape) != (N, Lq, self.levels, 2):
            raise ValueError(
                f"{name} expects reference_points (N, Lq, levels, 2) = {(N, Lq, self.levels, 2)}, got "
                f"{tuple(reference_points.shape)}"
            )
        if tuple(spatial_shapes.shape) != (self.levels, 2) or tuple(level_start_index.shape) != (self.levels,):
            raise ValueError(
                f"{name} expects spatial_shapes ({self.levels}, 2) and level_start_index ({self.levels},), got "
                f"{tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}"
            )
        sizes = spatial_shapes.prod(dim=-1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        if not torch.equal(starts.cpu(), level_start_index.cpu()):
            raise ValueError(
                f"{name}: level_start_index {level_start_index.tolist()} does not match spatial_shapes "
                f"{spatial_shapes.tolist()} (expected {starts.tolist()})"
            )
        if value.dim() != 3 or tuple(value.shape) != (N, int(sizes.sum()), self.dim):
            raise ValueError(
                f"{name} expects value (N, Σ H_l·W_l, dim) = {(N, int(sizes.sum()), self.dim)}, got "
                f"{tuple(value.shape)}"
            )
        if value_padding_mask is not None and (
            value_padding_mask.dtype != torch.bool or tuple(value_padding_mask.shape) != tuple(value.shape[:2])
        ):
            raise ValueError(
                f"{name} expects a boolean value_padding_mask {tuple(value.shape[:2])}, got "
                f"{value_padding_mask.dtype} {tuple(value_padding_mask.shape)}"
            )


class DeformableEncoderLayer(nn.Module):
    """One post-norm deformable self-attention encoder layer (Deformable DETR's encoder layer).

        z ← LN_1(z + Dropout(MSDA(z + pos, p̂, z)))
        z ← LN_2(z + Dropout(Linear(Dropout(ReLU(Linear(z))))))

    Args:
        dim: Model width.
        levels: Feature levels attended over.
        heads: Attention heads; must divide ``dim``.
        points: Sampling points per head and level.
        ffn_dim: Hidden width of the feed-forward network.
        dropout: Dropout after the attention and inside/after the FFN.
    """

    def __init__(self, dim: int, levels: int, heads: int, points: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = MultiScaleDeformableAttention(dim, levels, heads, points)
        self.dropout_attention = nn.Dropout(dropout)
        self.norm_attention = nn.LayerNorm(dim)  # LN_1
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)
        )
        self.norm_ffn = nn.LayerNorm(dim)  # LN_2

    def forward(
        self,
        tokens: Tensor,
        position: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """``(N, Lv, dim)`` tokens of all levels (and their ``(N, Lv, dim)`` positions) → ``(N, Lv, dim)``."""
        update = self.self_attention(
            tokens + position, reference_points, tokens, spatial_shapes, level_start_index, padding_mask
        )
        tokens = self.norm_attention(tokens + self.dropout_attention(update))
        return self.norm_ffn(tokens + self.ffn(tokens))


def _conv_fill(block: nn.Module) -> None:
    """Detectron2's ``c2_xavier_fill`` on every conv of ``block``: Kaiming-uniform with ``a = 1``, zero bias."""
    for conv in block.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder: a deformable-attention encoder over strides 32, 16, 8 and an FPN step to 4.

    Args:
        in_channels: Channels of the backbone maps at strides 4, 8, 16, 32 (fine to coarse), four of them.
        dim: Width of the encoder and of the multi-scale outputs (C = 256 in Mask2Former and FAVS); a multiple of
            4 (sine encoding) divisible by ``heads``.
        mask_dim: Channels of the stride-4 per-pixel embeddings ``mask_features``.
        encoder_layers: Deformable self-attention encoder layers (0: projections and FPN only).
        heads: Attention heads of the deformable attention.
        points: Sampling points per head and level.
        ffn_dim: Hidden width of the encoder layers' feed-forward networks.
        dropout: Dropout inside the encoder layers.

    Raises:
        ValueError: ``in_channels`` is not four positive counts, or a size argument does not fit (see above).
    """

    level_embed: Tensor

    def __init__(
        self,
        in_channels: list[int],
        dim: int = 256,
        mask_dim: int = 256,
        encoder_layers: int = 6,
        heads: int = 8,
        points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = "MSDeformAttnPixelDecoder"
        if len(in_channels) != 4 or any(c < 1 for c in in_channels):
            raise ValueError(
                f"{name} needs in_channels for the four maps at strides 4, 8, 16, 32 (positive counts), got "
                f"{list(in_channels)}"
            )
        _check_positive(name, dim=dim, mask_dim=mask_dim, heads=heads, points=points, ffn_dim=ffn_dim)
        if encoder_layers < 0:
            raise ValueError(f"{name} needs encoder_layers ≥ 0, got {encoder_layers}")
        if dim % 4 != 0 or dim % heads != 0:
            raise ValueError(
                f"{name} needs dim ({dim}) to be a multiple of 4 (for the sine positional encoding) and of heads "
                f"({heads})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name} needs dropout in [0, 1), got {dropout}")
        self.in_channels = list(in_channels)
        self.dim = dim
        self.mask_dim = mask_dim
        groups = math.gcd(_GROUPS, dim)
        # X^l = GN(Conv1×1(C_l)) for C_5, C_4, C_3 (coarse to fine, the encoder's level order).
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, dim, kernel_size=1), nn.GroupNorm(groups, dim))
            for channels in reversed(self.in_channels[1:])
        )
        self.level_embed = nn.Parameter(torch.empty(_LEVELS, dim))  # e_l
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(dim, _LEVELS, heads, points, ffn_dim, dropout) for _ in range(encoder_layers)
        )
        # FPN step at stride 4: lateral GN(Conv1×1(C_2)), output ReLU(GN(Conv3×3(·))).
        self.lateral_conv = nn.Sequential(
            nn.Conv2d(self.in_channels[0], dim, kernel_size=1, bias=False), nn.GroupNorm(groups, dim)
        )
        self.output_conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False), nn.GroupNorm(groups, dim), nn.ReLU()
        )
        self.mask_features = nn.Conv2d(dim, mask_dim, kernel_size=1)
        self.reset_parameters()

    def no_weight_decay(self) -> set[str]:
        """The level embeddings, which Mask2Former keeps out of weight decay like every embedding."""
        return {"level_embed"}

    def reset_parameters(self) -> None:
        """Mask2Former's initialisation.

        Xavier-uniform input projections and encoder matrices, then Deformable DETR's init of the deformable
        attention, standard-normal level embeddings, ``c2_xavier_fill`` for the FPN and mask convolutions.
        """
        for conv in self.input_proj.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight, gain=1)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        for parameter in self.encoder.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for attention in self.encoder.modules():
            if isinstance(attention, MultiScaleDeformableAttention):
                attention.reset_parameters()
        nn.init.normal_(self.level_embed)
        for block in (self.lateral_conv, self.output_conv, self.mask_features):
            _conv_fill(block)

    @staticmethod
    def reference_points(
        shapes: list[tuple[int, int]], device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Every pixel centre of every level, normalised (x, y), repeated over the levels.

        Args:
            shapes: ``(H_l, W_l)`` of each level, in the order they are concatenated.
            device: Device of the result.
            dtype: Floating-point type of the result.

        Returns:
            ``(Σ_l H_l·W_l, levels, 2)``: row ``start_l + i·W_l + j`` holds ``((j + 0.5) / W_l, (i + 0.5) / H_l)``
            for every level (no padding, so the same normalised point on each level).
        """
        centres = []
        for height, width in shapes:
            y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
            x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
            grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
            centres.append(torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2))
        return torch.cat(centres)[:, None, :].expand(-1, len(shapes), 2)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Per-pixel embeddings and multi-scale features from backbone maps.

        Args:
            features: Four ``(N, C_l, H_l, W_l)`` maps at strides 4, 8, 16, 32 (fine to coarse), channels as
                ``in_channels``. Any sizes work (non-square too); the stride-8 output is resized bilinearly to
                the stride-4 map's size.

        Returns:
            ``(mask_features, multi_scale)``: ``(N, mask_dim, H/4, W/4)`` and the encoder's outputs coarse to fine,
            ``[(N, dim, H/32, W/32), (N, dim, H/16, W/16), (N, dim, H/8, W/8)]`` (P_3, P_2, P_1).
        """
        self._check(features)
        N = features[0].shape[0]
        coarse_to_fine = features[:0:-1]  # C_5, C_4, C_3
        shapes = [(int(x.shape[-2]), int(x.shape[-1])) for x in coarse_to_fine]
        tokens, positions = [], []
        for level, (x, projection) in enumerate(zip(coarse_to_fine, self.input_proj, strict=True)):
            projected = projection(x)  # X^l, (N, dim, H_l, W_l)
            tokens.append(projected.flatten(2).transpose(1, 2))
            height, width = shapes[level]
            sine = sine_positional_encoding_2d(height, width, self.dim, device=x.device, dtype=projected.dtype)
            positions.append(sine + self.level_embed[level])  # pos^l = sine + e_l, (H_l·W_l, dim)
        z = torch.cat(tokens, dim=1)  # (N, Σ H_l·W_l, dim)
        position = torch.cat(positions)[None].expand(N, -1, -1)
        device = z.device
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
        sizes = [height * width for height, width in shapes]
        level_start_index = torch.tensor([sum(sizes[:level]) for level in range(_LEVELS)], device=device)
        reference = self.reference_points(shapes, device=device, dtype=z.dtype)[None].expand(N, -1, -1, -1)
        for layer in self.encoder:
            z = layer(z, position, reference, spatial_shapes, level_start_index)
        multi_scale = [  # P_3, P_2, P_1
            level.transpose(1, 2).reshape(N, self.dim, height, width)
            for level, (height, width) in zip(z.split(sizes, dim=1), shapes, strict=True)
        ]
        lateral = self.lateral_conv(features[0])  # GN(Conv1×1(C_2))
        upsampled = F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_conv(lateral + upsampled)  # Y, stride 4
        return self.mask_features(y), multi_scale

    def _check(self, features: list[Tensor]) -> None:
        name = "MSDeformAttnPixelDecoder"
        if len(features) != 4:
            raise ValueError(f"{name} expects four maps at strides 4, 8, 16, 32, got {len(features)}")
        shapes = [tuple(x.shape) for x in features]
        if any(len(shape) != 4 for shape in shapes) or len({shape[0] for shape in shapes}) != 1:
            raise ValueError(f"{name} expects four (N, C, H, W) maps with the same N, got {shapes}")
        channels = [shape[1] for shape in shapes]
        if channels != self.in_channels:
            raise ValueError(f"{name} was built for in_channels {self.in_channels}, got maps with {channels}")
