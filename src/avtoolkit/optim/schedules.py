"""Learning-rate schedules of the separation recipes (warm-up then linear decay, as HFRA's code)."""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupLinearDecay(LambdaLR):
    """Linear warm-up from 0 to the base rate, then linear decay to ``final_factor`` × the base rate.

    The factor is ``s / warmup_steps`` for ``s < warmup_steps``, then falls linearly to ``final_factor`` at
    ``total_steps`` and stays there (HFRA: 5k warm-up steps, 0.1× at 100k). Step it every optimiser step.

    Args:
        optimizer: The optimiser.
        warmup_steps: Steps of linear warm-up (0: none).
        total_steps: Step at which the decay reaches ``final_factor``.
        final_factor: Final fraction of the base rate.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, final_factor: float = 0.1) -> None:
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.final_factor = final_factor
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return 1.0 - (1.0 - self.final_factor) * progress
