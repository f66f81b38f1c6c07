"""Evaluate checkpoints on their test split, clean and under each corruption, and write the robustness report.

:func:`run_robustness` is the entry point (the ``avtoolkit robustness`` command): it builds the task and datamodule
of an experiment config, loads each checkpoint's weights, runs :func:`evaluate_segmentation` or
:func:`evaluate_separation`, and writes ``report.md``, ``metrics.json`` and the figures
(:func:`~avtoolkit.robustness.report.write_report`).

Every case is one pass over the test split with the model in eval mode. Batches come from the datamodule's test
loader, are moved to the device, corrupted where the corruption acts, prepared by the datamodule's
``on_after_batch_transfer``, and scored with a fresh copy of the task's test metric. Audio corruptions of
segmentation act on the 16 kHz waveform before ``on_after_batch_transfer`` turns it into the log-mel (so the
datamodule's log-mel cache, if configured, is bypassed: the suite reads the audio); frame corruptions act on the
float frames after it. Random draws come from a CPU generator seeded by ``(seed, corruption, severity, batch)``:
reruns give the same corruptions, in any order of cases and on any device. Severity 0 leaves every batch as it is,
so it reproduces the clean metrics exactly. A noisy separation mixture keeps the references (the clean sources)
and any cached mixture embedding (HFRA's alignment target, which only its training loss reads).

Donors (seeded, fixed per run):

* Segmentation, off-screen sound: clip ``i`` gets the audio (and valid length) of another test clip whose categories
  share nothing with clip ``i``'s. Categories: S4, the clip's category (``LABELS``); AVSS, the classes in its
  ground-truth masks (recorded during the clean pass); MS3 has no per-clip category, so any other clip qualifies
  (its sound may come from a kind of object that is also in these frames; the MS3 off-screen FPR is then a
  pessimistic number). A clip without a qualifying donor gets any other clip; ``n_offscreen_fallback`` counts them.
* Separation, absent source: mixture ``i``'s first source is queried with the picture of a test clip of a class
  in neither source (the clip's picture as the evaluation renders it: centred window, no flip). Same class: the
  second source is queried with the picture of another test clip of the first source's class (the first source's
  own picture when the split has no other; ``n_same_class_fallback`` counts them).
"""

import copy
import math
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from avtoolkit.analysis.gates import GateRecorder
from avtoolkit.analysis.models import corrupt_visual
from avtoolkit.data.avsbench import read_clip_audio
from avtoolkit.data.batch import (
    FRAMES,
    LABELS,
    MASK_VALID,
    MASKS,
    MIXTURE,
    SOURCES,
    VISUAL_EMB,
    WAVEFORM,
    WAVEFORM_LENGTH,
)
from avtoolkit.data.datamodules import BaseAVDataModule, SegmentationDataModule, SeparationDataModule
from avtoolkit.data.mixing import MixAndSeparate
from avtoolkit.metrics.separation import SeparationMetrics
from avtoolkit.robustness.corruptions import (
    SEGMENTATION_CORRUPTIONS,
    SEPARATION_CORRUPTIONS,
    CorruptionSpec,
    add_noise_at_snr,
    black_frames,
    blank_frames,
    blur_frames,
    frame_noise,
    loudness_matched_noise,
    occlude_frames,
    silence,
)
from avtoolkit.robustness.metrics import ForegroundRate, energy_ratio_db, global_scores
from avtoolkit.tasks.base import BaseAVTask
from avtoolkit.tasks.segmentation import AVSegmentationTask
from avtoolkit.tasks.separation import AVSeparationTask

__all__ = [
    "CheckpointResult",
    "QueryPictures",
    "SuiteResult",
    "apply_segmentation_audio",
    "apply_separation_case",
    "case_generator",
    "choose_absent_donors",
    "choose_offscreen_donors",
    "choose_same_class_donors",
    "evaluate_segmentation",
    "evaluate_separation",
    "load_experiment",
    "load_weights",
    "run_robustness",
]

TaskKind = Literal["segmentation", "separation"]
Batch = dict[str, Tensor]
Metrics = dict[str, float]


