"""Multi-scale timm backbone (``features_only``) with optional SFM adaptive resampling before its stage transitions.

The SFM plug-ins: :mod:`avtoolkit.fusion.sfm`. The backbone returns NCHW feature maps at the requested output
strides, fine to coarse.
An ARS module (:class:`~avtoolkit.fusion.sfm.ARS`) can sit before the transition into stride 8, 16 or 32: the timm
module that produces the first feature at that stride (``feature_info.module_name()``; ``layer2`` of a ResNet,
``stages.1`` of a PVT-v2 or ConvNeXt, ``layers.1`` of a Swin) is wrapped in an :class:`ARSStage`, which resamples
the module's input, records the grid and runs the module. With α = 0 every ARS returns its input unchanged, so the
network is exactly the plain backbone. Wrapped modules keep their parameters under ``<module>.stage``.

Channels-last backbones (timm's Swin, MambaOut: ``output_fmt == "NHWC"``) pass NHWC maps between stages; ARS
permutes around its NCHW computation there, and the returned features are permuted to NCHW.
"""

from itertools import pairwise
from typing import Any

import timm
import torch
from torch import Tensor, nn

from avtoolkit.fusion.sfm import ARS
from avtoolkit.models.encoders.visual import create_backbone

__all__ = ["ARS_STRIDES", "ARSStage", "MultiScaleBackbone", "is_channels_last"]

ARS_STRIDES = (8, 16, 32)  # the stage transitions ARS may precede, named by the stride they produce


def is_channels_last(model: nn.Module) -> bool:
    """Whether a timm feature model passes and returns channels-last (NHWC) maps.

    Reads the model's ``output_fmt`` (a timm ``Format`` or a string); models without one are NCHW.
    """
    fmt = getattr(model, "output_fmt", None)
    if fmt is None:
        return False
    return str(getattr(fmt, "value", fmt)).upper() == "NHWC"


def _feature_info(name: str) -> list[dict[str, Any]]:
    """All feature levels of a timm model (``reduction``, ``num_chs``, ``module``), without allocating weights."""
    if not timm.is_model(name):
        raise ValueError(f"MultiScaleBackbone name {name!r} is not a timm model (see timm.list_models())")
    try:
        with torch.device("meta"):  # no memory, no initialisation cost
            probe: Any = timm.create_model(name, features_only=True, pretrained=False)
    except (RuntimeError, NotImplementedError):  # a model whose construction needs real tensors
        probe = timm.create_model(name, features_only=True, pretrained=False)
    return [dict(level) for level in probe.feature_info.info]


def _build(name: str, weights: str | None, out_indices: tuple[int, ...]) -> Any:
    """The timm feature network at its native stride 32."""
    return create_backbone(name, weights, output_stride=32, out_indices=out_indices)


def _module_path(network: nn.Module, module_name: str) -> str:
    """Where timm's ``feature_info`` module name lives in a feature network (timm flattens ``a.b`` to ``a_b``)."""
    names = {name for name, _ in network.named_modules()}
    for candidate in (module_name, module_name.replace(".", "_"), f"model.{module_name}"):
        if candidate in names:
            return candidate
    raise ValueError(f"cannot locate the backbone module {module_name!r} for ARS in {type(network).__name__}")


class ARSStage(nn.Module):
    """A backbone module that performs a stride-2 transition, preceded by ARS on its input.

    Args:
        stage: The wrapped module (its input is the previous feature level).
        ars: The adaptive resampling module.
        channels_last: The module's input and output are NHWC.
    """

    grid: Tensor | None

    def __init__(self, stage: nn.Module, ars: ARS, channels_last: bool) -> None:
        super().__init__()
        self.ars = ars
        self.stage = stage
        self.channels_last = channels_last
        self.grid = None  # the grid of the last forward pass, ``(N, H, W, 2)``

    def forward(self, x: Tensor) -> Any:
        """ARS on ``x`` (the grid is kept in ``self.grid``), then the wrapped module."""
        resampled, self.grid = self.ars(x.permute(0, 3, 1, 2) if self.channels_last else x)
        if self.channels_last:
            resampled = resampled.permute(0, 2, 3, 1)
        out = self.stage(resampled)
        spatial = slice(1, 3) if self.channels_last else slice(2, 4)
        if isinstance(out, Tensor) and out.dim() == 4 and out.shape[spatial] == x.shape[spatial]:
            raise RuntimeError(
                f"ARS wraps {type(self.stage).__name__}, which does not downsample ({tuple(x.shape)} → "
                f"{tuple(out.shape)}); ARS must precede a strided stage transition"
            )
        return out


