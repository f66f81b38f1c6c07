"""Separation metrics: SDR / SIR / SAR (BSS Eval v3 "sources") aggregated over a dataset.

Spec: ``specs/metrics.md`` ("Separation"). Per clip, all ``N`` estimated sources are scored against the ``N``
references with :func:`~avtoolkit.metrics.bss_eval.bss_eval_sources` (fast path) or mir_eval itself
(``backend="mir_eval"``); the unprocessed mixture, used as the estimate of every source, gives the baseline
SDR_mix and the improvement SDRi = SDR - SDR_mix.

Silent inputs (a signal is silent when ``Σ |x| <= silence_threshold``):

* a clip with a silent *reference* cannot be evaluated (mir_eval refuses it): it is skipped and counted in
  ``n_skipped_silent_ref``;
* a silent *estimate* of a non-silent reference is a failure: under the default protocol its SDR, SIR and
  SAR are set to ``silent_estimate_db`` (−30 dB unless configured) and it is counted in ``n_silent_est``.
  Hiding it would flatter a model that outputs silence.

Protocols:

* ``"default"``: mean over the sources of a clip, then mean over clips (batch-size independent).
* ``"sound_of_pixels"`` (compat with Zhao et al. 2018's code): clips with any silent reference or estimate
  are skipped (still counted); per update (batch) the mean over the remaining clips, then the mean of those
  per-batch means. A batch with no valid clip contributes 0, as the reference code's ``AverageMeter`` does.
"""

import math
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from avtoolkit.metrics.bss_eval import bss_eval_sources_exact, bss_eval_sources_matrix, silent

Backend = Literal["fast", "mir_eval"]
SeparationProtocol = Literal["default", "sound_of_pixels"]

_PER_CLIP = ("sdr", "sir", "sar", "sdr_mix", "sir_mix")


