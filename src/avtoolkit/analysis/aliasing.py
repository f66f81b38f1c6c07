"""Aliasing ratio of feature maps entering strided layers (SFM's measurement).

A stride-``s`` layer keeps the frequencies inside ``[−0.5/s, 0.5/s]²`` (cycles per sample) and folds every other one
onto them. For a map ``x`` with per-channel power spectrum ``P = |FFT2(x)|²``:

    ratio = Σ_{f ∉ [−0.5/s, 0.5/s]²} P(f) / Σ_f P(f)          (DC, f = 0, optionally left out of both sums)

0: nothing would alias; 1: everything would. :func:`backbone_aliasing` measures it at the input of each stride-2
stage transition of a :class:`~avtoolkit.models.encoders.multiscale.MultiScaleBackbone`, with forward hooks, so a
notebook can compare a backbone with and without ARS.
"""

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from avtoolkit.models.encoders.multiscale import ARSStage, MultiScaleBackbone

__all__ = ["aliasing_ratio", "backbone_aliasing"]

_SILENT = 1e-12  # a channel whose counted power is below this fraction of its energy Σx² is treated as silent


def aliasing_ratio(x: Tensor, stride: int, exclude_dc: bool = True) -> Tensor:
    """Fraction of each map's power outside the band a stride-``stride`` layer keeps.

    The spectrum is computed per channel in float64 (``fft2``, frequencies from ``fftfreq``, the box closed:
    ``|f| ≤ 0.5/stride`` is inside). The per-channel ratios are averaged over the channels that carry power;
    silent channels (constant maps when DC is excluded, zero maps otherwise: counted power below 1e-12 of the
    channel's energy, i.e. rounding) have no ratio and are left out, and a map with no such channel scores 0.

    Args:
        x: ``(N, C, H, W)`` feature maps.
        stride: s ≥ 1, the stride of the layer the maps enter (2 for a stage transition).
        exclude_dc: Leave the mean (f = 0) out of both sums, so a constant offset does not count as unaliased power.

    Returns:
        ``(N,)`` ratios in [0, 1].
    """
    if x.dim() != 4:
        raise ValueError(f"aliasing_ratio x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if stride < 1:
        raise ValueError(f"aliasing_ratio stride must be a positive integer, got {stride}")
    H, W = x.shape[-2:]
    signal = x.detach().double()
    power = torch.fft.fft2(signal).abs().square()  # (N, C, H, W)
    limit = 0.5 / stride + 1e-12
    fy = torch.fft.fftfreq(H, device=x.device, dtype=torch.float64).abs()
    fx = torch.fft.fftfreq(W, device=x.device, dtype=torch.float64).abs()
    inside = (fy[:, None] <= limit) & (fx[None, :] <= limit)  # (H, W)
    counted = torch.ones_like(inside)
    if exclude_dc:
        counted[0, 0] = False
    total = (power * counted).sum(dim=(-2, -1))  # (N, C)
    outside = (power * (counted & ~inside)).sum(dim=(-2, -1))
    energy = signal.square().sum(dim=(-2, -1)) * (H * W)  # Parseval: Σ_f P(f) = HW · Σ x²
    active = total > _SILENT * energy
    ratio = torch.where(active, outside / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    mean = ratio.sum(dim=1) / active.sum(dim=1).clamp_min(1)
    return mean.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())


@torch.no_grad()
def backbone_aliasing(
    backbone: MultiScaleBackbone, images: Tensor, where: Literal["after_ars", "before_ars"] = "after_ars"
) -> dict[int, float]:
    """Aliasing ratio (stride 2) of the map entering each ARS-capable stage transition of a backbone.

    Args:
        backbone: The backbone; run once on ``images`` (in its current train/eval mode).
        images: ``(N, 3, H, W)`` floats in [0, 1].
        where: ``"after_ars"``: the input of the strided layer itself (the ARS output where ARS is on);
            ``"before_ars"``: the input of the transition before ARS resamples it. Without ARS both are the same.

    Returns:
        Output stride of the transition (8, 16, 32) → mean ratio over the images.
    """
    if where not in ("after_ars", "before_ars"):
        raise ValueError(f"backbone_aliasing where must be 'after_ars' or 'before_ars', got {where!r}")
    ratios: dict[int, float] = {}
    handles: list[RemovableHandle] = []

    def measure(stride: int) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].permute(0, 3, 1, 2) if backbone.channels_last else args[0]
            ratios[stride] = float(aliasing_ratio(x, stride=2).mean())

        return hook

    try:
        for stride, module in backbone.transitions().items():
            target = module.stage if isinstance(module, ARSStage) and where == "after_ars" else module
            handles.append(target.register_forward_pre_hook(measure(stride)))
        backbone(images)
    finally:
        for handle in handles:
            handle.remove()
    return dict(sorted(ratios.items()))
