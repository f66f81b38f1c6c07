"""Guards every avtoolkit task attaches to its runs (``BaseAVTask.configure_callbacks``), whatever the config.

- :class:`StopOnNonFiniteLoss` stops training at the first NaN or infinite loss, before that step's update and
  before any checkpoint of it, naming the clips of the batch.
- :class:`NoCheckpointInFastDevRun` keeps a ``fast_dev_run`` (a smoke test) from writing ``last.ckpt``, which a
  later ``fit --ckpt_path last`` would resume from: Lightning 2.6's ``ModelCheckpoint.on_train_end`` saves the
  last checkpoint without the ``fast_dev_run`` check its other hooks make.
"""

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from avtoolkit.data.batch import SAMPLE_INDEX
from avtoolkit.errors import ConfigError, DatasetError

_LISTED = 16
"""Samples a message lists one by one (the rest are counted)."""


class StopOnNonFiniteLoss(Callback):
    """Stop training when the loss of a step is NaN or infinite, naming the clips of its batch.

    Checked when the loss is about to be back-propagated, so the step's update is not applied and no checkpoint
    holds it. The batch's clips are named by the datamodule (``sample_names`` of the batch's ``SAMPLE_INDEX``).
    Batches whose inputs already hold non-finite values are a :class:`~avtoolkit.errors.DatasetError` naming
    those samples and keys; with finite inputs the training diverged: a :class:`~avtoolkit.errors.ConfigError`.
    """

    def __init__(self) -> None:
        self._batch: Any = None
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """Hold on to the batch (on the device, prepared) until its loss is checked."""
        self._batch, self._batch_idx = batch, batch_idx

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Let go of the batch."""
        self._batch = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        """Raise if the loss is not finite."""
        if bool(torch.isfinite(loss.detach()).all()):
            return
        raise non_finite_loss_error(trainer, self._batch, self._batch_idx, loss)


def non_finite_loss_error(trainer: Trainer, batch: Any, batch_idx: int, loss: Tensor) -> DatasetError | ConfigError:
    """The error for a non-finite training loss: the step, the batch's clips, and what to do."""
    value = loss.detach().float()
    shown = "nan" if bool(torch.isnan(value).any()) else "infinite"
    where = f"training step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch_idx})"
    names = _sample_names(trainer, batch)
    bad_inputs = _non_finite_inputs(batch)
    stopped = "The run stopped before this step's update; no checkpoint holds it."
    if bad_inputs:
        listed = [f"{_name(names, i)}: {', '.join(keys)}" for i, keys in sorted(bad_inputs.items())]
        return DatasetError(
            f"the loss of {where} is {shown}: NaN or infinite values in the batch's inputs, "
            f"{_listing(listed)}. Fix or remove these clips (for a cached input, delete its cache folder to "
            f"recompute it). {stopped}"
        )
    clips = "clips unknown (the datamodule does not name its samples)" if names is None else _listing(names)
    return ConfigError(
        f"the loss of {where} is {shown} although the batch's inputs are finite; its clips: {clips}. The network "
        "or its loss diverged: lower the learning rate (model.init_args.optimizer.init_args.lr), clip the gradients "
        "(trainer.gradient_clip_val), or train in float32 (trainer.precision) if a lower precision overflows. "
        f"{stopped}"
    )


def _sample_names(trainer: Trainer, batch: Any) -> list[str] | None:
    index = batch.get(SAMPLE_INDEX) if isinstance(batch, Mapping) else None
    describe = getattr(getattr(trainer, "datamodule", None), "sample_names", None)
    if not isinstance(index, Tensor) or not callable(describe):
        return None
    return list(describe("train", index.flatten().tolist()))


def _non_finite_inputs(batch: Any) -> dict[int, list[str]]:
    """Per sample of the batch, the keys of its floating-point inputs with NaN or infinite values."""
    found: dict[int, list[str]] = {}
    if not isinstance(batch, Mapping):
        return found
    for key, value in batch.items():
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.ndim == 0:
            continue
        bad = ~torch.isfinite(value.detach()).flatten(1).all(1) if value.ndim > 1 else ~torch.isfinite(value.detach())
        for i in torch.nonzero(bad).flatten().tolist():
            found.setdefault(i, []).append(str(key))
    return found


def _name(names: list[str] | None, i: int) -> str:
    return f"sample {i} of the batch" if names is None else names[i]


def _listing(items: list[str]) -> str:
    more = f"; and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return "; ".join(items[:_LISTED]) + more


class NoCheckpointInFastDevRun(Callback):
    """Turn off ``save_last`` of the run's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` in a fast_dev_run.

    Lightning skips every checkpoint of a ``fast_dev_run`` except the one ``ModelCheckpoint.on_train_end`` writes
    for ``save_last`` (Lightning 2.6); without it a smoke test would leave a ``last.ckpt`` to resume from.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """In a fast_dev_run, make the checkpoint callbacks save no last checkpoint."""
        if not getattr(trainer, "fast_dev_run", False):  # set by the Trainer's debugging flags
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.save_last = False
