"""Speed switches as callbacks, so that a config overlay turns them on for any experiment.

Mixed precision needs no callback: it is the trainer's ``precision`` (``bf16-mixed``; configs/trainer/bf16.yaml).
These two change the network itself, once, before the first step:

- :class:`ChannelsLast` stores the 4-D weights of the task's network in channels-last (NHWC) order; convolutions
  given an NHWC weight return NHWC outputs, so every convolution after the first runs in the layout tensor cores
  and oneDNN prefer.
- :class:`Compile` compiles the task's network with :func:`torch.compile`, in place: the state dict and the
  checkpoints keep their keys, and losses and metrics (outside the network) stay eager.
"""

from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn


def _network(pl_module: LightningModule) -> nn.Module:
    """The task's network (``pl_module.model``, as every avtoolkit task names it)."""
    network = getattr(pl_module, "model", None)
    if not isinstance(network, nn.Module):
        raise TypeError(
            f"{type(pl_module).__name__} has no `model` network; the speed callbacks apply to the avtoolkit tasks"
        )
    return network


class ChannelsLast(Callback):
    """Store the network's convolution weights channels-last before training or evaluation.

    2-D convolutions get NHWC weights, 3-D ones (FDED's frame enhancement) NDHWC; nothing else changes.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Convert the weights of every convolution of the network."""
        for module in _network(pl_module).modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)
            elif isinstance(module, nn.Conv3d):
                module.to(memory_format=torch.channels_last_3d)


class Compile(Callback):
    """Compile the task's network with :func:`torch.compile` before the first step.

    The first steps are slow while the graphs compile (and again for each new input shape, e.g. the last,
    shorter batch; ``dynamic`` avoids recompiling per shape). Data-dependent control flow (the SCMC experts that
    run only for the frames routed to them) splits the graph; those parts run eagerly.

    Args:
        mode: ``torch.compile`` mode (inductor): default, reduce-overhead (CUDA graphs) or max-autotune.
        backend: Compiler backend: inductor (generates kernels; on the CPU it needs a C++ compiler), or aot_eager
            / eager to check that a network traces without generating code.
        dynamic: Compile for dynamic shapes from the start (``None``: only after a shape changed).
        fullgraph: Fail on any graph break instead of running that part eagerly.
    """

    def __init__(
        self,
        mode: Literal["default", "reduce-overhead", "max-autotune"] = "default",
        backend: Literal["inductor", "aot_eager", "eager"] = "inductor",
        dynamic: bool | None = None,
        fullgraph: bool = False,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.backend = backend
        self.dynamic = dynamic
        self.fullgraph = fullgraph

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Compile the network in place (once; a second stage on the same module keeps the compiled one)."""
        network = _network(pl_module)
        if getattr(network, "_compiled_call_impl", None) is not None:
            return
        network.compile(mode=self.mode, backend=self.backend, dynamic=self.dynamic, fullgraph=self.fullgraph)
