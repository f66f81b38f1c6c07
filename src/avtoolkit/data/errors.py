"""The one error type for bad input data."""


class DatasetError(ValueError):
    """Bad or missing input data. The message names the file, field or option and how to fix it."""
