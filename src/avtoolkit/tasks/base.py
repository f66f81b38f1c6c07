"""The small base every task builds on: fixed set-up order and optimiser/scheduler injection."""

from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn
from torchmetrics import Metric

from avtoolkit.errors import ConfigError

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_CHECKPOINT_KEY = "avtoolkit"
"""Checkpoint entry naming the task and network classes that wrote it (``{"task": ..., "network": ...}``)."""
_SHOWN = 3
"""Examples a checkpoint-mismatch message shows per kind of difference."""


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
    network as ``self.model`` and the dataset-level ``val_metrics`` and ``test_metrics`` (torchmetrics, updated in
    the steps), which the base logs at the end of each evaluation epoch under ``val/`` and ``test/``. A datamodule
    whose test split has several sets (its ``test_sets``, e.g. ``("test", "test_held_out")`` on a tree of the
    held-out-family protocol) gives one test loader per set; each set is scored by its own copy of ``test_metrics``
    (:meth:`evaluation_metrics`) and logged under its name.

    Every run gets the guards of :mod:`avtoolkit.callbacks.guards` (a non-finite training loss stops the run
    naming the batch's clips; a ``fast_dev_run`` writes no checkpoint). Checkpoints name the task and network
    classes that wrote them, and loading one whose network is not the configured one (another class, or weights of
    other names or shapes) is a :class:`~avtoolkit.errors.ConfigError` before anything is restored or evaluated.

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
        self.other_test_metrics = nn.ModuleDict()  # a copy of test_metrics per further test set, made per test run

    val_metrics: Metric
    test_metrics: Metric

    def test_sets(self) -> tuple[str, ...]:
        """The names of the test sets, in test-loader order: the datamodule's ``test_sets`` (``("test",)`` without).

        Test loaders given without a datamodule are named ``test``, ``test_1``, ``test_2``, ...
        """
        trainer = self._trainer
        names = getattr(getattr(trainer, "datamodule", None), "test_sets", None)
        if names:
            return tuple(names)
        loaders = getattr(trainer, "num_test_batches", None) or [0]
        return ("test", *(f"test_{i}" for i in range(1, len(loaders))))

    def evaluation_metrics(self, stage: str) -> Metric:
        """The dataset-level metrics of ``stage``: ``val``, or the name of a test set."""
        if stage == "val":
            return self.val_metrics
        if stage == "test":
            return self.test_metrics
        if stage not in self.other_test_metrics:
            raise KeyError(f"no test set {stage!r} in this test run (its test sets: {', '.join(self.test_sets())})")
        return self.other_test_metrics[stage]  # type: ignore[return-value]

    def on_test_epoch_start(self) -> None:
        """A fresh copy of ``test_metrics`` for each test set after the first."""
        self.other_test_metrics.clear()
        for name in self.test_sets()[1:]:
            metrics = self.test_metrics.clone()
            metrics.reset()
            self.other_test_metrics[name] = metrics

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
        """Log the dataset-level metrics of each test set under its name."""
        for name in self.test_sets():
            self._log_metrics(self.evaluation_metrics(name), name)

    def configure_callbacks(self) -> list[Callback]:
        """The guards every run gets (:mod:`avtoolkit.callbacks.guards`)."""
        from avtoolkit.callbacks.guards import NoCheckpointInFastDevRun, StopOnNonFiniteLoss  # imports the tasks

        return [StopOnNonFiniteLoss(), NoCheckpointInFastDevRun()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the task and network classes in the checkpoint (what :meth:`on_load_checkpoint` compares)."""
        checkpoint[_CHECKPOINT_KEY] = {"task": _class_path(self), "network": _class_path(getattr(self, "model", None))}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another network before its weights are restored.

        Lightning calls this before loading the state dict, and before any training or evaluation step. The network
        classes are compared whenever the checkpoint names one; the weights' names and shapes when a trainer restores
        the checkpoint into a module that loads strictly (``strict_loading``).

        Raises:
            ConfigError: the checkpoint holds another network class, or weights whose names or shapes differ from
                the configured network's; the message names the checkpoint, what it holds and what the config builds.
        """
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        source = "the checkpoint" if path is None else f"checkpoint {path}"
        held_task, held_network = _checkpoint_classes(checkpoint)
        task, network = _class_path(self), _class_path(getattr(self, "model", None))
        if held_network is not None and held_network != network:
            held = _describe(held_network, held_task if held_task != task else None)
            built = _describe(network, task if held_task not in (None, task) else None)
            raise ConfigError(
                f"{source} holds {held}, but the config builds {built}. Pass a checkpoint of the configured network, "
                "or run with the config the checkpoint was trained with (its model.init_args.model)."
            )
        # The weights are compared under a trainer only: `load_from_checkpoint(..., strict=False)` is not visible
        # here, and a strategy that restores after its set-up (FSDP, DeepSpeed) holds sharded weights by then.
        state = checkpoint.get("state_dict")
        if trainer is None or trainer.strategy.restore_checkpoint_after_setup or not self.strict_loading:
            return
        if not isinstance(state, Mapping):
            return
        problems = _state_dict_differences(state, self.state_dict())
        if problems:
            settings = _setting_differences(checkpoint.get("hyper_parameters"), self.hparams)
            hint = f" Settings that differ: {settings}." if settings else ""
            raise ConfigError(
                f"{source} holds weights that do not fit the configured {_describe(network, None, article=False)}: "
                f"{problems}.{hint} Pass a checkpoint of this network, or run with the config it was trained with."
            )


def _class_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _checkpoint_classes(checkpoint: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The task and network classes a checkpoint holds: named by the task, else from the CLI's hyperparameters."""
    named = checkpoint.get(_CHECKPOINT_KEY)
    if isinstance(named, Mapping):
        return named.get("task"), named.get("network")
    hparams = checkpoint.get("hyper_parameters") or {}
    network = hparams.get("model")
    class_path = network.get("class_path") if isinstance(network, Mapping) else None
    return hparams.get("_class_path"), class_path if isinstance(class_path, str) else None


def _describe(network: str, task: str | None, article: bool = True) -> str:
    described = f"{'a ' if article else ''}{network.rsplit('.', 1)[-1]} network ({network})"
    return described if task is None else f"{described} in an {task.rsplit('.', 1)[-1]} ({task})"


def _state_dict_differences(held: Mapping[str, Any], built: Mapping[str, torch.Tensor]) -> str:
    """The names and shapes that differ between a checkpoint's state dict and the module's, in words ('' if none)."""

    def shape(value: Any) -> tuple[int, ...] | None:
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    missing = [key for key in built if key not in held]
    unexpected = [key for key in held if key not in built]
    reshaped = [key for key in built if key in held and shape(held[key]) != shape(built[key])]
    parts = []
    if reshaped:
        shown = "; ".join(
            f"{key} {list(shape(held[key]) or ())} in the checkpoint, {list(built[key].shape)} configured"
            for key in reshaped[:_SHOWN]
        )
        parts.append(f"{len(reshaped)} tensors of other shapes ({shown}{'; ...' if len(reshaped) > _SHOWN else ''})")
    for keys, what in ((missing, "missing from the checkpoint"), (unexpected, "the configured network lacks")):
        if keys:
            shown = ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
            parts.append(f"{len(keys)} tensors {what} ({shown})")
    return "; ".join(parts)


def _setting_differences(held: Any, built: Any) -> str:
    """The task settings (dotted, under ``model.init_args``) that differ between two sets of hyperparameters."""
    if not isinstance(held, Mapping) or not isinstance(built, Mapping):
        return ""

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            return {prefix: value}
        items: dict[str, Any] = {}
        for key, inner in value.items():
            if not str(key).startswith("_") and key not in ("optimizer", "lr_scheduler", "lr_scheduler_interval"):
                items |= flat(inner, f"{prefix}.{key}")
        return items

    a, b = flat(held, "model.init_args"), flat(built, "model.init_args")
    differing = [key for key in sorted(a.keys() | b.keys()) if a.get(key, "unset") != b.get(key, "unset")]
    shown = [f"{key}: {a.get(key, 'unset')} in the checkpoint, {b.get(key, 'unset')} configured" for key in differing]
    return "; ".join(shown[: 2 * _SHOWN]) + ("; ..." if len(shown) > 2 * _SHOWN else "")
