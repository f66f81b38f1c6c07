"""Representation analyses: modality gap, linear probes of (pooled) features.

HFRA's analyses: linear probes of the bottleneck features, and the modality gap (the distance between the mean
audio and the mean visual embedding). The caller collects the embeddings or feature maps by running a model
over data; these functions only compute the numbers.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ProbeResult", "linear_probe", "modality_gap", "pooled_features"]


def _as_matrix(x: Tensor, name: str) -> Tensor:
    """``x`` as a finite float64 ``(n, d)`` CPU tensor with n ≥ 1."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must be a (n, d) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    out = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def modality_gap(audio_embeddings: Tensor, visual_embeddings: Tensor, normalize: bool = True) -> float:
    """The modality gap: distance between the centroids of the audio and the visual embeddings.

    ``gap = ‖ mean_i â_i − mean_j v̂_j ‖₂`` with ``â = a / ‖a‖₂`` and ``v̂ = v / ‖v‖₂`` (Liang et al. 2022, "Mind
    the Gap": the embeddings live on the unit sphere, so the gap lies in [0, 2]). With ``normalize=False`` the
    raw embeddings are averaged (the Euclidean distance between the raw means; not scale invariant). The two
    sets need not be paired and may differ in size, but must share the embedding space (same ``d``).

    Args:
        audio_embeddings: ``(n, d)``.
        visual_embeddings: ``(m, d)``.
        normalize: L2-normalise every embedding before averaging (default, as Liang et al.).

    Returns:
        The gap as a float.

    Raises:
        ValueError: not 2-D, empty, different ``d``, non-finite values, or a zero vector when normalising.
    """
    a = _as_matrix(audio_embeddings, "audio_embeddings")
    v = _as_matrix(visual_embeddings, "visual_embeddings")
    if a.shape[1] != v.shape[1]:
        raise ValueError(f"embedding sizes differ: audio d={a.shape[1]}, visual d={v.shape[1]}")
    if normalize:
        for x, name in ((a, "audio_embeddings"), (v, "visual_embeddings")):
            zero = (x.norm(dim=1) == 0).nonzero()[:, 0]
            if len(zero):
                raise ValueError(f"{name} has zero vectors (rows {zero[:5].tolist()}); cannot normalise them")
        a = a / a.norm(dim=1, keepdim=True)
        v = v / v.norm(dim=1, keepdim=True)
    return float((a.mean(0) - v.mean(0)).norm())


def pooled_features(feature_maps: Tensor | Sequence[Tensor]) -> Tensor:
    """Global average pooling of ``(n, C, *spatial)`` feature maps into ``(n, C)`` vectors.

    Args:
        feature_maps: ``(n, C, h, w)`` (any number of trailing spatial dims, including none), or a sequence of
            per-batch tensors of such shape, concatenated along the first dim.

    Returns:
        ``(n, C)`` means over the spatial dims (same dtype and device; gradients are not detached).

    Raises:
        ValueError: fewer than 2 dims, an empty sequence, or batches with different channel/spatial shapes.
    """
    if not isinstance(feature_maps, Tensor):
        maps = list(feature_maps)
        if not maps:
            raise ValueError("feature_maps is an empty sequence")
        shapes = {tuple(m.shape[1:]) for m in maps}
        if len(shapes) > 1:
            raise ValueError(f"feature maps of the batches differ in shape (C, *spatial): {sorted(shapes)}")
        feature_maps = torch.cat(maps)
    if feature_maps.dim() < 2:
        raise ValueError(f"feature maps must be (n, C, *spatial), got shape {tuple(feature_maps.shape)}")
    return feature_maps.flatten(2).mean(-1) if feature_maps.dim() > 2 else feature_maps


@dataclass(frozen=True)
class ProbeResult:
    """Result of :func:`linear_probe`.

    Attributes:
        train_accuracy: Accuracy on the training split.
        test_accuracy: Accuracy on the held-out split.
        n_classes: Distinct labels.
        chance: Test accuracy of always predicting the training split's most frequent class (the majority
            baseline; ``1 / n_classes`` for balanced classes).
        n_train: Training samples.
        n_test: Test samples.
    """

    train_accuracy: float
    test_accuracy: float
    n_classes: int
    chance: float
    n_train: int
    n_test: int


def linear_probe(
    features: Tensor,
    labels: Tensor | Sequence[int] | Sequence[str],
    test_fraction: float = 0.3,
    seed: int = 0,
    regularization: float = 1.0,
    max_iter: int = 2000,
) -> ProbeResult:
    """Linear probe: multinomial logistic regression on standardised features, stratified train/test split.

    The features are standardised with the training split's mean and std (scikit-learn ``StandardScaler``), then
    ``LogisticRegression(C=regularization)`` (L2, lbfgs) is fitted on the training split. The split is
    stratified by label with ``ceil(test_fraction · n)`` test samples (scikit-learn's ``train_test_split``).

    Args:
        features: ``(n, d)``, e.g. :func:`pooled_features` of the U-Net bottleneck.
        labels: ``(n,)`` class labels (integers or strings).
        test_fraction: Fraction of samples held out, in (0, 1).
        seed: Seed of the split.
        regularization: Inverse L2 strength ``C`` of the logistic regression.
        max_iter: Iterations of the solver.

    Returns:
        A :class:`ProbeResult`.

    Raises:
        ValueError: fewer than 2 classes, a class with fewer than 2 samples, a split too small to hold every
            class on both sides, mismatched lengths, or non-finite features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = _as_matrix(features, "features").numpy()
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"labels must be (n,) = ({len(X)},), got shape {y.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"a linear probe needs at least 2 classes, got {len(classes)}")
    if counts.min() < 2:
        rare = classes[counts < 2].tolist()
        raise ValueError(f"every class needs at least 2 samples (one per split); too few for classes {rare}")
    n_test = math.ceil(test_fraction * len(y))
    n_train = len(y) - n_test
    if min(n_test, n_train) < len(classes):
        raise ValueError(
            f"test_fraction={test_fraction} gives {n_train} training and {n_test} test samples for {len(classes)} "
            "classes: each split needs at least one sample per class; change test_fraction or add samples"
        )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=n_test, random_state=seed, stratify=y)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=max_iter))
    probe.fit(X_train, y_train)
    train_classes, train_counts = np.unique(y_train, return_counts=True)
    majority = train_classes[train_counts.argmax()]
    return ProbeResult(
        train_accuracy=float(probe.score(X_train, y_train)),
        test_accuracy=float(probe.score(X_test, y_test)),
        n_classes=len(classes),
        chance=float(np.mean(y_test == majority)),
        n_train=len(y_train),
        n_test=len(y_test),
    )
