"""Separation metrics: SDR / SIR / SAR (BSS Eval v3 "sources") aggregated over a dataset.

Per clip, all ``N`` estimated sources are scored against the ``N`` references with
:func:`~avtoolkit.metrics.bss_eval.bss_eval_sources` (fast path) or mir_eval itself (``backend="mir_eval"``),
as ``mir_eval.separation.bss_eval_sources(reference, estimate, compute_permutation=False)`` defines them
(float64, 512-tap distortion filters). The unprocessed mixture, used as the estimate of every source, gives the
baseline SDR_mix and the improvement SDRi = SDR - SDR_mix.

Silent inputs (a signal is silent when ``Σ |x| <= silence_threshold``):

* a clip with a silent *reference* cannot be evaluated (mir_eval refuses it): it is skipped and counted in
  ``n_skipped_silent_ref``;
* a silent *estimate* of a non-silent reference is a failure: under the default protocol its SDR, SIR and
  SAR are set to ``silent_estimate_db`` (−30 dB unless configured) and it is counted in ``n_silent_est``.
  Hiding it would flatter a model that outputs silence. The compat protocols skip its clip instead (still
  counted), as the published evaluation code does.

Protocols (the compat ones reproduce the authors' evaluation code; they differ in which clips are kept, which
sources are scored and how the scores are averaged; how masks are made is the task's business, see
:class:`~avtoolkit.tasks.separation.AVSeparationTask`):

* ``"default"``: mean over the sources of a clip, then mean over clips (batch-size independent); silent
  estimates floored.
* ``"sound_of_pixels"`` (Zhao et al. 2018; public code hangzhaomit/Sound-of-Pixels, ``calc_metrics`` and
  ``evaluate``): a clip is kept only if none of its references and none of its estimates is silent
  (``Σ|x| > 1e-5``); each kept clip scores the mean over its sources; per update (batch) the mean over its
  kept clips, then the mean of those per-batch means over the dataset (batch-size dependent). A batch
  without a kept clip contributes 0, as the code's ``AverageMeter`` returns 0 when it saw nothing. Its
  evaluation binarises the masks at 0.5.
* ``"iquery"`` (Chen et al. 2023; JiabenChen/iQuery, ``calc_metrics``): the same code and averaging as
  ``sound_of_pixels``; its evaluation keeps soft ratio masks (``--binary_mask 0``).
* ``"clipsep"`` (Dong et al. 2023; sony/CLIPSep, ``calc_metrics`` and ``main`` of its evaluation script): the
  same clip filter; only the *query* source of each mixture is scored, the first one (index 0: their test
  mixtures put the queried clip first and draw the interference from a second list), while SIR still
  measures the leakage of every other source into it. The per-clip query values are pooled over the
  dataset (batch-size independent) and reported as mean ± SEM (``std(ddof=1) / sqrt(n)``, scipy's ``sem``)
  and median. Masks stay soft (its ``--binary`` flag is off by default). Their default scorer, which the
  query-only selection follows, is museval's BSS Eval v4; this metric stays with v3, so absolute numbers can
  differ from theirs (their optional mir_eval v3 path pools every source of a mixture, not only the query).

Medians are the usual ones (the mean of the two middle values for an even count, as ``numpy.median``).

Under DDP, every state is gathered from all processes, including processes that scored nothing (no update, or
only skipped clips): the result equals a one-process evaluation of the union of their clips (for the per-batch
protocols: of their batches).
"""

import math
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from avtoolkit.metrics.bss_eval import bss_eval_sources_exact, bss_eval_sources_matrix, silent

Backend = Literal["fast", "mir_eval"]
SeparationProtocol = Literal["default", "sound_of_pixels", "iquery", "clipsep"]

#: One line per protocol, for reports.
PROTOCOLS: dict[str, str] = {
    "default": "mean over the sources of each mixture, then over mixtures; silent estimates scored at the floor",
    "sound_of_pixels": "Sound of Pixels: mean of per-batch means of per-mixture means; mixtures with any silent "
    "signal skipped; binary masks (threshold 0.5)",
    "iquery": "iQuery: mean of per-batch means of per-mixture means; mixtures with any silent signal skipped; "
    "soft ratio masks",
    "clipsep": "CLIPSep: query source (the first of each mixture) only, mean ± SEM over mixtures; mixtures with "
    "any silent signal skipped; soft masks",
}