@dataclass
class CheckpointResult:
    """One checkpoint's numbers.

    Attributes:
        label: Its name in the report (the checkpoint's file stem, made unique).
        path: The checkpoint file.
        experiment: The experiment config it was evaluated with.
        model: The network's class name.
        clean: Metrics on the clean test split.
        cases: Corruption → severity → metrics.
        global_scores: Segmentation: the combined scores of :func:`~avtoolkit.robustness.metrics.global_scores`.
        notes: Counts and remarks (e.g. donor fallbacks).
    """

    label: str
    path: str
    experiment: str
    model: str
    clean: Metrics
    cases: dict[str, dict[int, Metrics]]
    global_scores: Metrics = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteResult:
    """Everything the report shows.

    Attributes:
        task: ``"segmentation"`` or ``"separation"``.
        dataset: The test data (AVSBench layout, or the separation tree's folder name).
        corruptions: The corruptions evaluated, by name.
        severities: The severities asked for.
        skipped: Corruptions asked for but not run, with the reason.
        checkpoints: One result per checkpoint, in the order given.
        seed: The seed of the corruptions and donors.
        metric_keys: The metrics plotted against severity, most important first.
    """

    task: TaskKind
    dataset: str
    corruptions: dict[str, CorruptionSpec]
    severities: tuple[int, ...]
    skipped: dict[str, str]
    checkpoints: list[CheckpointResult]
    seed: int
    metric_keys: tuple[str, ...]


# -- shared helpers ----------------------------------------------------------------------------------------


def case_generator(seed: int, name: str, severity: int, batch_index: int) -> torch.Generator:
    """The CPU generator of one batch of one case, seeded by ``(seed, name, severity, batch_index)``."""
    entropy = [seed, zlib.crc32(name.encode()), severity, batch_index]
    state = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) % (2**63)
    return torch.Generator().manual_seed(state)


def _to_device(batch: dict[str, Tensor], device: torch.device) -> Batch:
    return {key: value.to(device) for key, value in batch.items()}


SAMPLE_INDEX = "sample_index"
"""Batch key of each sample's index in its split, when the datamodule adds it."""


def _batches(loader: DataLoader, limit: int | None) -> Iterator[tuple[int, list[int], Batch]]:
    """``(batch index, index of each sample in the split, batch)``.

    The indices come from the batch's ``sample_index`` when the datamodule adds it, else from the position in
    the loader (evaluation loaders are in order).
    """
    start = 0
    for index, batch in enumerate(loader):
        if limit is not None and index >= limit:
            return
        size = next(iter(batch.values())).shape[0]
        given = batch.get(SAMPLE_INDEX)
        yield index, (given.tolist() if given is not None else list(range(start, start + size))), batch
        start += size


@contextmanager
def _deterministic() -> Iterator[None]:
    """Turn off cuDNN autotuning (which may change kernels between passes) during the evaluation."""
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def _selected(catalogue: dict[str, CorruptionSpec], names: list[str] | None) -> dict[str, CorruptionSpec]:
    if names is None:
        return dict(catalogue)
    unknown = [name for name in names if name not in catalogue]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown} for this task; choose from {sorted(catalogue)}")
    return {name: catalogue[name] for name in names}


def _severities_of(spec: CorruptionSpec, severities: tuple[int, ...]) -> list[int]:
    """The asked severities this corruption has (0, the identity, when asked).

    A single-level corruption has severity 1 only, run whenever a severity of 1 or more is asked.
    """
    if len(spec.levels) == 1:
        return [0] * (0 in severities) + [1] * (max(severities) >= 1)
    return [s for s in severities if s == 0 or s in spec.severities]


def _choose(generator: torch.Generator, candidates: list[int]) -> int:
    return candidates[int(torch.randint(len(candidates), (), generator=generator))]


# -- donors ------------------------------------------------------------------------------------------------


def choose_offscreen_donors(
    categories: dict[int, frozenset[int]], generator: torch.Generator
) -> tuple[dict[int, int], int]:
    """For each clip, a donor clip whose categories share nothing with its own (seeded).

    Args:
        categories: Clip index → its categories (empty: unknown, any other clip qualifies).
        generator: CPU random generator.

    Returns:
        Clip index → donor index (never the clip itself when there are two clips or more), and how many clips had
        no qualifying donor and got any other clip.
    """
    clips = sorted(categories)
    donors: dict[int, int] = {}
    fallbacks = 0
    for i in clips:
        others = [j for j in clips if j != i]
        allowed = [j for j in others if not categories[i] & categories[j]]
        if not allowed:
            fallbacks += 1
            allowed = others or [i]
        donors[i] = _choose(generator, allowed)
    return donors, fallbacks


