"""What every separation network looks like to :class:`~avtoolkit.tasks.separation.AVSeparationTask`."""

from dataclasses import dataclass, field

from torch import Tensor, nn

from avtoolkit.data.batch import FRAMES, VISUAL_EMB, Batch


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


def visual_vectors(batch: Batch, encoder: nn.Module | None, norm: nn.Module | None = None) -> Tensor:
    """One visual vector per source, ``(B, N, D)``.

    Precomputed embeddings in the batch (``visual_emb``, from an embedding cache) are used as they are;
    otherwise ``encoder`` maps the frames ``(B, N, Tv, 3, H, W)`` to ``(B, N, D)`` or to per-frame
    ``(B, N, Tv, D)`` vectors, which are averaged over the frames. ``norm`` (a :func:`visual_standardizer`)
    is then applied per vector.

    Raises:
        ValueError: neither embeddings in the batch nor an encoder to compute them.
    """
    if VISUAL_EMB in batch:
        vectors = batch[VISUAL_EMB]
    elif encoder is None:
        raise ValueError(
            "the batch has no precomputed visual embeddings ('visual_emb') and the model has no visual_encoder: "
            "configure the datamodule's visual embedding cache, or give the model a visual_encoder"
        )
    else:
        vectors = encoder(batch[FRAMES])
        vectors = vectors.mean(dim=2) if vectors.dim() == 4 else vectors
    return vectors if norm is None else norm(vectors.flatten(0, 1)).view_as(vectors)


def visual_standardizer(dim: int) -> nn.Module:
    """Per-dimension standardisation of the visual vectors: running mean/variance, no learned affine.

    Frozen image embeddings share a large common direction (CLIP's sit in a narrow cone: mean pairwise cosine
    ≈ 0.65 on the synthetic data with random weights) while what tells the sources apart is a few percent of
    their norm, so a freshly initialised projection ``sigmoid(W e + b)`` is nearly constant and the networks
    learn to ignore vision. Every visual path of the fusion library starts with a linear projection, and at
    evaluation ``W · (e − μ)/σ + b`` is again ``W' e + b'``: standardising changes how the projection is
    optimised, not what it can express.
    """
    return nn.BatchNorm1d(dim, affine=False)
