"""Run a trained separation task over batches and collect what the analyses need.

These drivers take an :class:`~avtoolkit.tasks.separation.AVSeparationTask` and batches already prepared on its
device (``datamodule.on_after_batch_transfer`` applied) and return tensors for the pure functions of this
package: DGFNet's gate under corrupted vision (the paper's noise stress test), the bottleneck features of single
sources (linear probe), and audio/visual embeddings (modality gap).
"""

from collections.abc import Iterable, Iterator
from typing import Literal

import torch
from torch import Tensor

from avtoolkit.analysis.gates import GateRecorder, GateStats, corrupt_frames, derangement
from avtoolkit.data.batch import FRAMES, LABELS, MIXTURE, SOURCES, VISUAL_EMB, Batch
from avtoolkit.models.separation.base import visual_vectors
from avtoolkit.tasks.separation import AVSeparationTask

VisualCorruption = Literal["noise", "shuffle"]


def corrupt_visual(batch: Batch, kind: VisualCorruption, strength: float = 1.0, seed: int = 0) -> dict[str, Tensor]:
    """The batch with its visual input corrupted: frames (``corrupt_frames``) or precomputed embeddings.

    Embeddings get Gaussian noise of ``strength`` × their typical per-dimension scale ("noise"), or each mixture
    another mixture's embeddings ("shuffle", a random derangement across the batch).
    """
    out = dict(batch)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if FRAMES in batch and VISUAL_EMB not in batch:
        corrupted = corrupt_frames(
            batch[FRAMES].cpu(), "shuffle" if kind == "shuffle" else "noise", strength, generator
        )
        out[FRAMES] = corrupted.to(batch[FRAMES].device)
        return out
    embeddings = batch[VISUAL_EMB]
    if kind == "shuffle":
        out[VISUAL_EMB] = embeddings[derangement(len(embeddings), generator, embeddings.device)]
    else:
        scale = embeddings.norm(dim=-1, keepdim=True) / embeddings.shape[-1] ** 0.5
        noise = torch.randn(embeddings.shape, generator=generator).to(embeddings)
        out[VISUAL_EMB] = embeddings + strength * scale * noise
    return out


@torch.no_grad()
def gate_stress_test(
    task: AVSeparationTask, batches: Iterable[Batch], kinds: tuple[VisualCorruption, ...] = ("noise", "shuffle")
) -> dict[str, GateStats]:
    """DGFNet's gate σ on clean and corrupted visual input, per corruption (keys ``"clean"`` and each kind).

    A model that learned to trust vision only when it is informative lowers σ when vision is corrupted.
    """
    gate = getattr(task.model, "gate", None)
    if gate is None:
        raise ValueError(f"{type(task.model).__name__} has no gating fusion module (model.gate)")
    task.eval()
    recorders = {name: GateRecorder(gate) for name in ("clean", *kinds)}
    labels: list[Tensor] = []
    for batch in batches:
        labels.append(batch[LABELS])
        for name, recorder in recorders.items():
            with recorder:
                task(batch if name == "clean" else corrupt_visual(batch, name))  # type: ignore[arg-type]
    return {name: recorder.statistics(labels) for name, recorder in recorders.items()}


def _single_sources(batches: Iterable[Batch]) -> Iterator[dict[str, Tensor]]:
    """Each source of each mixture as a one-source batch item (for probing what the encoder sees of it)."""
    for batch in batches:
        sources = batch[SOURCES].flatten(0, 1)
        item = {MIXTURE: sources, LABELS: batch[LABELS].flatten()}
        if VISUAL_EMB in batch:
            item[VISUAL_EMB] = batch[VISUAL_EMB].flatten(0, 1)[:, None]
        if FRAMES in batch:
            item[FRAMES] = batch[FRAMES].flatten(0, 1)[:, None]
        yield item


@torch.no_grad()
def source_representations(task: AVSeparationTask, batches: Iterable[Batch]) -> dict[str, Tensor]:
    """Per source (alone, not mixed): pooled innermost encoder features, visual vector, label.

    Returns:
        ``bottleneck (n, C)`` (global-average-pooled U-Net encoder output of the source's own spectrogram),
        ``visual (n, D)``, ``labels (n,)`` and, for models with an alignment projection (HFRA), ``audio (n, D')``
        — the projected bottleneck, in the space the alignment pulls towards CLAP.
    """
    task.eval()
    model = task.model
    unet = getattr(model, "unet", None)
    if unet is None:
        raise ValueError(f"{type(model).__name__} has no U-Net encoder to probe")
    out: dict[str, list[Tensor]] = {"bottleneck": [], "visual": [], "labels": [], "audio": []}
    projection = getattr(model, "align_projection", None)
    for item in _single_sources(batches):
        pooled = unet.encode(task.front_end(item[MIXTURE])["input"])[0].mean(dim=(-2, -1))
        out["bottleneck"].append(pooled)
        out["visual"].append(visual_vectors(item, getattr(model, "visual_encoder", None))[:, 0])
        out["labels"].append(item[LABELS])
        if projection is not None:
            out["audio"].append(projection(pooled))
    return {name: torch.cat(values) for name, values in out.items() if values}
