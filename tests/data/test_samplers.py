"""Samplers: every evaluation sample on exactly one process; training order and draws resumable mid-epoch."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch.utils.data import Dataset

from avtoolkit.data.batch import MIXTURE
from avtoolkit.data.datamodules import SeparationDataModule
from avtoolkit.data.mixing import MixAndSeparate
from avtoolkit.data.music import read_split
from avtoolkit.data.samplers import EvaluationSampler, ResumableDataLoader, ResumableSampler


class Numbers(Dataset):
    """``n`` samples, each its own index."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"index": torch.tensor(index)}


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_evaluation_shares_cover_the_split_once_in_whole_batches(world, batch_size):
    for n in range(world, 30):
        shares = [list(EvaluationSampler(Numbers(n), world, rank, batch_size)) for rank in range(world)]
        assert [i for share in shares for i in share] == list(range(n))  # no padding, no gap, in order
        assert all(shares)
        if -(-n // batch_size) >= world:  # enough batches: each process gets whole batches of one process's run
            assert all(share[0] % batch_size == 0 for share in shares)


def test_evaluation_needs_a_sample_per_process():
    with pytest.raises(ValueError, match="3 samples on 4 processes"):
        EvaluationSampler(Numbers(3), 4, 0, 2)


def test_training_order_follows_seed_and_epoch_and_splits_across_processes():
    def order(seed, epoch, world=1, rank=0):
        sampler = ResumableSampler(Numbers(10), world, rank, seed, draw_keys=False)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert sorted(order(0, 3)) == list(range(10))
    assert sorted(order(0, 3, 2, 0) + order(0, 3, 2, 1)) == list(range(10))


def test_a_resumed_sampler_skips_what_the_epoch_used():
    sampler = ResumableSampler(Numbers(10), 1, 0, 7, draw_keys=True)
    sampler.set_epoch(2)
    full = list(sampler)
    assert full[0][1:] == (7, 2)  # (index, seed, epoch)
    sampler.resume(2, 4)
    assert list(sampler) == full[4:] and sampler.skipped == 4
    assert list(sampler) == full  # once only
    sampler.resume(1, 4)
    sampler.set_epoch(2)  # Lightning moved on to another epoch: nothing to skip
    assert list(sampler) == full


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_state_resumes_at_the_next_batch(num_workers):
    def loader():
        data = Numbers(11)
        sampler = ResumableSampler(data, 1, 0, 0, draw_keys=False)
        return ResumableDataLoader(data, sampler=sampler, batch_size=2, drop_last=True, num_workers=num_workers)

    first = loader()
    first.sampler.set_epoch(1)
    iterator = iter(first)
    seen = [next(iterator)["index"] for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    rest = [batch["index"] for batch in iterator]
    assert len(seen) + len(rest) == len(first) == 5
    assert first.state_dict() == {"epoch": 2, "batches": 0}  # a finished epoch resumes at the next one

    second = loader()
    second.load_state_dict(state)
    second.sampler.set_epoch(1)  # what Lightning does before iterating
    resumed = list(second)
    assert len(resumed) == len(rest) and all(torch.equal(a["index"], b) for a, b in zip(resumed, rest, strict=True))
    assert second.state_dict() == {"epoch": 2, "batches": 0}


def test_the_loader_runs_on_a_sequential_sampler_as_lightning_swaps_in_to_overfit():
    loader = ResumableDataLoader(Numbers(5), batch_size=2, drop_last=True)
    assert [batch["index"].tolist() for batch in loader] == [[0, 1], [2, 3]]
    assert loader.state_dict() == {"epoch": 1, "batches": 0}
    loader.load_state_dict({"epoch": 0, "batches": 1})  # nothing to resume in a sequential order
    assert len(list(loader)) == 2


def test_keyed_training_mixtures_ignore_the_torch_seed(music_tree):
    data = MixAndSeparate(read_split(music_tree, "train"), window=4095, frames_per_source=1, image_size=24)
    torch.manual_seed(0)
    a = data[(1, 0, 5)][MIXTURE]
    torch.manual_seed(1)
    assert torch.equal(a, data[(1, 0, 5)][MIXTURE])
    assert not torch.equal(a, data[(1, 0, 6)][MIXTURE])  # another epoch, other draws


def test_datamodule_shards_evaluation_under_ddp_and_warns_otherwise(music_tree):
    dm = SeparationDataModule(music_tree, window=4095, frames_per_source=1, image_size=24, batch_size=2, num_workers=0)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, strategy=DDPStrategy())
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, EvaluationSampler) and list(loader.sampler) == [2]  # 3 clips: 2 + 1
    train = dm.train_dataloader()
    assert isinstance(train, ResumableDataLoader) and train.sampler.num_replicas == 2 and train.sampler.draw_keys
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, strategy=FSDPStrategy())
    with pytest.warns(UserWarning, match="counted twice"):
        dm.val_dataloader()