class SeparationMetrics(Metric):
    """SDR, SIR, SAR (BSS Eval v3, 512-tap filters), their medians, the mixture baseline and SDRi.

    ``compute()`` returns a flat dict of scalars: ``sdr``, ``sir``, ``sar`` (means), ``sdr_median``,
    ``sir_median``, ``sar_median`` (medians over clips of the per-clip means), ``sdr_sem`` (standard error of
    the mean SDR over clips), ``sdr_mix``, ``sir_mix`` (the mixture used as every source's estimate),
    ``sdri`` (SDR - SDR_mix, per source, then averaged), ``n_clips`` (clips evaluated),
    ``n_skipped_silent_ref`` (clips skipped for a silent reference) and ``n_silent_est`` (silent estimated
    sources of clips with non-silent references: floored by default, their clips skipped under
    ``sound_of_pixels``). SAR of the mixture is not reported: the mixture is a sum of the references, so its
    artefact term is zero up to rounding (SAR → ∞).

    The per-clip, per-source values are kept as "cat" states (synchronised across DDP ranks), available from
    :meth:`per_clip` for per-class tables and reports.

    Args:
        backend: ``"fast"`` (batched torch, any device, within 0.01 dB of mir_eval) or ``"mir_eval"``
            (mir_eval itself on CPU, one clip at a time; for the test stage).
        protocol: ``"default"`` (dataset-level mean of per-clip means, silent estimates floored) or
            ``"sound_of_pixels"`` (mean of per-batch means, clips with any silent signal skipped).
        silent_estimate_db: The score (dB) given to SDR, SIR and SAR of a silent estimate of a non-silent
            reference under the default protocol.
        silence_threshold: A signal is silent when the sum of its absolute values is at most this
            (Sound of Pixels uses 1e-5; 0 means exactly all-zero, mir_eval's test).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    sdr: list[Tensor]
    sir: list[Tensor]
    sar: list[Tensor]
    sdr_mix: list[Tensor]
    sir_mix: list[Tensor]
    silent_est: list[Tensor]
    labels: list[Tensor]
    batch_means: list[Tensor]
    n_skipped_silent_ref: Tensor
    n_silent_est: Tensor

    def __init__(
        self,
        backend: Backend = "fast",
        protocol: SeparationProtocol = "default",
        silent_estimate_db: float = -30.0,
        silence_threshold: float = 1e-5,
    ) -> None:
        super().__init__()
        if backend not in ("fast", "mir_eval"):
            raise ValueError(f"backend must be 'fast' or 'mir_eval', got {backend!r}")
        if protocol not in ("default", "sound_of_pixels"):
            raise ValueError(f"protocol must be 'default' or 'sound_of_pixels', got {protocol!r}")
        if silence_threshold < 0:
            raise ValueError(f"silence_threshold must be >= 0, got {silence_threshold}")
        self.backend = backend
        self.protocol = protocol
        self.silent_estimate_db = float(silent_estimate_db)
        self.silence_threshold = float(silence_threshold)
        for name in _PER_CLIP:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("silent_est", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        # Sound of Pixels: one row per update, [sdr_mix, sdr, sir, sar] means over the batch's valid clips.
        self.add_state("batch_means", default=[], dist_reduce_fx="cat")
        self.add_state("n_skipped_silent_ref", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("n_silent_est", default=torch.tensor(0), dist_reduce_fx="sum")

    def _score(self, estimates: Tensor, references: Tensor, mixture: Tensor) -> tuple[Tensor, ...]:
        """SDR, SIR, SAR of the estimates and SDR, SIR of the mixture, each ``(B, N)`` float64."""
        N = references.shape[1]
        if self.backend == "fast":
            both = torch.cat([estimates, mixture[:, None]], 1)
            sdr_m, sir_m, sar_m = bss_eval_sources_matrix(references, both)
            sdr = torch.diagonal(sdr_m[:, :, :N], dim1=1, dim2=2)
            sir = torch.diagonal(sir_m[:, :, :N], dim1=1, dim2=2)
            return sdr, sir, sar_m[:, :N], sdr_m[:, :, N], sir_m[:, :, N]
        sdr, sir, sar = bss_eval_sources_exact(references, estimates)
        sdr_mix, sir_mix, _ = bss_eval_sources_exact(references, mixture[:, None].expand_as(references))
        return sdr, sir, sar, sdr_mix, sir_mix

    def update(self, estimates: Tensor, references: Tensor, mixture: Tensor, labels: Tensor | None = None) -> None:
        """Score a batch of clips.

        Args:
            estimates: ``(B, N, L)`` estimated sources (time domain, e.g. after iSTFT).
            references: ``(B, N, L)`` the true sources, same order.
            mixture: ``(B, L)`` the mixture the estimates were separated from.
            labels: ``(B, N)`` class index of each source, kept with the per-clip values (per-class tables);
                ``-1`` when not given.
        """
        if estimates.shape != references.shape or estimates.dim() != 3:
            raise ValueError(
                f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} must both be (B, N, L)"
            )
        if mixture.shape != (references.shape[0], references.shape[2]):
            raise ValueError(f"mixture must be (B, L) = {references.shape[::2]}, got {tuple(mixture.shape)}")
        ref_silent = silent(references, self.silence_threshold).any(1)  # (B,)
        est_silent = silent(estimates, self.silence_threshold) & ~ref_silent[:, None]  # (B, N)
        self.n_skipped_silent_ref += ref_silent.sum()
        self.n_silent_est += est_silent.sum()
        keep = ~ref_silent
        if self.protocol == "sound_of_pixels":
            keep = keep & ~est_silent.any(1)  # those skipped here are counted in n_silent_est
        idx = keep.nonzero()[:, 0]
        est, ref, mix, dead = estimates[idx], references[idx], mixture[idx], est_silent[idx]
        if len(idx):
            scores = self._score(est, ref, mix)
            floor = torch.tensor(self.silent_estimate_db, dtype=torch.float64, device=ref.device)
            values = [torch.where(dead, floor, s) for s in scores[:3]] + list(scores[3:])
            for name, value in zip(_PER_CLIP, values, strict=True):
                getattr(self, name).append(value)
            self.silent_est.append(dead)
            self.labels.append(torch.full_like(dead, -1, dtype=torch.long) if labels is None else labels[idx])
        if self.protocol == "sound_of_pixels":
            if len(idx):
                sdr, sir, sar, sdr_mix = (v.mean(1).mean() for v in (values[0], values[1], values[2], values[3]))
                row = torch.stack([sdr_mix, sdr, sir, sar])
            else:  # the reference code's AverageMeter reports 0 for a batch without a valid clip
                row = torch.zeros(4, dtype=torch.float64, device=references.device)
            self.batch_means.append(row[None])

    def per_clip(self) -> dict[str, Tensor]:
        """Per-clip, per-source values of the evaluated clips, gathered from all ranks.

        Returns:
            ``sdr``, ``sir``, ``sar``, ``sdr_mix``, ``sir_mix`` (float64), ``silent_est`` (bool) and ``labels``
            (int64, −1 when unknown), each
            ``(n_clips, N)`` in evaluation order (rank by rank under DDP); floored values included.
        """
        with self.sync_context(should_unsync=True):
            out = {name: _cat(getattr(self, name)) for name in (*_PER_CLIP, "silent_est", "labels")}
        return out

    def compute(self) -> dict[str, Tensor]:
        """The dataset-level numbers (see the class docstring)."""
        values = {name: _cat(getattr(self, name)) for name in _PER_CLIP}
        dev = self.n_silent_est.device
        nan = torch.tensor(math.nan, dtype=torch.float64, device=dev)
        n = values["sdr"].shape[0]
        clip = {name: v.mean(1) if n else v.new_zeros(0) for name, v in values.items()}
        out: dict[str, Tensor] = {}
        if self.protocol == "sound_of_pixels":
            rows = _cat(self.batch_means)
            means = rows.mean(0) if rows.numel() else nan.repeat(4)
            out.update(sdr_mix=means[0], sdr=means[1], sir=means[2], sar=means[3], sdri=means[1] - means[0])
        else:
            for name in ("sdr", "sir", "sar", "sdr_mix"):
                out[name] = clip[name].mean() if n else nan
            out["sdri"] = (values["sdr"] - values["sdr_mix"]).mean(1).mean() if n else nan
        out["sir_mix"] = clip["sir_mix"].mean() if n else nan
        for name in ("sdr", "sir", "sar"):
            out[f"{name}_median"] = clip[name].median() if n else nan
        out["sdr_sem"] = clip["sdr"].std() / math.sqrt(n) if n > 1 else nan
        out["n_clips"] = torch.tensor(n, device=dev)
        out["n_skipped_silent_ref"] = self.n_skipped_silent_ref.clone()
        out["n_silent_est"] = self.n_silent_est.clone()
        return out


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A "cat" state as one tensor (a list before sync, a tensor after)."""
    if isinstance(state, Tensor):
        return state
    if not state:
        return torch.zeros(0, 0, dtype=torch.float64)
    return dim_zero_cat(state)
