"""The small base every task builds on: fixed set-up order and optimiser/scheduler injection."""

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters


class BaseAVTask(LightningModule):
    """Base task: save hyperparameters → build the network's losses → metrics; optimiser from the config.

    Subclasses call ``super().__init__(...)`` first, then build their parts in ``__init__``.

    Args:
        optimizer: Optimiser factory, e.g. ``torch.optim.Adam`` with its ``init_args`` in YAML.
        lr_scheduler: Learning-rate scheduler factory, or ``None`` for a constant rate.
        lr_scheduler_interval: Step the scheduler every optimiser step or every epoch.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
    ) -> None:
        super().__init__()
        # Built by LightningCLI, the hyperparameters are the parsed config (the network as class_path/init_args),
        # which is what `load_from_checkpoint` needs. Built in Python, the network is a module instance: it is
        # saved in the state dict, not pickled into the hyperparameters; pass it again to `load_from_checkpoint`.
        built_by_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=None if built_by_cli else ["model"])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval

    def configure_optimizers(self) -> Any:
        """Build the optimiser (over trainable parameters) and the optional scheduler."""
        optimizer = self.optimizer_factory(p for p in self.parameters() if p.requires_grad)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval},
        }
