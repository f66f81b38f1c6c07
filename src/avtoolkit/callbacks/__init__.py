"""Logger-agnostic callbacks: reports and media."""

from avtoolkit.callbacks.media import MediaLogger
from avtoolkit.callbacks.predictions import PredictionWriter
from avtoolkit.callbacks.report import SeparationReport

__all__ = ["MediaLogger", "PredictionWriter", "SeparationReport"]
