"""Frame encoders built on timm backbones (``features_only``), with local weight files and random init."""

import logging
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import Tensor, nn

from avtoolkit.errors import ConfigError
from avtoolkit.models.encoders.clip import read_state_dict

_SHOWN_KEYS = 5  # keys named per kind of mismatch, as load_matching (encoders.clip) names them
_TIMM_LOADER = "timm.models._builder"  # the logger of timm's load_pretrained
_TIMM_KEYS = re.compile(r"(Missing|Unexpected) keys \((.*)\) (?:discovered|found) while loading pretrained weights")
_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[(.*?)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[(.*?)\]\)"
)
_UNREADABLE = (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


def create_backbone(
    name: str, weights: str | Path | None, output_stride: int, out_indices: tuple[int, ...]
) -> nn.Module:
    """A timm ``features_only`` backbone, randomly initialised or loaded from a local weight file.

    ``output_stride`` 32 is every backbone's native stride and is not passed on, so backbones without dilation
    support (PVT-v2, Swin) build too. Weights are loaded by timm (so its per-model conversions of the original
    releases' checkpoints apply), but strictly: every tensor of the backbone must come from the file and the file
    may hold no tensor the architecture lacks (the classifier, which a feature backbone does not have, may be
    there or not).

    Raises:
        ConfigError: ``weights`` does not exist, cannot be read, or does not fit the architecture (the message
            names the file, the model and the first missing or unexpected keys or mismatched shapes).
    """
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(
            f"backbone weights file not found: {weights}. Set backbone_weights to a local weight file of the timm "
            f"model {name!r}, or to null for a random initialisation."
        )
    dilation: dict[str, Any] = {} if output_stride == 32 else {"output_stride": output_stride}
    with _timm_load_keys() as (missing, unexpected):
        try:
            model: nn.Module = timm.create_model(
                name,
                pretrained=weights is not None,
                pretrained_cfg_overlay={"file": str(weights)} if weights is not None else None,
                features_only=True,
                out_indices=out_indices,
                **dilation,
            )
        except _UNREADABLE as err:
            if weights is None or not _builds(name, out_indices, dilation):  # not about the weights
                raise
            raise ConfigError(_load_error(err, name, weights)) from err
    if weights is not None:
        _check_loaded(model, name, weights, missing, unexpected)
    return model


def _builds(name: str, out_indices: tuple[int, ...], dilation: dict[str, Any]) -> bool:
    """Whether the architecture builds without weights (then an error building it with them is about the file)."""
    try:
        timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices, **dilation)
    except Exception:
        return False
    return True


def _check_loaded(model: nn.Module, name: str, weights: str | Path, missing: list[str], unexpected: list[str]) -> None:
    """Raise when timm loaded the file non-strictly: backbone tensors not in it, or tensors it has the model lacks.

    ``missing`` are keys of the whole timm model; those of modules a feature backbone leaves out (the classifier,
    stages past the last requested feature) do not matter. The feature model names a kept module as the whole model
    does, or with its first dot as ``_`` (flattened stages), or under a prefix (``model.``, ``body.``).
    """
    kept = set(model.state_dict())

    def in_backbone(key: str) -> bool:
        flat = key.replace(".", "_", 1)
        return key in kept or flat in kept or any(k.endswith(f".{key}") for k in kept)

    relevant = [key for key in missing if in_backbone(key)]
    problems = [
        f"{len(found)} {kind} (first: {', '.join(found[:_SHOWN_KEYS])})"
        for kind, found in (("missing keys", relevant), ("unexpected keys", unexpected))
        if found
    ]
    if problems:
        raise ConfigError(
            f"weights {weights} do not fit the timm architecture {name!r}: {'; '.join(problems)}. Check that the file "
            "is a checkpoint of this architecture (backbone_weights and the backbone's name must match)."
        )


