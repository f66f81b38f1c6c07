"""What every separation network looks like to :class:`~avtoolkit.tasks.separation.AVSeparationTask`."""

from dataclasses import dataclass, field

import torch
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

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The parameters of the image backbone of each trainable frame encoder (none with cached embeddings)."""
        from avtoolkit.models.encoders.visual import PooledFrameEncoder

        encoders = [m for m in self.modules() if isinstance(m, PooledFrameEncoder)]
        return [p for encoder in encoders for p in encoder.backbone.parameters()]


def visual_vectors(batch: Batch, encoder: nn.Module | None, norm: "VisualStandardizer | None" = None) -> Tensor:
    """One visual vector per source, ``(B, N, D)``.

    Precomputed embeddings in the batch (``visual_emb``, from an embedding cache) are used as they are;
    otherwise ``encoder`` maps the frames ``(B, N, Tv, 3, H, W)`` to ``(B, N, D)`` or to per-frame
    ``(B, N, Tv, D)`` vectors, which are averaged over the frames. ``norm`` is then applied per vector.

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
    return vectors if norm is None else norm(vectors)


class VisualStandardizer(nn.Module):
    """Per-dimension standardisation of frozen visual embeddings, ``(e − μ) / σ``, with training-set statistics.

    Frozen image embeddings share a large common direction (CLIP's sit in a narrow cone) while what tells the
    sources apart is a few percent of their norm, so a freshly initialised projection ``sigmoid(W e + b)`` starts
    nearly constant. Standardising changes how the projection is optimised, not what it can express
    (``W (e − μ)/σ + b`` is again affine in ``e``). μ and σ are computed once over the embeddings of the training
    clips (:meth:`fit`; :class:`~avtoolkit.tasks.separation.AVSeparationTask` does it at the start of training from
    the datamodule's embedding cache) and saved with the model as buffers. They are never batch statistics, which
    would make each source's vector depend on the other sources of its batch (with one mixture of two sources,
    batch statistics reduce every dimension to ±1).

    Args:
        dim: D, the embedding size.
        eps: Added to the variance.
    """

    mean: Tensor
    std: Tensor
    fitted: Tensor

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, embeddings: Tensor) -> None:
        """Set μ and σ from ``(n, D)`` training embeddings (n ≥ 2)."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.mean.numel() or embeddings.shape[0] < 2:
            raise ValueError(
                f"VisualStandardizer.fit needs (n >= 2, {self.mean.numel()}) embeddings, got {tuple(embeddings.shape)}"
            )
        if not torch.isfinite(embeddings).all():
            raise ValueError("VisualStandardizer.fit got non-finite embeddings: check the visual embedding cache")
        values = embeddings.detach().to(self.mean.device, torch.float64)
        self.mean.copy_(values.mean(0))
        self.std.copy_((values.var(0, unbiased=False) + self.eps).sqrt())
        self.fitted.fill_(True)

    def forward(self, vectors: Tensor) -> Tensor:
        """``(..., D)`` → ``(..., D)`` standardised."""
        if not bool(self.fitted):
            raise RuntimeError(
                "VisualStandardizer has no statistics yet: AVSeparationTask fits them at the start of training from "
                "the datamodule's visual embedding cache (or call .fit(training_embeddings) yourself)"
            )
        return (vectors - self.mean.to(vectors.dtype)) / self.std.to(vectors.dtype)
