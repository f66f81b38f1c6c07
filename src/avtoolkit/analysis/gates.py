"""DGFNet gate (σ) statistics and the frame corruptions of the noise stress test.

DGFNet's gate σ is returned by its gating module (or hooked), and the paper's noise stress test expects a corrupted
visual input to lower the mean σ of a trained network. The DGFM mixes
``out = σ ⊙ F_av + (1 − σ) ⊙ F_mid``: σ near 1 trusts the visually fused features, near 0 the audio ones.

The caller runs the model twice over the same data, once on clean frames and once on
:func:`corrupt_frames`, collects σ per batch (returned by the gating module, or hooked with
:class:`GateRecorder`), summarises both with :func:`gate_statistics` (or ``GateRecorder.statistics``) and
reports :func:`compare_gates`.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Corruption", "GateRecorder", "GateStats", "compare_gates", "corrupt_frames", "gate_statistics"]

Corruption = Literal["noise", "blank", "shuffle"]


@dataclass(frozen=True)
class GateStats:
    """Summary of gate values σ over a dataset.

    Attributes:
        mean: Mean of all σ values.
        std: Population standard deviation of all σ values.
        frac_above_half: Fraction of σ values > 0.5 (the fused features dominate).
        n_values: Number of σ values.
        n_sources: Number of sources (clip × slot pairs).
        per_slot_mean: Mean σ of each source slot ``0..N−1``.
        per_class_mean: Class index → mean σ over the sources of that class (labels given; −1 skipped).
        per_class_sources: Class index → number of sources of that class.
    """

    mean: float
    std: float
    frac_above_half: float
    n_values: int
    n_sources: int
    per_slot_mean: tuple[float, ...]
    per_class_mean: dict[int, float] = field(default_factory=dict)
    per_class_sources: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Summary:
    """Per-source sums of one batch of gates ``(B, N, E)``.

    ``total`` Σσ, ``squares`` Σσ², ``above`` #(σ > 0.5), each ``(B, N)`` float64 on the CPU; ``per_source`` E.
    """

    total: Tensor
    squares: Tensor
    above: Tensor
    per_source: int


def _summarise(gates: Tensor, index: int = 0) -> _Summary:
    """Reduce a ``(B, N, ...)`` gate tensor to per-source sums (on its device, in float64; tiny results)."""
    if gates.dim() < 2:
        raise ValueError(f"gates must be (n, N, ...), got shape {tuple(gates.shape)}")
    g = gates.detach().to(torch.float64).reshape(*gates.shape[:2], math.prod(gates.shape[2:]))  # (B, N, E)
    if not torch.isfinite(g).all():
        raise ValueError(f"gates of batch {index} contain NaN or infinite values")
    return _Summary(
        total=g.sum(-1).cpu(),
        squares=g.square().sum(-1).cpu(),
        above=(g > 0.5).sum(-1).to(torch.float64).cpu(),
        per_source=g.shape[2],
    )


def _combine(summaries: Sequence[_Summary], labels: Tensor | Sequence[Tensor] | None) -> GateStats:
    """:class:`GateStats` from per-batch summaries (and labels aligned with them)."""
    if not summaries:
        raise ValueError("no gates: an empty sequence of batches")
    shapes = {(s.total.shape[1], s.per_source) for s in summaries}
    if len(shapes) > 1:
        raise ValueError(f"gate batches differ in (N, values per source): {sorted(shapes)}")
    n_slots, per_source = shapes.pop()
    total = torch.cat([s.total for s in summaries])  # (n, N)
    squares = torch.cat([s.squares for s in summaries])
    above = torch.cat([s.above for s in summaries])
    n_values = total.numel() * per_source
    if n_values == 0:
        raise ValueError("gates hold no values")
    mean = float(total.sum()) / n_values
    variance = max(float(squares.sum()) / n_values - mean * mean, 0.0)
    per_slot = total.sum(0) / (total.shape[0] * per_source)
    per_class_mean: dict[int, float] = {}
    per_class_sources: dict[int, int] = {}
    if labels is not None:
        sizes = [s.total.shape[0] for s in summaries]
        if isinstance(labels, Tensor):
            got: object = tuple(labels.shape)
            ok = labels.shape == total.shape
            lab = labels
        else:
            parts = [torch.as_tensor(lb) for lb in labels]
            got = [tuple(p.shape) for p in parts]
            ok = got == [(b, n_slots) for b in sizes]
            lab = torch.cat(parts) if ok and parts else torch.zeros(0, n_slots, dtype=torch.long)
        if not ok:
            raise ValueError(f"labels must be (n, N) = {tuple(total.shape)} (or per batch (B_i, N)), got {got}")
        lab = lab.detach().cpu().long()
        for c in lab.unique().tolist():
            if c < 0:
                continue
            sel = lab == c
            per_class_mean[c] = float(total[sel].sum()) / (int(sel.sum()) * per_source)
            per_class_sources[c] = int(sel.sum())
    return GateStats(
        mean=mean,
        std=math.sqrt(variance),
        frac_above_half=float(above.sum()) / n_values,
        n_values=n_values,
        n_sources=total.numel(),
        per_slot_mean=tuple(per_slot.tolist()),
        per_class_mean=per_class_mean,
        per_class_sources=per_class_sources,
    )


def gate_statistics(gates: Tensor | Sequence[Tensor], labels: Tensor | Sequence[Tensor] | None = None) -> GateStats:
    """Mean, std, fraction above 0.5, per-slot and per-class means of gate values σ.

    Every batch is first reduced, on its device, to per-source sums (Σσ, Σσ², count above 0.5), so a long
    list of large per-batch gate tensors is never concatenated; the std is the population std from those
    float64 sums.

    Args:
        gates: ``(n, N, ...)`` σ for ``n`` clips and ``N`` source slots (any trailing shape: element-wise
            ``(C, h, w)`` or channel-wise ``(C,)``, or none), or a sequence of per-batch tensors of that form.
            Channel-wise gates expanded over ``h × w`` (as ``GatedFusion`` returns them) give the same means.
        labels: ``(n, N)`` class index of every source (−1 = unknown, skipped in the per-class means), as one
            tensor or per batch like ``gates``; ``None`` for no per-class means.

    Returns:
        A :class:`GateStats`.

    Raises:
        ValueError: no values, fewer than 2 dims, batches with different ``N`` or trailing sizes, non-finite
            values, or labels of the wrong shape.
    """
    batches = [gates] if isinstance(gates, Tensor) else list(gates)
    return _combine([_summarise(g, i) for i, g in enumerate(batches)], labels)


class GateRecorder:
    """Record the gate σ of a module during forward passes (a forward hook), as compact per-source sums.

    For a module whose forward returns ``(out, σ)`` with σ ``(B, N, ...)``, e.g. DGFNet's ``model.gate``
    (:class:`~avtoolkit.fusion.gating.GatedFusion`). Only per-source sums are kept (three ``(B, N)`` tensors
    per call), so a whole test set fits; give the sources' labels, in the order the batches ran, to
    :meth:`statistics` for per-class means.

    Example::

        with GateRecorder(model.gate) as recorder:
            for batch in loader:
                model(batch)
                labels.append(batch["labels"])
        stats = recorder.statistics(labels)

    Args:
        module: The module to hook.
        select: Picks σ from the module's output (default: the output's second item, ``output[1]``).
    """

    def __init__(self, module: nn.Module, select: Callable[[Any], Tensor] | None = None) -> None:
        self.module = module
        self.select = select
        self.summaries: list[_Summary] = []
        self._handle: RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        sigma = self.select(output) if self.select is not None else output[1]
        if not isinstance(sigma, Tensor):
            raise TypeError(f"the hooked module's output gave {type(sigma).__name__}, not a σ tensor; pass select=")
        self.summaries.append(_summarise(sigma, len(self.summaries)))

    def __enter__(self) -> "GateRecorder":
        if self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hook (recorded values stay)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def clear(self) -> None:
        """Forget the recorded values."""
        self.summaries.clear()

    def statistics(self, labels: Tensor | Sequence[Tensor] | None = None) -> GateStats:
        """:class:`GateStats` of everything recorded so far.

        Args:
            labels: ``(n, N)`` or per-call ``(B_i, N)`` class indices, in the order of the recorded calls.
        """
        return _combine(self.summaries, labels)


def compare_gates(
    clean: GateStats,
    corrupted: GateStats,
    names: tuple[str, str] = ("clean", "corrupted"),
    class_names: Sequence[str] | None = None,
    digits: int = 3,
) -> str:
    """Markdown table of σ statistics, clean vs corrupted visual input, with the difference (corrupted − clean).

    The noise stress test expects a negative difference of the mean: a trained gate trusts a corrupted
    picture less.

    Args:
        clean: Statistics with the clean frames.
        corrupted: Statistics with corrupted frames (:func:`corrupt_frames`).
        names: Column headers of the two conditions.
        class_names: Names of the class indices, to add per-class mean rows (classes present in both).
        digits: Decimals.

    Returns:
        Markdown rows: mean σ, std σ, fraction σ > 0.5, mean σ per source slot, per class (when both have them).
    """
    rows: list[tuple[str, float, float]] = [
        ("mean σ", clean.mean, corrupted.mean),
        ("std σ", clean.std, corrupted.std),
        ("fraction σ > 0.5", clean.frac_above_half, corrupted.frac_above_half),
    ]
    if len(clean.per_slot_mean) == len(corrupted.per_slot_mean):
        rows += [
            (f"mean σ, slot {s}", a, b)
            for s, (a, b) in enumerate(zip(clean.per_slot_mean, corrupted.per_slot_mean, strict=True))
        ]
    for c in sorted(set(clean.per_class_mean) & set(corrupted.per_class_mean)):
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else f"class {c}"
        rows.append((f"mean σ, {name}", clean.per_class_mean[c], corrupted.per_class_mean[c]))
    lines = [f"| | {names[0]} | {names[1]} | difference |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {a:.{digits}f} | {b:.{digits}f} | {b - a:+.{digits}f} |" for label, a, b in rows]
    lines.append(f"| values | {clean.n_values} | {corrupted.n_values} | |")
    return "\n".join(lines)


def derangement(n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """A uniformly random permutation of ``0..n−1`` without fixed points (n ≥ 2), by rejection."""
    while True:
        perm = torch.randperm(n, generator=generator)
        if not (perm == torch.arange(n)).any():
            return perm.to(device)


def corrupt_frames(
    frames: Tensor,
    kind: Corruption,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Corrupt video frames for the noise stress test (a new tensor; the input is not modified).

    * ``"noise"``: add Gaussian noise of standard deviation ``strength`` (in units of the [0, 1] range) and clamp
      to [0, 1].
    * ``"blank"``: blend towards mid-grey, ``(1 − strength) · frames + strength · 0.5``; ``strength = 1`` gives
      uniform grey frames.
    * ``"shuffle"``: give ``round(strength · B)`` randomly chosen items of the batch (dim 0) the frames of
      another of those items (a random derangement: none keeps its own); ``strength = 1`` shuffles all, fewer
      than 2 chosen items leave the batch unchanged. The frames stay intact, only their pairing with the audio
      is wrong.

    Args:
        frames: ``(B, ..., 3, H, W)`` RGB in [0, 1] (e.g. separation ``(B, N, Tv, 3, H, W)``); ``"shuffle"``
            needs ``B ≥ 2`` and accepts any value range.
        kind: ``"noise"``, ``"blank"`` or ``"shuffle"``.
        strength: Noise std (≥ 0), blend weight in [0, 1], or fraction of items shuffled in [0, 1].
        generator: Random generator (on the frames' device for ``"noise"``, on the CPU for ``"shuffle"``).

    Returns:
        The corrupted frames, same shape, dtype and device.

    Raises:
        ValueError: not ``(..., 3, H, W)`` floating point, values outside [0, 1] for noise/blank, an unknown kind,
            a strength out of range, or a batch of one for ``"shuffle"``.
    """
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"frames must be (..., 3, H, W), got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating point in [0, 1], got {frames.dtype}")
    if kind in ("noise", "blank") and frames.numel() and (frames.min() < 0 or frames.max() > 1):
        raise ValueError(
            f"frames must lie in [0, 1] for {kind!r} (got [{float(frames.min()):.3g}, {float(frames.max()):.3g}]); "
            "corrupt before normalising them"
        )
    if kind == "noise":
        if strength < 0:
            raise ValueError(f"noise strength (std) must be >= 0, got {strength}")
        noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype, device=frames.device)
        return (frames + strength * noise).clamp(0, 1)
    if not 0 <= strength <= 1:
        raise ValueError(f"{kind!r} strength must be in [0, 1], got {strength}")
    if kind == "blank":
        return (1 - strength) * frames + strength * 0.5
    if kind == "shuffle":
        if frames.dim() < 4 or frames.shape[0] < 2:
            raise ValueError(f"'shuffle' needs a batch dim with at least 2 items, got shape {tuple(frames.shape)}")
        B = frames.shape[0]
        k = round(strength * B)
        out = frames.clone()
        if k < 2:
            return out
        chosen = torch.randperm(B, generator=generator)[:k].to(frames.device)
        out[chosen] = frames[chosen[derangement(k, generator, frames.device)]]
        return out
    raise ValueError(f"kind must be 'noise', 'blank' or 'shuffle', got {kind!r}")
