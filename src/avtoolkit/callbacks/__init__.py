"""Logger-agnostic callbacks: reports, media, predictions, the speed switches, and the guards every task attaches."""

from avtoolkit.callbacks.guards import NoCheckpointInFastDevRun, StopOnNonFiniteLoss
from avtoolkit.callbacks.media import MediaLogger
from avtoolkit.callbacks.predictions import PredictionWriter
from avtoolkit.callbacks.report import SegmentationReport, SeparationReport
from avtoolkit.callbacks.speed import ChannelsLast, Compile

__all__ = [
    "ChannelsLast",
    "Compile",
    "MediaLogger",
    "NoCheckpointInFastDevRun",
    "PredictionWriter",
    "SegmentationReport",
    "SeparationReport",
    "StopOnNonFiniteLoss",
]
