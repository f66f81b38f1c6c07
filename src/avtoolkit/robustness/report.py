"""The robustness report: ``report.md``, ``metrics.json`` and one figure per corruption (metric against severity).

The folder is written next to its destination and renamed onto it at the end (atomic: a reader never finds half a
report). ``metrics.json`` holds every number; NaN and infinite values are written as ``null`` (strict JSON).
"""

import json
import math
from pathlib import Path
from typing import Any

from avtoolkit.robustness.corruptions import CorruptionSpec
from avtoolkit.robustness.metrics import ENERGY_FLOOR_DB
from avtoolkit.robustness.suite import SuiteResult
from avtoolkit.utils.files import atomic_path

__all__ = ["METRIC_NAMES", "figure_names", "write_report"]

METRIC_NAMES = {
    "mj": "M_J",
    "mf": "M_F",
    "miou": "mIoU",
    "fpr": "FPR",
    "sdr": "SDR (dB)",
    "sir": "SIR (dB)",
    "sar": "SAR (dB)",
    "sdri": "SDRi (dB)",
    "sigma_mean": "mean σ",
    "energy_db_1": "energy, source 1 (dB)",
    "energy_db_2": "energy, source 2 (dB)",
    "absent_energy_db": "absent query energy (dB)",
}

SINGLE_LEVEL_FIGURE = "single_level.png"


def _finite(value: Any) -> Any:
    """NaN and ±inf → ``None``, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _number(value: float | None, key: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if key.startswith(("sdr", "sir", "sar", "energy", "absent")):
        return f"{value:.2f}"
    return f"{value:.3f}"


def _level(spec: CorruptionSpec, severity: int) -> str:
    if severity == 0:
        return "clean input"
    if not spec.parameter:
        return ""
    value = spec.level(severity)
    return f"{value:g} dB" if spec.parameter.startswith("SNR") else f"{value:.3g}"


def _main_metric(result: SuiteResult, name: str) -> str:
    """The metric of a case in the comparison table."""
    if result.task == "segmentation":
        return "fpr" if name.startswith("negative_") else result.metric_keys[0]
    return "absent_energy_db" if name == "absent_query" else "sdr"


def figure_names(result: SuiteResult) -> list[str]:
    """The PNG files of a report: one per corruption with several severities, one for the single-level ones."""
    names = [f"{name}.png" for name, spec in result.corruptions.items() if len(spec.levels) > 1]
    if any(len(spec.levels) == 1 for spec in result.corruptions.values()):
        names.append(SINGLE_LEVEL_FIGURE)
    return names


def _payload(result: SuiteResult) -> dict[str, Any]:
    corruptions = {
        name: {
            "kind": spec.kind,
            "description": spec.description,
            "parameter": spec.parameter,
            "levels": {str(s): (spec.level(s) if spec.parameter else None) for s in spec.severities},
        }
        for name, spec in result.corruptions.items()
    }
    checkpoints = {
        r.label: {
            "path": r.path,
            "experiment": r.experiment,
            "model": r.model,
            "clean": r.clean,
            "cases": {name: {str(s): m for s, m in by_severity.items()} for name, by_severity in r.cases.items()},
            "global": r.global_scores,
            "notes": r.notes,
        }
        for r in result.checkpoints
    }
    return _finite(
        {
            "task": result.task,
            "dataset": result.dataset,
            "seed": result.seed,
            "severities": list(result.severities),
            "metric_keys": list(result.metric_keys),
            "corruptions": corruptions,
            "skipped": result.skipped,
            "checkpoints": checkpoints,
        }
    )


# -- markdown ----------------------------------------------------------------------------------------------

_SEGMENTATION_DEFINITIONS = """\
* M_J, M_F (S4, MS3; AVSS: mIoU, mean F): the task's test metrics (`avtoolkit.metrics`), on the frames that have
  a ground-truth mask. Negative-audio cases replace the ground truth with empty masks: there M_J = 1 − FPR and
  M_F is undefined.
* FPR: the fraction of pixels predicted as foreground (sigmoid > 0.5; AVSS: arg-max ≠ background), averaged over
  the evaluated frames — AVSBench-Robust's FPR (Li et al. 2025, arXiv 2502.00358; official code
  `calculate_FPR`). Read it on the negative-audio rows, where nothing should be segmented.