def choose_absent_donors(
    mixture_labels: dict[int, frozenset[int]], clip_labels: list[int], generator: torch.Generator
) -> dict[int, int | None]:
    """For each mixture, a clip of a class in none of its sources (seeded); ``None`` when no class is absent.

    Args:
        mixture_labels: Mixture index → the class indices of its sources.
        clip_labels: Class index of every clip of the split.
        generator: CPU random generator.
    """
    donors: dict[int, int | None] = {}
    for i in sorted(mixture_labels):
        allowed = [j for j, label in enumerate(clip_labels) if label not in mixture_labels[i]]
        donors[i] = _choose(generator, allowed) if allowed else None
    return donors


def choose_same_class_donors(
    mixture_clips: dict[int, tuple[int, ...]], clip_labels: list[int], generator: torch.Generator
) -> tuple[dict[int, int], int]:
    """For each mixture, another clip of its first source's class, not in the mixture (seeded).

    Returns:
        Mixture index → donor clip (the first source's own clip when the split has no other of its class), and
        how many mixtures fell back to it.
    """
    donors: dict[int, int] = {}
    fallbacks = 0
    for i in sorted(mixture_clips):
        first = mixture_clips[i][0]
        allowed = [
            j for j, label in enumerate(clip_labels) if label == clip_labels[first] and j not in mixture_clips[i]
        ]
        if not allowed:
            fallbacks += 1
            allowed = [first]
        donors[i] = _choose(generator, allowed)
    return donors, fallbacks


# -- segmentation ------------------------------------------------------------------------------------------


def apply_segmentation_audio(
    name: str,
    level: float,
    batch: Batch,
    samples: list[int],
    generator: torch.Generator,
    read_donor: Callable[[int], tuple[Tensor, int]],
    donors: dict[int, int],
) -> Batch:
    """A segmentation batch with its audio corrupted (on the waveform, before the log-mel).

    Negative audio (``negative_*``) also empties the ground truth (``MASKS`` all zero; ``MASK_VALID`` unchanged: the
    same frames are evaluated). Other names leave the batch as it is.

    Args:
        name: ``audio_noise``, ``negative_silence``, ``negative_noise`` or ``negative_offscreen``.
        level: The corruption's parameter (``audio_noise``: SNR in dB).
        batch: The batch as the loader gives it (on any device), with ``WAVEFORM`` and ``WAVEFORM_LENGTH``.
        samples: Index of each sample in the test split (keys of ``donors``).
        generator: CPU random generator.
        read_donor: Clip index → its waveform (the batch's length, zero-padded) and valid length.
        donors: Clip index → donor clip index (``negative_offscreen``).

    Returns:
        A new batch dict (the input's tensors are not modified).
    """
    out = dict(batch)
    waveform, length = batch[WAVEFORM], batch.get(WAVEFORM_LENGTH)
    if name == "audio_noise":
        out[WAVEFORM] = add_noise_at_snr(waveform, level, length, generator)
        return out
    if name == "negative_silence":
        out[WAVEFORM] = silence(waveform)
    elif name == "negative_noise":
        out[WAVEFORM] = loudness_matched_noise(waveform, length, generator)
    elif name == "negative_offscreen":
        read = [read_donor(donors[i]) for i in samples]
        out[WAVEFORM] = torch.stack([wave for wave, _ in read]).to(waveform)
        out[WAVEFORM_LENGTH] = torch.tensor([n for _, n in read], device=waveform.device)
    else:
        return out
    out[MASKS] = torch.zeros_like(batch[MASKS])  # nothing in the frames sounds
    return out


def _frames(name: str, level: float, frames: Tensor, generator: torch.Generator) -> Tensor:
    """Visual corruptions of float frames (segmentation clips or separation query pictures)."""
    kind = name.split("_", 1)[1]
    if kind == "noise":
        return frame_noise(frames, level, generator)
    if kind == "blur":
        return blur_frames(frames, level)
    if kind == "occlusion":
        return occlude_frames(frames, level, generator)
    if kind == "black":
        return black_frames(frames, level, generator)
    if kind == "blank":
        return blank_frames(frames, level)
    raise ValueError(f"not a visual corruption: {name!r}")


