"""The common fusion library: plain ``nn.Module``s that import only torch, no dataset or training knowledge."""

from avtoolkit.fusion.attention import BidirectionalCrossAttention, CrossModalAttention, sine_positional_encoding_2d
from avtoolkit.fusion.fded import FDED
from avtoolkit.fusion.gating import GatedFusion
from avtoolkit.fusion.hierarchical import HierarchicalFusion
from avtoolkit.fusion.late import LateFusion
from avtoolkit.fusion.middle import MiddleFusion
from avtoolkit.fusion.scmc import SCMC, SCMCOutput
from avtoolkit.fusion.sfm import ARS, MSAU, demodulate

__all__ = [
    "ARS",
    "FDED",
    "MSAU",
    "SCMC",
    "BidirectionalCrossAttention",
    "CrossModalAttention",
    "GatedFusion",
    "HierarchicalFusion",
    "LateFusion",
    "MiddleFusion",
    "SCMCOutput",
    "demodulate",
    "sine_positional_encoding_2d",
]
