"""Inside FAVS: FDED's frequency bands and SCMC's expert routing.

* :func:`fded_bands`: each band of a feature map before FDED (the split of its input) and after (enhanced,
  weighted: the terms of Eq. 6, which sum to FDED's output).
* :class:`RoutingRecorder`: forward hooks on every SCMC of a network that keep the routing of each frame;
  :meth:`RoutingRecorder.usage` turns it into per-class expert usage and mean k, per stage and stream.
* The aliasing ratio of the backbone stages with and without ARS is
  :func:`avtoolkit.analysis.aliasing.backbone_aliasing`.

Example::

    with RoutingRecorder(model) as recorder:
        for batch in loader:
            model(batch)
            labels.append(batch["labels"])
    usage = recorder.usage(torch.cat(labels), num_classes=len(names))
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from avtoolkit.fusion.fded import FDED
from avtoolkit.fusion.scmc import SCMC, SCMCOutput


@torch.no_grad()
def fded_bands(fded: FDED, x: Tensor) -> dict[str, dict[str, Tensor]]:
    """The frequency bands of ``x`` ``(B, T, C, H, W)`` before and after an FDED block.

    Returns:
        ``{"before": {band: map}, "after": {band: map}}`` with the band names of ``fded.names`` (high, mid, low,
        residual), each ``(B, T, C, H, W)``. "before" sums to the pre-processed input, "after" (the high band
        enhanced, every band scaled by its recomposition weight, Eq. 6) sums to ``fded(x)``.
    """
    before = fded.bands(x)
    after = {}
    for weight, name in zip(fded.weights, fded.names, strict=True):
        band = fded.enhance(before[name]) if name == fded.names[0] else before[name]
        after[name] = weight.view(1, 1, -1, 1, 1) * band
    return {"before": before, "after": after}


def band_energy(bands: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean absolute value over channels of each band map: ``(B, T, H, W)`` per band, for display."""
    return {name: band.abs().mean(dim=2) for name, band in bands.items()}


@dataclass
class ExpertUsage:
    """Routing of one SCMC stream, per class.

    Attributes:
        usage: ``(n_classes, N_e)`` fraction of a class's frames whose stream ran each expert.
        mean_k: ``(n_classes,)`` mean number of experts per frame.
        frames: ``(n_classes,)`` frames of each class (classes without frames have NaN rows).
    """

    usage: Tensor
    mean_k: Tensor
    frames: Tensor


class RoutingRecorder:
    """Record the expert routing of every :class:`~avtoolkit.fusion.scmc.SCMC` inside ``model``.

    Args:
        model: A network holding SCMC modules (e.g. :class:`~avtoolkit.models.segmentation.favs.FAVS`).

    Raises:
        ValueError: the model has no SCMC.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = {name: module for name, module in model.named_modules() if isinstance(module, SCMC)}
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no SCMC module to record (use_scmc=False?)")
        self.records: dict[str, list[dict[str, Tensor]]] = {name: [] for name in self.modules}
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: SCMCOutput) -> None:
            self.records[name].append(
                {
                    "selected_visual": output.selected_visual.flatten(0, 1).cpu(),
                    "selected_audio": output.selected_audio.flatten(0, 1).cpu(),
                    "k_visual": output.k_visual.flatten().cpu(),
                    "k_audio": output.k_audio.flatten().cpu(),
                    "frames": torch.tensor(output.k_visual.shape[1]),
                }
            )

        return record

    def __enter__(self) -> "RoutingRecorder":
        if not self._handles:
            self._handles = [module.register_forward_hook(self._hook(n)) for n, module in self.modules.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def usage(self, labels: Tensor | Sequence[Tensor], num_classes: int) -> dict[str, dict[str, ExpertUsage]]:
        """Per-class expert usage and mean k: ``{scmc module name: {"visual" | "audio": ExpertUsage}}``.

        Args:
            labels: One class index per clip, in the order the clips ran (``(n_clips,)`` or per batch); every frame
                of a clip counts for its class.
            num_classes: Number of classes.
        """
        labels = (labels if isinstance(labels, Tensor) else torch.cat(list(labels))).cpu()
        result = {}
        for name, records in self.records.items():
            if not records:
                raise ValueError(f"nothing recorded for {name}: run the model inside the recorder's with-block")
            n_frames = sum(len(r["k_visual"]) for r in records)
            frames_per_clip = int(records[0]["frames"])
            if len(labels) * frames_per_clip != n_frames:
                raise ValueError(
                    f"{len(labels)} labels for {n_frames // frames_per_clip} recorded clips: give one label per "
                    "clip, in the order the batches ran"
                )
            per_frame = labels.repeat_interleave(frames_per_clip)
            result[name] = {
                stream: _per_class(
                    torch.cat([r[f"selected_{stream}"] for r in records]).float(),
                    torch.cat([r[f"k_{stream}"] for r in records]).float(),
                    per_frame,
                    num_classes,
                )
                for stream in ("visual", "audio")
            }
        return result


def _per_class(selected: Tensor, k: Tensor, labels: Tensor, num_classes: int) -> ExpertUsage:
    frames = torch.bincount(labels, minlength=num_classes).double()
    usage = torch.zeros(num_classes, selected.shape[1], dtype=torch.float64).index_add_(0, labels, selected.double())
    mean_k = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, k.double())
    return ExpertUsage(usage / frames[:, None], mean_k / frames, frames.long())
