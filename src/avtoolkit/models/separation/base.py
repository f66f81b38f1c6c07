"""What every separation network looks like to :class:`~avtoolkit.tasks.separation.AVSeparationTask`."""

from dataclasses import dataclass, field

from torch import Tensor, nn

from avtoolkit.data.batch import Batch


@dataclass
class SeparationOutput:
    """A separation network's output.

    Attributes:
        mask_logits: ``(B, N, F, T)`` one mask (before its activation) per source, on the network's spectrogram
            grid (the log-frequency-warped one when the task warps).
        losses: Auxiliary training losses, already weighted, that the task adds to the mask objective
            (e.g. a representation-alignment term). Logged under their names.
    """

    mask_logits: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


class SeparationModel(nn.Module):
    """Base class: ``forward(spectrogram, batch) -> SeparationOutput``.

    ``spectrogram`` is the mixture's log-magnitude ``(B, 1, F, T)`` computed by the task on the batch's device;
    ``batch`` carries the per-source visual inputs (``frames`` or ``visual_emb``, see ``avtoolkit.data.batch``).
    """

    def forward(self, spectrogram: Tensor, batch: Batch) -> SeparationOutput:
        """Mask logits for every source of every mixture in the batch."""
        raise NotImplementedError