def _clip_categories(batch: Batch, num_classes: int) -> list[frozenset[int]]:
    """Per clip of a clean batch: its category (S4), the classes of its masks (AVSS), or nothing (MS3)."""
    out = []
    for b in range(batch[MASKS].shape[0]):
        if num_classes > 1:
            classes = batch[MASKS][b][batch[MASK_VALID][b].bool()].unique().tolist()
            out.append(frozenset(c for c in classes if c != 0))
        else:
            label = int(batch[LABELS][b]) if LABELS in batch else -1
            out.append(frozenset([label]) if label >= 0 else frozenset())
    return out


@torch.no_grad()
def _segmentation_pass(
    task: AVSegmentationTask,
    datamodule: SegmentationDataModule,
    name: str,
    severity: int,
    level: float,
    seed: int,
    limit_batches: int | None,
    device: torch.device,
    donors: dict[int, int],
    categories: dict[int, frozenset[int]] | None = None,
) -> Metrics:
    metrics = copy.deepcopy(task.test_metrics).to(device)
    metrics.reset()
    fpr = ForegroundRate()
    dataset: Any = datamodule.datasets["test"]

    def read_donor(index: int) -> tuple[Tensor, int]:
        return read_clip_audio(dataset.clips[index], dataset.n_samples)

    for index, samples, cpu_batch in _batches(datamodule.dataloader("test"), limit_batches):
        if WAVEFORM not in cpu_batch:
            raise ValueError("the test batches carry no waveform (a log-mel cache?): audio corruptions need the audio")
        batch = _to_device(cpu_batch, device)
        generator = case_generator(seed, name, severity, index)
        if categories is not None:
            categories.update(zip(samples, _clip_categories(batch, task.num_classes), strict=True))
        corrupt = severity > 0 and name != "clean"
        if corrupt:
            batch = apply_segmentation_audio(name, level, batch, samples, generator, read_donor, donors)
        batch = datamodule.on_after_batch_transfer(batch, 0)
        if corrupt and name.startswith("frame_"):
            batch[FRAMES] = _frames(name, level, batch[FRAMES], generator)
        scores = task.scores(task(batch), tuple(batch[MASKS].shape[-2:]))
        scores = scores[:, :, 0] if task.num_classes == 1 else scores
        metrics.update(scores, batch[MASKS], batch[MASK_VALID])
        fpr.update(scores, batch[MASK_VALID])
    out = {key: float(value) for key, value in metrics.compute().items()}
    out["fpr"] = fpr.compute()
    return out


def evaluate_segmentation(
    task: AVSegmentationTask,
    datamodule: SegmentationDataModule,
    corruptions: dict[str, CorruptionSpec],
    severities: tuple[int, ...] = (1, 2, 3),
    seed: int = 0,
    limit_batches: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Metrics, dict[str, dict[int, Metrics]], Metrics, dict[str, Any]]:
    """Clean and corrupted metrics of a segmentation task on its test split.

    Args:
        task: The task, weights loaded.
        datamodule: Its datamodule (not set up yet, or set up for "test"); its log-mel cache is bypassed.
        corruptions: The :data:`~avtoolkit.robustness.corruptions.SEGMENTATION_CORRUPTIONS` to run.
        severities: Severities to run (0 = the identity, scored as a case of its own).
        seed: Seed of the corruptions and donors.
        limit_batches: Evaluate only this many test batches (``None``: all).
        device: Where the model runs.

    Returns:
        Clean metrics (the task's test metrics, e.g. ``mj``, ``mf``, plus ``fpr``), corruption → severity →
        metrics, the combined scores (:func:`~avtoolkit.robustness.metrics.global_scores`), and notes.
    """
    device = torch.device(device)
    if datamodule.cache_dir is not None:
        datamodule.cache_dir = None  # audio corruptions need the waveform: read the audio, compute the log-mel
        datamodule._log_mel_cache = None
        datamodule.datasets.pop("test", None)  # built with the cache: build it again without
    datamodule.prepare_data()
    datamodule.setup("test")
    task.to(device).eval()
    categories: dict[int, frozenset[int]] = {}
    with _deterministic():
        clean = _segmentation_pass(task, datamodule, "clean", 0, math.nan, seed, limit_batches, device, {}, categories)
        donors, fallbacks = choose_offscreen_donors(categories, case_generator(seed, "negative_offscreen/donors", 1, 0))
        cases: dict[str, dict[int, Metrics]] = {}
        for name, spec in corruptions.items():
            cases[name] = {}
            for severity in _severities_of(spec, severities):
                level = spec.level(severity) if severity else math.nan
                cases[name][severity] = _segmentation_pass(
                    task, datamodule, name, severity, level, seed, limit_batches, device, donors
                )
    keys = ("mj", "mf") if task.num_classes == 1 else ("miou", "mf")
    fprs = {name: cases[name][1]["fpr"] for name in cases if name.startswith("negative_") and 1 in cases[name]}
    notes: dict[str, Any] = {"n_clips": len(categories)}
    if "negative_offscreen" in corruptions:
        notes["n_offscreen_fallback"] = fallbacks
    return clean, cases, global_scores(clean, fprs, keys), notes


