"""The common fusion library: plain ``nn.Module``s that import only torch, no dataset or training knowledge."""

from avtoolkit.fusion.late import LateFusion

__all__ = ["LateFusion"]