_PER_CLIP = ("sdr", "sir", "sar", "sdr_mix", "sir_mix")
_PER_BATCH = ("sound_of_pixels", "iquery")


class SeparationMetrics(Metric):
    """SDR, SIR, SAR (BSS Eval v3, 512-tap filters), their medians and SEMs, the mixture baseline and SDRi.

    ``compute()`` returns a flat dict of scalars: ``sdr``, ``sir``, ``sar`` (means), ``sdr_median``,
    ``sir_median``, ``sar_median`` (medians over clips), ``sdr_sem``, ``sir_sem``, ``sar_sem`` (standard errors
    of the means over clips, ``std(ddof=1) / sqrt(n_clips)``), ``sdr_mix``, ``sir_mix`` (the mixture used as
    every source's estimate), ``sdri`` (``sdr - sdr_mix``), ``n_clips`` (clips evaluated),
    ``n_skipped_silent_ref`` (clips skipped for a silent reference) and ``n_silent_est`` (silent estimated
    sources of clips with non-silent references: floored under the default protocol, their clips skipped under
    the compat ones). A clip's value is the mean over its sources (``clipsep``: its query source's value); the
    means are over clips (``sound_of_pixels``, ``iquery``: the mean of per-batch means). SAR of the mixture is
    not reported: the mixture is a sum of the references, so its artefact term is zero up to rounding (SAR → ∞).

    The per-clip, per-source values are kept as "cat" states (synchronised across DDP ranks), available from
    :meth:`per_clip` for per-class tables and reports.

    Args:
        backend: ``"fast"`` (batched torch, any device, within 0.01 dB of mir_eval) or ``"mir_eval"``
            (mir_eval itself on CPU, one clip at a time; for the test stage).
        protocol: ``"default"`` (dataset-level mean of per-clip means, silent estimates floored),
            ``"sound_of_pixels"`` or ``"iquery"`` (mean of per-batch means, clips with any silent signal
            skipped) or ``"clipsep"`` (query source only, dataset-level mean ± SEM, clips with any silent
            signal skipped). See the module docstring.
        silent_estimate_db: The score (dB) given to SDR, SIR and SAR of a silent estimate of a non-silent
            reference under the default protocol.
        silence_threshold: A signal is silent when the sum of its absolute values is at most this
            (the compat protocols' code uses 1e-5; 0 means exactly all-zero, mir_eval's test).
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
        super().__init__(dist_sync_fn=gather_ragged)
        if backend not in ("fast", "mir_eval"):
            raise ValueError(f"backend must be 'fast' or 'mir_eval', got {backend!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(map(repr, PROTOCOLS))}; got {protocol!r}")
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
        # Per-batch protocols: one row per update, [sdr_mix, sdr, sir, sar] means over the batch's kept clips.
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
            estimates: ``(B, N, L)`` estimated sources (time domain, e.g. after iSTFT); under ``clipsep`` the
                query source comes first.
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
        if self.protocol != "default":
            keep = keep & ~est_silent.any(1)  # those skipped here are counted in n_silent_est
        idx = keep.nonzero()[:, 0]
        est, ref, mix, dead = estimates[idx], references[idx], mixture[idx], est_silent[idx]
        values: list[Tensor] = []
        if len(idx):
            scores = self._score(est, ref, mix)
            floor = torch.tensor(self.silent_estimate_db, dtype=torch.float64, device=ref.device)
            values = [torch.where(dead, floor, s) for s in scores[:3]] + list(scores[3:])
            for name, value in zip(_PER_CLIP, values, strict=True):
                getattr(self, name).append(value)
            self.silent_est.append(dead)
            self.labels.append(torch.full_like(dead, -1, dtype=torch.long) if labels is None else labels[idx])
        if self.protocol in _PER_BATCH:
            if values:
                sdr, sir, sar, sdr_mix = (v.mean(1).mean() for v in values[:4])
                row = torch.stack([sdr_mix, sdr, sir, sar])
            else:  # the reference code's AverageMeter reports 0 for a batch without a kept clip
                row = torch.zeros(4, dtype=torch.float64, device=references.device)
            self.batch_means.append(row[None])

    def per_clip(self) -> dict[str, Tensor]:
        """Per-clip, per-source values of the evaluated clips, gathered from all ranks.

        Returns:
            ``sdr``, ``sir``, ``sar``, ``sdr_mix``, ``sir_mix`` (float64), ``silent_est`` (bool) and ``labels``
            (int64, −1 when unknown), each ``(n_clips, N)`` in evaluation order (rank by rank under DDP);
            floored values included; every source of a clip, also under ``clipsep``.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_unsync=True):
            out = {name: _cat(getattr(self, name)) for name in (*_PER_CLIP, "silent_est", "labels")}
        return out

    def compute(self) -> dict[str, Tensor]:
        """The dataset-level numbers (see the class docstring)."""
        values = {name: _cat(getattr(self, name)) for name in _PER_CLIP}
        dev = self.n_silent_est.device
        nan = torch.tensor(math.nan, dtype=torch.float64, device=dev)
        n = values["sdr"].shape[0]
        if n == 0:
            clip = {name: torch.zeros(0, dtype=torch.float64, device=dev) for name in _PER_CLIP}
        elif self.protocol == "clipsep":
            clip = {name: v[:, 0] for name, v in values.items()}  # the query source
        else:
            clip = {name: v.mean(1) for name, v in values.items()}
        out: dict[str, Tensor] = {}
        if self.protocol in _PER_BATCH:
            rows = _cat(self.batch_means)
            means = rows.mean(0) if rows.numel() else nan.repeat(4)
            out.update(sdr_mix=means[0], sdr=means[1], sir=means[2], sar=means[3])
        else:
            for name in ("sdr", "sir", "sar", "sdr_mix"):
                out[name] = clip[name].mean() if n else nan
        out["sdri"] = out["sdr"] - out["sdr_mix"]
        out["sir_mix"] = clip["sir_mix"].mean() if n else nan
        for name in ("sdr", "sir", "sar"):
            out[f"{name}_median"] = torch.quantile(clip[name], 0.5) if n else nan
        for name in ("sdr", "sir", "sar"):
            out[f"{name}_sem"] = clip[name].std() / math.sqrt(n) if n > 1 else nan
        out["n_clips"] = torch.tensor(n, device=dev)
        out["n_skipped_silent_ref"] = self.n_skipped_silent_ref.clone()
        out["n_silent_est"] = self.n_silent_est.clone()
        return out


