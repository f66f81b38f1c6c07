"""The one error type for bad input data (see :mod:`avtoolkit.errors`)."""

from avtoolkit.errors import DatasetError

__all__ = ["DatasetError"]