# -- separation --------------------------------------------------------------------------------------------


class QueryPictures:
    """The query picture (frames or cached embedding) of any clip of a split, as its evaluation renders it.

    A one-source view of the split's clips: clip ``j`` alone, centred window, no flip, the same frames (or cached
    embedding) it has as the first source of test mixture ``j``.
    """

    def __init__(self, dataset: MixAndSeparate) -> None:
        self.view = MixAndSeparate(
            dataset.clips,
            n_sources=1,
            window=dataset.window,
            frames_per_source=dataset.frames_per_source,
            image_size=dataset.image_size,
            train=False,
            seed=dataset.seed,
            frame_embedding=dataset.frame_embedding,
        )

    def __call__(self, clip: int, key: str, like: Tensor) -> Tensor:
        """Clip ``clip``'s ``FRAMES`` (float in [0, 1]) or ``VISUAL_EMB``, on ``like``'s device and dtype."""
        value = self.view[clip][key][0]
        return (value.float() / 255.0 if value.dtype == torch.uint8 else value).to(like)


def apply_separation_case(
    name: str,
    level: float,
    batch: Batch,
    samples: list[int],
    generator: torch.Generator,
    pictures: QueryPictures | None,
    donors: dict[int, Any],
) -> Batch:
    """A prepared separation batch (after ``on_after_batch_transfer``) under one corruption.

    Args:
        name: A :data:`~avtoolkit.robustness.corruptions.SEPARATION_CORRUPTIONS` name.
        level: The corruption's parameter (SNR in dB, noise std, ...; unused by the query swaps).
        batch: The batch: ``MIXTURE``, ``SOURCES`` and float ``FRAMES`` or ``VISUAL_EMB``.
        samples: Index of each mixture in the test split (keys of ``donors``).
        generator: CPU random generator.
        pictures: The pictures of the split's clips (query swaps).
        donors: Mixture index → donor clip (``absent_query``: for source 1, ``same_class_query``: for source 2).

    Returns:
        A new batch dict (the input's tensors are not modified). ``SOURCES`` stay the clean references.
    """
    out = dict(batch)
    key = VISUAL_EMB if VISUAL_EMB in batch else FRAMES
    if name == "mixture_noise":
        out[MIXTURE] = add_noise_at_snr(batch[MIXTURE], level, None, generator)
    elif name == "query_noise" and key == VISUAL_EMB:
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        out = corrupt_visual(batch, "noise", level, seed)
    elif name.startswith("query_"):
        out[FRAMES] = _frames(name, level, batch[FRAMES], generator)
    elif name in ("absent_query", "same_class_query"):
        assert pictures is not None
        slot = 0 if name == "absent_query" else 1
        visual = batch[key].clone()
        for b, i in enumerate(samples):
            visual[b, slot] = pictures(donors[i], key, visual)
        out[key] = visual
    return out


