import pytest
import torch

from avtoolkit.optim import WarmupLinearDecay


def rates(scheduler_args: dict, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = WarmupLinearDecay(optimizer, **scheduler_args)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warm_up_then_linear_decay_then_hold():
    lr = rates({"warmup_steps": 4, "total_steps": 14, "final_factor": 0.1}, 20)
    assert lr[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # (s + 1) / 4 × 2
    assert lr[4] == pytest.approx(2.0) and lr[9] == pytest.approx(2.0 * (1 - 0.9 * 0.5))  # halfway: 1.1
    assert lr[14:] == pytest.approx([0.2] * 6)


def test_no_warm_up_and_bad_arguments():
    assert rates({"warmup_steps": 0, "total_steps": 10}, 1) == [2.0]
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        rates({"warmup_steps": 10, "total_steps": 10}, 1)
