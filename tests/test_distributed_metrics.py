"""Separation metrics under DDP when one process scored nothing: two CPU processes (gloo, torchrun).

Scenarios, for every protocol:

* ``no_update``: process 0 scores clips, process 1 never calls ``update`` (its share of the split was empty);
* ``all_silent``: every clip of process 0 has a silent reference (all skipped, only counted), process 1 scores
  clips.

The synchronised ``compute()`` and ``per_clip()`` of both processes must equal one process's evaluation of the
union of their batches (process 0's, then process 1's). Torchmetrics stands in for an empty list state with a
1-D float32 tensor, which gloo cannot gather with the ``(n, N)`` float64 states of the other process.

This file is also the worker: ``torchrun --nproc_per_node 2 tests/test_distributed_metrics.py OUT``.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avtoolkit.metrics import PROTOCOLS, SeparationMetrics

SCENARIOS = ("no_update", "all_silent")
L = 1500  # samples per source: a few hundred milliseconds of BSS Eval per process


def batches(scenario: str, rank: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(estimates, references, mixture) batches of one process: 2 sources, seeded."""
    g = torch.Generator().manual_seed(rank)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ref = torch.randn(size, 2, L, generator=g, dtype=torch.float64)
        est = ref + 0.4 * ref.roll(1, dims=1) + 0.2 * torch.randn(size, 2, L, generator=g, dtype=torch.float64)
        return est, ref, ref.sum(1)

    scoring_rank = 0 if scenario == "no_update" else 1
    if rank == scoring_rank:
        first, second = batch(3), batch(2)
        first[0][1, 1] = 0.0  # a silent estimate: floored (default) or its clip skipped (compat protocols)
        return [first, second]
    if scenario == "no_update":
        return []
    est, ref, _ = batch(2)
    ref[:, 1] = 0.0  # every clip of this process has a silent reference
    return [(est, ref, ref.sum(1))]


def evaluate(protocol: str, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, list]:
    """compute() and per_clip() of one metric fed ``parts`` (lists, JSON-ready; NaN kept)."""
    metric = SeparationMetrics(protocol=protocol)  # type: ignore[arg-type]
    for est, ref, mix in parts:
        metric.update(est, ref, mix)
    out = {key: [float(value)] for key, value in metric.compute().items()}
    out.update({f"per_clip/{key}": value.double().flatten().tolist() for key, value in metric.per_clip().items()})
    return out


def worker(out: Path) -> None:
    """One of the two processes: every scenario and protocol, synchronised over gloo."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    results = {
        f"{scenario}/{protocol}": evaluate(protocol, batches(scenario, rank))
        for scenario in SCENARIOS
        for protocol in PROTOCOLS
    }
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, list]]]:
    """Each process's results."""
    out = tmp_path_factory.mktemp("ddp_metrics")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_process_that_scored_nothing_still_gives_the_metrics_of_one(two_processes, scenario, protocol):
    union = [part for rank in (0, 1) for part in batches(scenario, rank)]
    single = evaluate(protocol, union)
    assert single["n_clips"][0] > 0 and math.isfinite(single["sdr"][0])
    assert single["n_skipped_silent_ref"][0] == (2 if scenario == "all_silent" else 0)
    for rank, results in enumerate(two_processes):
        synced = results[f"{scenario}/{protocol}"]
        assert synced.keys() == single.keys()
        for key, value in single.items():
            assert synced[key] == pytest.approx(value, rel=1e-9, abs=1e-9, nan_ok=True), (rank, key)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
