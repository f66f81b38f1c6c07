"""The small base every task builds on: fixed set-up order and optimiser/scheduler injection."""

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn
from torchmetrics import Metric

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def no_weight_decay_parameters(module: nn.Module) -> set[int]:
    """The ids of the parameters weight decay must not touch (Mask2Former's rule, extended).

    The parameters of norm layers (batch, instance, group, layer norm) and of embeddings, and every parameter a
    submodule names in its ``no_weight_decay()`` method (names relative to that submodule, as timm models declare
    their position tables; our modules declare their identity-at-initialisation scalars).
    """
    ids: set[int] = set()
    for submodule in module.modules():
        if isinstance(submodule, (*_NORMS, nn.Embedding)):
            ids.update(id(p) for p in submodule.parameters(recurse=False))
        declared = getattr(submodule, "no_weight_decay", None)
        if callable(declared):
            named = dict(submodule.named_parameters())
            ids.update(id(named[name]) for name in declared() if name in named)
    return ids


class BaseAVTask(LightningModule):
    """Base task: save hyperparameters → build the network's losses → metrics; optimiser from the config.

    Subclasses call ``super().__init__(...)`` first, then build their parts in ``__init__``, including the
    dataset-level ``val_metrics`` and ``test_metrics`` (torchmetrics, updated in the steps), which the base logs
    at the end of each evaluation epoch under ``val/`` and ``test/``.

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

    val_metrics: Metric
    test_metrics: Metric

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: every trainable parameter in one group.

        A task may split them; a group's ``lr_multiplier`` scales the optimiser's learning rate for it.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        """Build the optimiser (over the trainable parameter groups) and the optional scheduler."""
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_multiplier", 1.0)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval},
        }

    def _log_metrics(self, metrics: Metric, stage: str) -> None:
        # compute() already syncs the metric states across processes: every rank logs the same values.
        values = metrics.compute()
        self.log_dict({f"{stage}/{name}": value.float() for name, value in values.items()}, sync_dist=False)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        """Log the dataset-level validation metrics."""
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        """Log the dataset-level test metrics."""
        self._log_metrics(self.test_metrics, "test")