class MultiScaleBackbone(nn.Module):
    """A timm backbone returning features at several strides, with switchable ARS before its stage transitions.

    Input images are floats in [0, 1], normalised inside with the backbone's ``pretrained_cfg`` mean and std.

    Args:
        name: timm model name (``test_resnet`` / ``pvt_v2_b0`` for tests).
        weights: Local weight file for the backbone (random initialisation when ``None``); a missing file, or one
            whose tensors do not fit the architecture, is a :class:`~avtoolkit.errors.ConfigError` naming it and the
            mismatched keys (:func:`~avtoolkit.models.encoders.visual.create_backbone`).
        strides: Output strides to return, increasing; each must be a feature stride of the backbone.
        ars_stages: Transitions that get ARS, named by the stride they produce (8: 4→8, 16: 8→16, 32: 16→32). Each
            must be a transition of this backbone (the previous feature level at half the stride) no deeper than
            ``max(strides)``.
        ars_hidden: Hidden channels of each ARS saliency network.
        ars_sigma: Gaussian width of each ARS sampler, in normalised units (see :class:`~avtoolkit.fusion.sfm.ARS`).
        ars_alpha_init: Initial blend α of each ARS with the identity grid (0: exactly the plain backbone).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        name: str = "resnet50",
        weights: str | None = None,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        ars_stages: tuple[int, ...] = (),
        ars_hidden: int = 16,
        ars_sigma: float = 0.5,
        ars_alpha_init: float = 0.5,
    ) -> None:
        super().__init__()
        strides = tuple(strides)
        if not strides or any(b <= a for a, b in pairwise(strides)) or strides[0] < 1:
            raise ValueError(f"MultiScaleBackbone strides must be positive and strictly increasing, got {strides}")
        if len(set(ars_stages)) != len(ars_stages) or any(s not in ARS_STRIDES for s in ars_stages):
            raise ValueError(
                f"MultiScaleBackbone ars_stages must be distinct values of {ARS_STRIDES}, got {ars_stages}"
            )
        info = _feature_info(name)
        reductions = [level["reduction"] for level in info]
        indices = []
        for stride in strides:
            if stride not in reductions:
                raise ValueError(
                    f"MultiScaleBackbone strides: {name!r} has no feature at stride {stride}; "
                    f"its feature strides are {sorted(set(reductions))}"
                )
            indices.append(max(i for i, r in enumerate(reductions) if r == stride))  # the deepest at that stride
        transitions: dict[int, int] = {}  # stride → the feature level whose module performs the transition into it
        for stride in ARS_STRIDES:
            if stride in reductions and stride <= strides[-1]:
                first = reductions.index(stride)
                if first > 0 and reductions[first - 1] == stride // 2:
                    transitions[stride] = first
        for stride in ars_stages:
            if stride not in transitions:
                raise ValueError(
                    f"MultiScaleBackbone ars_stages: {name!r} with strides {strides} has no transition into stride "
                    f"{stride}; ARS-capable transitions: {sorted(transitions)} (raise max(strides) to reach deeper)"
                )

        network = _build(name, weights, tuple(indices))
        self.backbone = network
        self.name = name
        self.strides = strides
        self.channels: list[int] = list(network.feature_info.channels())
        self.channels_last = is_channels_last(network)
        self.ars_stages = tuple(sorted(ars_stages))  # strides whose transition has ARS, in the order applied
        self.ars_capable = tuple(sorted(transitions))
        self._transition_paths = {s: _module_path(network, info[i]["module"]) for s, i in transitions.items()}
        self._ars_paths: list[str] = []  # in the order applied (increasing stride)
        for stride in self.ars_stages:
            path = self._transition_paths[stride]
            parent_path, _, leaf = path.rpartition(".")
            parent = network.get_submodule(parent_path) if parent_path else network
            ars = ARS(
                info[transitions[stride] - 1]["num_chs"], hidden=ars_hidden, sigma=ars_sigma, alpha_init=ars_alpha_init
            )
            setattr(parent, leaf, ARSStage(network.get_submodule(path), ars, self.channels_last))
            self._ars_paths.append(path)
        config = network.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)

    def transitions(self) -> dict[int, nn.Module]:
        """The module performing each ARS-capable transition, by the stride it produces.

        An :class:`ARSStage` where ARS is on (its input is before ARS, its ``stage``'s input after), else the plain
        timm module.
        """
        return {stride: self.backbone.get_submodule(path) for stride, path in self._transition_paths.items()}

    def ars_modules(self) -> list[ARSStage]:
        """The ARS-wrapped transitions, in the order they are applied."""
        return [self.backbone.get_submodule(path) for path in self._ars_paths]

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Features at ``strides`` and the ARS grids.

        Args:
            images: ``(N, 3, H, W)`` floats in [0, 1].

        Returns:
            ``(features, grids)``: ``features[i]`` ``(N, channels[i], H / strides[i], W / strides[i])`` (NCHW, fine
            to coarse); ``grids`` the ARS grids ``(N, h, w, 2)`` in the order applied (empty without ARS), each at
            the resolution of its transition's input.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"MultiScaleBackbone expects images (N, 3, H, W), got shape {tuple(images.shape)}")
        stages = self.ars_modules()
        for stage in stages:
            stage.grid = None
        features = list(self.backbone((images - self.mean) / self.std))
        if self.channels_last:
            features = [feature.permute(0, 3, 1, 2) for feature in features]
        grids = [stage.grid for stage in stages if stage.grid is not None]
        for stage in stages:
            stage.grid = None  # do not keep the graph alive between calls
        return features, grids