def _load_error(err: BaseException, name: str, weights: str | Path) -> str:
    """The message for a file timm failed to load.

    Its shape mismatches as ``load_matching`` lists them, why the file cannot be read at all (``read_state_dict``'s
    message), or timm's error.
    """
    shapes = [
        f"{key}: file {_shape(file)} vs model {_shape(model)}" for key, file, model in _SIZE_MISMATCH.findall(str(err))
    ]
    if shapes:
        found = f"{len(shapes)} shape mismatches (first: {', '.join(shapes[:_SHOWN_KEYS])})"
    else:
        try:
            read_state_dict(weights)
        except ValueError as unreadable:  # not a checkpoint at all
            return str(unreadable)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        found = f"{type(err).__name__}: {' '.join(lines[:3]).rstrip('.')}"
    return (
        f"weights {weights} do not fit the timm architecture {name!r}: {found}. Check that the file is a checkpoint "
        "of this architecture (backbone_weights and the backbone's name must match)."
    )


def _shape(dims: str) -> str:
    """The ``24, 3`` of ``torch.Size([24, 3])`` as ``(24, 3)``; ``(24,)`` for one dimension."""
    return str(tuple(int(d) for d in dims.split(",") if d.strip()))


@contextmanager
def _timm_load_keys() -> Iterator[tuple[list[str], list[str]]]:
    """Collect the missing and unexpected keys that timm reports while it loads pretrained weights.

    timm loads the weights of a ``features_only`` model non-strictly (it drops the classifier) and only logs the
    keys that did not match, as "Missing keys (...)" and "Unexpected keys (...) ... This may be expected". This
    catches those two records (they are not shown) and fills the two lists it yields; other records of timm's
    loader are shown as before.
    """
    logger = logging.getLogger(_TIMM_LOADER)
    shown = logger.getEffectiveLevel()
    missing: list[str] = []
    unexpected: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        match = _TIMM_KEYS.match(record.getMessage())
        if match is None:
            return record.levelno >= shown
        (missing if match[1] == "Missing" else unexpected).extend(key for key in match[2].split(", ") if key)
        return False

    level, disabled = logger.level, logger.disabled
    logger.addFilter(keep)
    logger.setLevel(min(shown, logging.INFO))  # the missing keys are logged at INFO
    logger.disabled = False
    try:
        yield missing, unexpected
    finally:
        logger.removeFilter(keep)
        logger.setLevel(level)
        logger.disabled = disabled


class PooledFrameEncoder(nn.Module):
    """Sound-of-Pixels visual branch: dilated CNN → 3×3 conv → max-pool over frames and space → activation.

    Input frames are floats in [0, 1] and normalised here with the backbone's mean/std.

    Args:
        backbone: timm model name (``resnet18`` in Sound of Pixels; ``test_resnet`` for tests).
        out_channels: K, the size of the visual vector (matches the audio network's output channels).
        output_stride: Backbone output stride (16: the last stage dilated, as in the paper).
        weights: Local weight file for the backbone (random initialisation when ``None``); one that is missing or
            does not fit the architecture is a :class:`~avtoolkit.errors.ConfigError` (see :func:`create_backbone`).
        activation: Applied to the pooled vector (``sigmoid`` in Sound of Pixels).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        backbone: str = "resnet18",
        out_channels: int = 32,
        output_stride: int = 16,
        weights: str | None = None,
        activation: Literal["sigmoid", "none"] = "sigmoid",
    ) -> None:
        super().__init__()
        network: Any = create_backbone(backbone, weights, output_stride, out_indices=(-1,))  # timm FeatureListNet
        self.backbone = network
        self.project = nn.Conv2d(network.feature_info.channels()[-1], out_channels, kernel_size=3, padding=1)
        self.activation = nn.Sigmoid() if activation == "sigmoid" else nn.Identity()
        config = network.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, N, Tv, 3, H, W)`` frames → ``(B, N, K)`` one vector per source."""
        B, N, Tv = frames.shape[:3]
        x = (frames.flatten(0, 2) - self.mean) / self.std
        features = self.project(self.backbone(x)[-1])  # (B·N·Tv, K, h, w)
        pooled = features.amax(dim=(-2, -1)).view(B, N, Tv, -1).amax(dim=2)
        return self.activation(pooled)