* harmonic_<m> = 2 · m · (1 − FPR) / (m + 1 − FPR): this suite's combination of a clean positive-set metric m
  with a negative-set FPR (the mean over the negative kinds, or one kind). AVSBench-Robust's own global metrics
  (G-mIoU, G-F, G-FPR) were computed by its authors in a spreadsheet and their formula could not be retrieved;
  these harmonic means are not claimed to equal them."""

_SEPARATION_DEFINITIONS = f"""\
* SDR, SIR, SAR, SDRi: BSS Eval v3 (`avtoolkit.metrics.SeparationMetrics`, the task's protocol) of every source's
  estimate against its clean reference; SDRi against the mixture the model was given.
* energy, source k: 10 · log10(Σ est_k² / Σ mixture²), the mean over mixtures, in dB (floored at
  {ENERGY_FLOOR_DB:g} dB). absent_query queries source 1 with a picture of a class in neither source: its
  estimate should be silent, so its energy (absent query energy) should be far below 0 dB; its SDR is against
  the source it no longer asks for.
* mean σ (gated models, e.g. DGFNet): the mean gate value (`avtoolkit.analysis.GateRecorder`); a model that
  trusts vision only when it is informative lowers σ for corrupted pictures."""


def _markdown(result: SuiteResult) -> str:
    checkpoints = result.checkpoints
    labels = [r.label for r in checkpoints]
    lines = [
        "# Robustness report",
        "",
        f"Task: {result.task}; test data: {result.dataset}; seed {result.seed}; severities asked: "
        f"{', '.join(map(str, result.severities))} (0 = clean input, which must reproduce the clean metrics).",
        "",
        "| checkpoint | model | file | experiment |",
        "|---|---|---|---|",
        *[f"| {r.label} | {r.model} | `{r.path}` | `{r.experiment}` |" for r in checkpoints],
        "",
        "## Comparison",
        "",
        f"| case | severity | parameter | metric | {' | '.join(labels)} |",
        f"|---|---:|---|---|{'---:|' * len(labels)}",
    ]
    main = _main_metric(result, "clean")
    clean_cells = [_number(r.clean.get(main), main) for r in checkpoints]
    lines.append(f"| clean | | | {METRIC_NAMES.get(main, main)} | {' | '.join(clean_cells)} |")
    for name, spec in result.corruptions.items():
        key = _main_metric(result, name)
        for severity in sorted({s for r in checkpoints for s in r.cases.get(name, {})}):
            cells = [_number(r.cases.get(name, {}).get(severity, {}).get(key), key) for r in checkpoints]
            row = f"| {name} | {severity} | {_level(spec, severity)} | {METRIC_NAMES.get(key, key)} |"
            lines.append(f"{row} {' | '.join(cells)} |")
    global_keys = [k for k in checkpoints[0].global_scores if "/" not in k]
    for key in global_keys:
        cells = [_number(r.global_scores.get(key), key) for r in checkpoints]
        lines.append(f"| combined | | | {key} | {' | '.join(cells)} |")
    lines += [
        "",
        "## Corruptions",
        "",
        "| name | what it does | parameter | severity 1 | 2 | 3 |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in result.corruptions.items():
        levels = [_level(spec, s) for s in spec.severities] + [""] * (3 - len(spec.severities))
        lines.append(f"| {name} | {spec.description} | {spec.parameter or '—'} | {' | '.join(levels)} |")
    for name, reason in result.skipped.items():
        lines.append(f"| {name} | skipped: {reason} | | | | |")
    lines += [
        "",
        "## Metrics",
        "",
        _SEGMENTATION_DEFINITIONS if result.task == "segmentation" else _SEPARATION_DEFINITIONS,
        "",
    ]
    keys = list(result.metric_keys)
    if result.task == "separation":
        keys += sorted({k for r in checkpoints for k in r.clean if k.startswith("energy_db_")})
    for r in checkpoints:
        lines += [
            f"## {r.label} ({r.model})",
            "",
            f"| case | severity | parameter | {' | '.join(METRIC_NAMES.get(k, k) for k in keys)} |",
            f"|---|---:|---|{'---:|' * len(keys)}",
            f"| clean | | | {' | '.join(_number(r.clean.get(k), k) for k in keys)} |",
        ]
        for name, by_severity in r.cases.items():
            spec = result.corruptions[name]
            for severity, metrics in sorted(by_severity.items()):
                row = " | ".join(_number(metrics.get(k), k) for k in keys)
                lines.append(f"| {name} | {severity} | {_level(spec, severity)} | {row} |")
        if "absent_query" in r.cases and 1 in r.cases["absent_query"]:
            absent = r.cases["absent_query"][1]
            lines += [
                "",
                f"Absent-source query: source 1's estimate at {_number(absent.get('absent_energy_db'), 'energy')} dB "
                f"relative to the mixture (median {_number(absent.get('absent_energy_db_median'), 'energy')} dB; "
                f"clean: {_number(r.clean.get('energy_db_1'), 'energy')} dB).",
            ]
        if r.global_scores:
            lines += ["", "| combined score | value |", "|---|---:|"]
            lines += [f"| {k} | {_number(v, k)} |" for k, v in r.global_scores.items()]
        if r.notes:
            lines += ["", "Notes: " + "; ".join(f"{k} = {v}" for k, v in r.notes.items()) + "."]
        lines.append("")
    lines += ["## Figures", ""]
    for name in figure_names(result):
        lines += [f"![{name[:-4]}]({name})", ""]
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------------------


def _save(figure: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _severity_figure(result: SuiteResult, name: str, spec: CorruptionSpec, path: Path) -> None:
    from matplotlib.figure import Figure

    keys = list(result.metric_keys)
    figure = Figure(figsize=(3.2 * len(keys), 3.0))
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    severities = [0, *spec.severities]
    for ax, key in zip(axes, keys, strict=True):
        for r in result.checkpoints:
            by_severity = r.cases.get(name, {})
            xs = [s for s in severities if s == 0 or s in by_severity]
            ys = [by_severity.get(s, r.clean if s == 0 else {}).get(key, math.nan) for s in xs]
            ax.plot(xs, ys, marker="o", label=r.label)
        ax.set_xticks(severities, ["clean", *(_level(spec, s) for s in spec.severities)], fontsize=7)
        ax.set_xlabel(f"severity: {spec.parameter}", fontsize=7)
        ax.set_title(METRIC_NAMES.get(key, key), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(name, fontsize=10)
    _save(figure, path)


def _single_level_figure(result: SuiteResult, path: Path) -> None:
    from matplotlib.figure import Figure

    names = [name for name, spec in result.corruptions.items() if len(spec.levels) == 1]
    keys = ["fpr", result.metric_keys[0]] if result.task == "segmentation" else ["sdr", "energy_db_1"]
    groups = ["clean", *names]
    figure = Figure(figsize=(1.2 * len(groups) * len(keys) + 2, 3.2))
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    width = 0.8 / max(1, len(result.checkpoints))
    for ax, key in zip(axes, keys, strict=True):
        for k, r in enumerate(result.checkpoints):
            values = [r.clean.get(key, math.nan)] + [r.cases.get(n, {}).get(1, {}).get(key, math.nan) for n in names]
            ax.bar([g + k * width for g in range(len(groups))], values, width, label=r.label)
        ax.set_xticks([g + width * (len(result.checkpoints) - 1) / 2 for g in range(len(groups))], groups)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_title(METRIC_NAMES.get(key, key), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    _save(figure, path)


def write_report(result: SuiteResult, out: Path) -> Path:
    """Write ``report.md``, ``metrics.json`` and the figures of :func:`figure_names` into ``out`` (replaced atomically).

    Returns:
        ``out``.
    """
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "metrics.json").write_text(json.dumps(_payload(result), indent=2, allow_nan=False) + "\n")
        for name, spec in result.corruptions.items():
            if len(spec.levels) > 1:
                _severity_figure(result, name, spec, tmp / f"{name}.png")
        if SINGLE_LEVEL_FIGURE in figure_names(result):
            _single_level_figure(result, tmp / SINGLE_LEVEL_FIGURE)
        (tmp / "report.md").write_text(_markdown(result))
    return out
