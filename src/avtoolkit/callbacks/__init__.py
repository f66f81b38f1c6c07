"""Logger-agnostic callbacks: reports, media, predictions, and the speed switches."""

from avtoolkit.callbacks.media import MediaLogger
from avtoolkit.callbacks.predictions import PredictionWriter
from avtoolkit.callbacks.report import SeparationReport
from avtoolkit.callbacks.speed import ChannelsLast, Compile

__all__ = ["ChannelsLast", "Compile", "MediaLogger", "PredictionWriter", "SeparationReport"]
