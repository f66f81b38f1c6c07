"""Logger-agnostic callbacks: reports and media."""

from avtoolkit.callbacks.report import SeparationReport

__all__ = ["SeparationReport"]
