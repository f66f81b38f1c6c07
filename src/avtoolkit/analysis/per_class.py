"""Per-class (per-instrument) separation quality, and one table comparing models (e.g. by fusion type).

HFRA's per-instrument SDR by fusion type. Input is the output of
:meth:`avtoolkit.metrics.SeparationMetrics.per_clip`: per clip and per source slot the SDR of the estimate,
the SDR of the unprocessed mixture (``sdr_mix``) and the class label of the source (−1 when unknown).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["ClassRow", "compare_models", "per_class_sdr"]


@dataclass(frozen=True)
class ClassRow:
    """Separation quality of the sources of one class.

    Attributes:
        name: Class name.
        index: Class index (the label value).
        n_sources: Sources of this class evaluated (one clip with two sources of the class counts twice).
        sdr: Mean SDR (dB) over those sources.
        sdri: Mean SDR improvement over the mixture, ``SDR − SDR_mix`` (dB).
        sdr_sem: Standard error of the mean SDR, ``std(ddof=1) / sqrt(n_sources)`` (NaN for one source).
        sdri_sem: The same for SDRi.
    """

    name: str
    index: int
    n_sources: int
    sdr: float
    sdri: float
    sdr_sem: float
    sdri_sem: float


def _mean_sem(values: Tensor) -> tuple[float, float]:
    """Mean and standard error (ddof 1; NaN for fewer than 2 values) of a 1-D float64 tensor."""
    n = values.numel()
    mean = float(values.mean())
    sem = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return mean, sem


def per_class_sdr(per_clip: Mapping[str, Tensor], class_names: Sequence[str]) -> list[ClassRow]:
    """Mean SDR and SDRi per class of source, from per-clip, per-source values.

    Every source counts once (a source, not a clip, has a class). Sources labelled −1 (unknown) are skipped;
    classes without any source are left out.

    Args:
        per_clip: ``SeparationMetrics.per_clip()`` output, or any mapping with ``sdr``, ``sdr_mix`` and
            ``labels``, each ``(n_clips, N)``.
        class_names: Name of each class index.

    Returns:
        One :class:`ClassRow` per class present, ordered by class index.

    Raises:
        ValueError: missing keys, shapes that differ, a label outside ``[-1, len(class_names))``, or non-finite
            SDR values of labelled sources.
    """
    missing = [k for k in ("sdr", "sdr_mix", "labels") if k not in per_clip]
    if missing:
        raise ValueError(f"per_clip lacks {missing}; pass SeparationMetrics.per_clip() output")
    sdr = per_clip["sdr"].detach().to("cpu", torch.float64)
    sdr_mix = per_clip["sdr_mix"].detach().to("cpu", torch.float64)
    labels = per_clip["labels"].detach().cpu().long()
    if not sdr.shape == sdr_mix.shape == labels.shape:
        raise ValueError(
            f"sdr {tuple(sdr.shape)}, sdr_mix {tuple(sdr_mix.shape)} and labels {tuple(labels.shape)} must match"
        )
    if labels.numel() and (labels.min() < -1 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must be in [-1, {len(class_names)}) for {len(class_names)} class names, "
            f"got [{int(labels.min())}, {int(labels.max())}]"
        )
    known = labels >= 0
    if not (torch.isfinite(sdr[known]).all() and torch.isfinite(sdr_mix[known]).all()):
        raise ValueError("sdr or sdr_mix holds NaN or infinite values for labelled sources")
    rows = []
    for c in labels[known].unique().tolist():
        sel = labels == c
        s, sm = sdr[sel], sdr_mix[sel]
        mean, sem = _mean_sem(s)
        mean_i, sem_i = _mean_sem(s - sm)
        rows.append(ClassRow(class_names[c], c, int(sel.sum()), mean, mean_i, sem, sem_i))
    return rows


def _cell(value: float, sem: float, digits: int, with_sem: bool) -> str:
    if not with_sem or not math.isfinite(sem):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {sem:.{digits}f}"


def compare_models(
    tables: Mapping[str, Sequence[ClassRow]],
    metric: Literal["sdr", "sdri"] = "sdr",
    with_sem: bool = True,
    digits: int = 2,
) -> str:
    """One markdown table: a row per class, a column per model, plus the mean over classes.

    Args:
        tables: Model name (e.g. the fusion type: late, middle, hierarchical) → its :func:`per_class_sdr` rows.
        metric: ``"sdr"`` or ``"sdri"``.
        with_sem: Write ``mean ± SEM`` in every class cell.
        digits: Decimals.

    Returns:
        Markdown: columns class, sources (the count per model when they differ, joined by "/"), one per model.
        Classes appear in class-index order (union over models; "–" where a model has no such source). The last
        row is the unweighted mean over the classes each model has (the class-balanced score).

    Raises:
        ValueError: no tables, or an unknown metric.
    """
    if not tables:
        raise ValueError("tables is empty: pass model name → per_class_sdr rows")
    if metric not in ("sdr", "sdri"):
        raise ValueError(f"metric must be 'sdr' or 'sdri', got {metric!r}")
    models = list(tables)
    by_model = {m: {row.index: row for row in tables[m]} for m in models}
    classes: dict[int, str] = {}
    for m in models:
        for row in tables[m]:
            classes.setdefault(row.index, row.name)
    label = "SDR (dB)" if metric == "sdr" else "SDRi (dB)"
    lines = [
        f"| class | sources | {' | '.join(f'{m} {label}' for m in models)} |",
        "|---|---:|" + "---:|" * len(models),
    ]
    for index in sorted(classes):
        counts = [str(by_model[m][index].n_sources) for m in models if index in by_model[m]]
        cells = []
        for m in models:
            found = by_model[m].get(index)
            if found is None:
                cells.append("–")
            else:
                value, sem = (found.sdr, found.sdr_sem) if metric == "sdr" else (found.sdri, found.sdri_sem)
                cells.append(_cell(value, sem, digits, with_sem))
        n_text = counts[0] if len(set(counts)) == 1 else "/".join(counts)
        lines.append(f"| {classes[index]} | {n_text} | {' | '.join(cells)} |")
    means = []
    for m in models:
        values = [getattr(row, metric) for row in tables[m]]
        means.append(f"{math.fsum(values) / len(values):.{digits}f}" if values else "–")
    lines.append(f"| mean over classes | | {' | '.join(means)} |")
    return "\n".join(lines)
