"""Learning-rate schedules used by the recipes (optimisers themselves come from torch)."""

from avtoolkit.optim.schedules import WarmupLinearDecay

__all__ = ["WarmupLinearDecay"]