@torch.no_grad()
def _separation_pass(
    task: AVSeparationTask,
    datamodule: SeparationDataModule,
    name: str,
    severity: int,
    level: float,
    seed: int,
    backend: Literal["fast", "mir_eval"],
    limit_batches: int | None,
    device: torch.device,
    pictures: QueryPictures | None,
    donors: dict[int, Any],
) -> Metrics:
    metrics = SeparationMetrics(backend=backend, protocol=task.protocol).to(device)
    gate = getattr(task.model, "gate", None)
    recorder = GateRecorder(gate) if gate is not None else None
    energies: list[Tensor] = []
    for index, samples, cpu_batch in _batches(datamodule.dataloader("test"), limit_batches):
        batch = datamodule.on_after_batch_transfer(_to_device(cpu_batch, device), 0)
        if severity > 0 and name != "clean":
            generator = case_generator(seed, name, severity, index)
            batch = apply_separation_case(name, level, batch, samples, generator, pictures, donors)
        if recorder is not None:
            with recorder:
                estimates = task(batch)
        else:
            estimates = task(batch)
        metrics.update(estimates, batch[SOURCES], batch[MIXTURE], batch.get(LABELS))
        energies.append(energy_ratio_db(estimates, batch[MIXTURE][:, None]).cpu())
    out = {key: float(value) for key, value in metrics.compute().items()}
    energy = torch.cat(energies)  # (n, N)
    for slot in range(energy.shape[1]):
        out[f"energy_db_{slot + 1}"] = float(energy[:, slot].mean())
    if name == "absent_query" and severity > 0:
        out["absent_energy_db"] = float(energy[:, 0].mean())
        out["absent_energy_db_median"] = float(energy[:, 0].median())
    if recorder is not None and recorder.summaries:
        out["sigma_mean"] = recorder.statistics().mean
    return out


def evaluate_separation(
    task: AVSeparationTask,
    datamodule: SeparationDataModule,
    corruptions: dict[str, CorruptionSpec],
    severities: tuple[int, ...] = (1, 2, 3),
    seed: int = 0,
    backend: Literal["fast", "mir_eval"] = "fast",
    limit_batches: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Metrics, dict[str, dict[int, Metrics]], dict[str, str], dict[str, Any]]:
    """Clean and corrupted metrics of a separation task on its test split.

    Args:
        task: The task, weights loaded.
        datamodule: Its datamodule (caches are filled if needed).
        corruptions: The :data:`~avtoolkit.robustness.corruptions.SEPARATION_CORRUPTIONS` to run.
        severities: Severities to run (0 = the identity, scored as a case of its own).
        seed: Seed of the corruptions and donors.
        backend: BSS Eval implementation ("fast": batched, within 0.01 dB of mir_eval).
        limit_batches: Evaluate only this many test batches (``None``: all).
        device: Where the model runs.

    Returns:
        Clean metrics (SDR, SIR, SAR, SDRi, ... of :class:`~avtoolkit.metrics.SeparationMetrics`; ``energy_db_k``,
        the mean energy of source k's estimate relative to the mixture; ``sigma_mean`` for gated models),
        corruption → severity → metrics (``absent_energy_db`` for the absent query), the corruptions skipped with
        the reason, and notes.
    """
    device = torch.device(device)
    datamodule.prepare_data()
    datamodule.setup("test")
    task.to(device).eval()
    dataset = datamodule.datasets["test"]
    if not isinstance(dataset, MixAndSeparate):
        raise TypeError(f"the test split must be a MixAndSeparate dataset, got {type(dataset).__name__}")
    embedded = datamodule.frame_cache is not None
    n_mixtures = len(dataset) if limit_batches is None else min(len(dataset), limit_batches * datamodule.batch_size)
    recipes = {i: dataset.recipe(i).clips for i in range(n_mixtures)}
    clip_labels = [clip.label_index for clip in dataset.clips]
    mixture_labels = {i: frozenset(clip_labels[c] for c in clips) for i, clips in recipes.items()}
    skipped: dict[str, str] = {}
    notes: dict[str, Any] = {"n_mixtures": n_mixtures}
    donors: dict[str, dict[int, Any]] = {}
    runnable: dict[str, CorruptionSpec] = {}
    for name, spec in corruptions.items():
        if embedded and name.startswith("query_") and name != "query_noise":
            skipped[name] = "the batches carry cached picture embeddings, not pictures (only query_noise applies)"
            continue
        if name == "absent_query":
            chosen = choose_absent_donors(mixture_labels, clip_labels, case_generator(seed, f"{name}/donors", 1, 0))
            if any(d is None for d in chosen.values()):
                skipped[name] = "some test mixtures contain every class of the split: no absent class to query"
                continue
            donors[name] = chosen
        if name == "same_class_query":
            if dataset.n_sources < 2:
                skipped[name] = "needs mixtures of at least two sources"
                continue
            donors[name], notes["n_same_class_fallback"] = choose_same_class_donors(
                recipes, clip_labels, case_generator(seed, f"{name}/donors", 1, 0)
            )
        runnable[name] = spec
    pictures = QueryPictures(dataset) if donors else None
    with _deterministic():
        clean = _separation_pass(task, datamodule, "clean", 0, math.nan, seed, backend, limit_batches, device, None, {})
        cases: dict[str, dict[int, Metrics]] = {}
        for name, spec in runnable.items():
            cases[name] = {}
            for severity in _severities_of(spec, severities):
                level = spec.level(severity) if severity else math.nan
                cases[name][severity] = _separation_pass(
                    task, datamodule, name, severity, level, seed, backend, limit_batches, device, pictures,
                    donors.get(name, {}),
                )  # fmt: skip
    return clean, cases, skipped, notes