def gather_ragged(result: Tensor, group: Any | None = None) -> list[Tensor]:
    """Gather a metric state from every process, also from processes that have nothing to send.

    torchmetrics' gather stands in for an empty "cat" state with a 1-D tensor of the metric's default dtype
    (float32), which matches neither the dtype nor the number of dimensions of the ``(n, N)`` float64, bool or
    int64 states of the processes that scored clips; the collective then aborts (gloo: ``EnforceNotMet``). Here
    the processes first exchange the dtype and shape of their states, and an empty one becomes a ``(0, ...)``
    tensor like the others' before torchmetrics' padded gather.

    Args:
        result: This process's state.
        group: The process group (default: all processes).

    Returns:
        The states of all processes, in rank order.
    """
    if result.ndim == 0:  # "sum" states: scalars on every process
        return gather_all_tensors(result, group)
    layouts: list[Any] = [None] * dist.get_world_size(group)  # (dtype, shape) of every process's state
    dist.all_gather_object(layouts, (result.dtype, tuple(result.shape)), group=group)
    filled = [(dtype, shape) for dtype, shape in layouts if math.prod(shape) > 0]
    if result.numel() == 0 and filled:
        dtype, shape = filled[0]
        result = torch.zeros((0, *shape[1:]), dtype=dtype, device=result.device)
    return gather_all_tensors(result, group)


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A "cat" state as one tensor (a list before sync, a tensor after)."""
    if isinstance(state, Tensor):
        return state
    if not state:
        return torch.zeros(0, 0, dtype=torch.float64)
    return dim_zero_cat(state)
