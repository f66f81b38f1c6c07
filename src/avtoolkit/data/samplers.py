"""Samplers for one or many processes: evaluation without duplicates, training that resumes mid-epoch.

Lightning's own distributed sampler pads the evaluation split so every process gets as many samples: with ``n``
samples on ``W`` processes up to ``W - 1`` of them are evaluated twice, and dataset-level metrics count them
twice. :class:`EvaluationSampler` gives each process a contiguous run of whole batches instead (no padding; the
processes may differ by one batch), so the metrics see every sample exactly once, in the same batches as one
process would.

Lightning restores a training epoch mid-way only for a data loader that is stateful. :class:`ResumableDataLoader`
over a :class:`ResumableSampler` is: the order is a function of ``(seed, epoch)``, the loader reports how many
batches of the epoch it has handed out, and a resumed run skips them. Both samplers subclass
:class:`~torch.utils.data.distributed.DistributedSampler`, so Lightning keeps them instead of injecting its own.
"""

import math
from collections.abc import Iterator
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from avtoolkit.errors import DatasetError

DrawKey = tuple[int, int, int]
"""``(index, seed, epoch)``: a sample index with the key its random draws are seeded from."""


class EvaluationSampler(DistributedSampler[int]):
    """This process's share of an evaluation split: contiguous whole batches, no sample repeated or dropped.

    With at least as many batches as processes, process ``r`` gets batches ``⌊r·B/W⌋ .. ⌊(r+1)·B/W⌋ - 1``
    of the ``B`` batches one process would see (so per-batch quantities are the same too); with fewer batches
    it gets a contiguous ``⌊n/W⌋`` or ``⌈n/W⌉`` samples. Every process gets at least one sample.

    Args:
        dataset: The evaluation dataset (sized).
        num_replicas: ``W``, the number of processes.
        rank: This process's rank in ``[0, W)``.
        batch_size: Samples per batch of the data loader it feeds.
        split: The split's name, for the error message.

    Raises:
        DatasetError: The split has fewer samples than there are processes.
    """

    def __init__(
        self, dataset: Dataset[Any], num_replicas: int, rank: int, batch_size: int, split: str = "evaluation"
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)  # type: ignore[arg-type]
        if n < num_replicas:
            raise DatasetError(
                f"the {split} split: cannot evaluate {n} samples on {num_replicas} processes without repeating some "
                f"(each process needs one): use at most {n} devices (trainer.devices), or add clips to the split"
            )
        n_batches = math.ceil(n / batch_size)
        if n_batches >= num_replicas:
            bounds = [min(n, (r * n_batches // num_replicas) * batch_size) for r in range(num_replicas + 1)]
        else:
            bounds = [r * n // num_replicas for r in range(num_replicas + 1)]
        self.start, self.stop = bounds[rank], bounds[rank + 1]
        self.num_samples = self.stop - self.start
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.num_samples


class ResumableSampler(DistributedSampler[Any]):
    """Training order shuffled by ``(seed, epoch)``, split across processes, able to start mid-epoch.

    The permutation and the split are :class:`~torch.utils.data.distributed.DistributedSampler`'s (padded to a
    multiple of the processes, as in training). :meth:`resume` makes the next pass over that epoch skip the
    samples already used (``skipped`` says how many the latest pass skipped).

    Args:
        dataset: The training dataset (sized).
        num_replicas: Number of processes.
        rank: This process's rank.
        seed: Seed of the order (the same on every process).
        draw_keys: Yield :data:`DrawKey` ``(index, seed, epoch)`` instead of bare indices, for datasets whose
            samples make random draws (mix-and-separate): seeded from the key, a sample's draws depend neither on
            the worker processes nor on where a run was resumed.
    """

    def __init__(self, dataset: Dataset[Any], num_replicas: int, rank: int, seed: int, draw_keys: bool) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.draw_keys = draw_keys
        self.skipped = 0
        self._resume_at: tuple[int, int] | None = None

    def resume(self, epoch: int, skip: int) -> None:
        """Set the epoch, and make its next pass skip its first ``skip`` samples (of this process)."""
        self.epoch = epoch
        self._resume_at = (epoch, skip)

    def __iter__(self) -> Iterator[int | DrawKey]:
        indices = list(super().__iter__())
        skip = 0
        if self._resume_at is not None:
            epoch, count = self._resume_at
            self._resume_at = None
            skip = count if epoch == self.epoch else 0
        self.skipped = skip
        if self.draw_keys:
            return iter([(index, self.seed, self.epoch) for index in indices[skip:]])
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader[dict[str, Tensor]]):
    """A training loader over a :class:`ResumableSampler` whose position in the epoch is saved in checkpoints.

    Lightning calls :meth:`state_dict` when it saves a checkpoint and :meth:`load_state_dict` before it iterates
    again on resuming. The position is the number of batches handed out in the current epoch, which is the
    number trained on when a checkpoint is written (Lightning does not read ahead of a loader of known length).
    Batches must have a fixed size (``drop_last=True``).
    """

    _epoch = 0
    _batches = 0

    def __iter__(self) -> Iterator[dict[str, Tensor]]:  # type: ignore[override]
        # A generator, so the sampler is read at the first batch, after Lightning has set the epoch. Another
        # sampler (Lightning swaps in a sequential one for `overfit_batches`) reads as epoch 0, nothing skipped.
        self._epoch, self._batches = getattr(self.sampler, "epoch", 0), 0
        for i, batch in enumerate(super().__iter__()):
            if i == 0:  # the sampler has started by now: count the batches it skipped
                self._batches = getattr(self.sampler, "skipped", 0) // (self.batch_size or 1)
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The next batch to read: ``epoch``, and ``batches`` already read in it."""
        if self._batches >= len(self):
            return {"epoch": self._epoch + 1, "batches": 0}
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Start the next pass at the saved position."""
        if not isinstance(self.sampler, ResumableSampler):
            return  # a sequential order (`overfit_batches`) restarts with the run
        if self.batch_size is None or not self.drop_last:
            raise ValueError("resuming mid-epoch needs batches of a fixed size (batch_size, drop_last=True)")
        self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)