# -- the entry point ---------------------------------------------------------------------------------------


def load_experiment(experiment: Path, ckpt_path: Path | None = None) -> tuple[BaseAVTask, BaseAVDataModule]:
    """The task and datamodule of an experiment config (as ``avtoolkit test --config`` builds them).

    Args:
        experiment: The experiment config.
        ckpt_path: A Lightning checkpoint whose ``state_dict`` to load into the task (strictly).
    """
    from avtoolkit.cli import lightning_cli

    cli = lightning_cli(["--config", str(experiment)], run=False)
    task, datamodule = cli.model, cli.datamodule
    if ckpt_path is not None:
        load_weights(task, ckpt_path)
    return task, datamodule


def load_weights(task: BaseAVTask, ckpt_path: Path) -> None:
    """Load a Lightning checkpoint's ``state_dict`` into ``task`` (strict: the network must match)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    task.load_state_dict(checkpoint["state_dict"])


def _labels(paths: list[Path]) -> list[str]:
    """Unique short names of checkpoints: the file stem, else parent/stem, else numbered."""
    for make in (lambda p: p.stem, lambda p: f"{p.parent.name}/{p.stem}"):
        labels = [make(p) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i + 1}:{p.stem}" for i, p in enumerate(paths)]


def run_robustness(
    experiment: Path | list[Path],
    ckpt_path: Path | list[Path],
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    out: Path | None = None,
    seed: int = 0,
    backend: Literal["fast", "mir_eval"] = "fast",
    limit_batches: int | None = None,
    device: str | None = None,
) -> Path:
    """Evaluate checkpoints on their test split, clean and under each corruption, and write a report.

    Segmentation (S4/MS3/AVSS): negative audio (silence, noise at the clip's loudness, an off-screen sound; empty
    ground truth, scored by FPR, the fraction of pixels predicted as foreground), noise on the audio at 20/10/0 dB
    SNR, and corrupted frames (Gaussian noise, blur, an occluding block, black frames) at three severities; M_J and
    M_F (AVSS: mIoU, mean F) per case, and harmonic means of M_J / M_F with 1 − FPR. Separation: an absent-source
    query (the energy of its estimate relative to the mixture, dB), a noisy mixture at 20/10/0 dB SNR, corrupted or
    blank query pictures, two queries of one class; SDR/SIR/SAR/SDRi per case, and DGFNet's mean gate σ.
    Writes report.md, metrics.json and one PNG per corruption (metric against severity) into the report folder;
    several checkpoints share one report with a comparison table.

    Args:
        experiment: The experiment config the checkpoints were trained with (the FILE of `avtoolkit fit --config
            FILE`), or one config per checkpoint (to compare different models on the same test split).
        ckpt_path: The checkpoint to evaluate, or a list of them.
        corruptions: Which corruptions to run (default: all of the task's). Segmentation: negative_silence,
            negative_noise, negative_offscreen, audio_noise, frame_noise, frame_blur, frame_occlusion, frame_black.
            Separation: mixture_noise, query_noise, query_blur, query_occlusion, query_black, query_blank,
            absent_query, same_class_query.
        severities: Severities to run, from 0 (clean input: reproduces the clean metrics) to 3 (default: 1 2 3);
            negative audio and replaced queries have one level, reported as severity 1 and run whenever a severity
            of 1 or more is asked.
        out: Report folder (default: reports/<experiment name>/robustness); replaced atomically.
        seed: Seed of the corruptions and of the donor clips.
        backend: BSS Eval implementation for separation: fast (batched, within 0.01 dB of mir_eval) or mir_eval.
        limit_batches: Evaluate only the first N test batches (a quick look; the default is the whole split).
        device: Where the models run (default: cuda when available, else cpu).

    Returns:
        The report folder.
    """
    from avtoolkit.robustness.report import write_report

    ckpts = [ckpt_path] if isinstance(ckpt_path, Path | str) else list(ckpt_path)
    experiments = [experiment] if isinstance(experiment, Path | str) else list(experiment)
    ckpts, experiments = [Path(p) for p in ckpts], [Path(p) for p in experiments]
    if not ckpts:
        raise ValueError("no checkpoint given")
    if len(experiments) not in (1, len(ckpts)):
        raise ValueError(f"give one experiment config, or one per checkpoint ({len(ckpts)}); got {len(experiments)}")
    pairs = list(zip(experiments * len(ckpts) if len(experiments) == 1 else experiments, ckpts, strict=True))
    asked = tuple(sorted(set(severities))) if severities is not None else (1, 2, 3)
    if any(s < 0 or s > 3 for s in asked):
        raise ValueError(f"severities must lie in 0..3, got {list(asked)}")
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results: list[CheckpointResult] = []
    kind: TaskKind | None = None
    specs: dict[str, CorruptionSpec] = {}
    skipped: dict[str, str] = {}
    dataset = ""
    metric_keys: tuple[str, ...] = ()
    built: dict[Path, tuple[BaseAVTask, BaseAVDataModule]] = {}
    for (config, ckpt), label in zip(pairs, _labels(ckpts), strict=True):
        if config not in built:
            built[config] = load_experiment(config)
        task, datamodule = built[config]
        load_weights(task, ckpt)
        this: TaskKind = "segmentation" if isinstance(task, AVSegmentationTask) else "separation"
        if kind is not None and this != kind:
            raise ValueError(f"{ckpt} is a {this} model, the others are {kind} models: one report per task")
        kind = this
        result = CheckpointResult(label, str(ckpt), str(config), type(task.model).__name__, {}, {})
        if isinstance(task, AVSegmentationTask) and isinstance(datamodule, SegmentationDataModule):
            specs = _selected(SEGMENTATION_CORRUPTIONS, corruptions)
            result.clean, result.cases, result.global_scores, result.notes = evaluate_segmentation(
                task, datamodule, specs, asked, seed, limit_batches, run_device
            )
            dataset = f"{datamodule.dataset} ({datamodule.root})"
            metric_keys = ("mj", "mf", "fpr") if task.num_classes == 1 else ("miou", "mf", "fpr")
        elif isinstance(task, AVSeparationTask) and isinstance(datamodule, SeparationDataModule):
            specs = _selected(SEPARATION_CORRUPTIONS, corruptions)
            result.clean, result.cases, skipped_here, result.notes = evaluate_separation(
                task, datamodule, specs, asked, seed, backend, limit_batches, run_device
            )
            skipped.update(skipped_here)
            dataset = str(datamodule.root)
            gated = any("sigma_mean" in r.clean for r in [*results, result])
            metric_keys = ("sdr", "sdri", "sir", "sar") + (("sigma_mean",) if gated else ())
        else:
            raise TypeError(
                f"{config}: a {type(task).__name__} with a {type(datamodule).__name__} is neither a segmentation "
                "nor a separation experiment of this toolkit"
            )
        task.cpu()
        results.append(result)
    assert kind is not None
    run = {name: spec for name, spec in specs.items() if name not in skipped}
    suite = SuiteResult(kind, dataset, run, asked, skipped, results, seed, metric_keys)
    folder = out if out is not None else Path("reports") / experiments[0].stem / "robustness"
    return write_report(suite, Path(folder))
