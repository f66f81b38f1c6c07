"""The errors a user can fix: the ``avtoolkit`` command prints their message alone (no traceback) and exits 2.

Every one names what is wrong (the file, field, option or checkpoint) and how to fix it. They are also ordinary
``ValueError``s, so library callers can catch them as such.
"""


class UserError(ValueError):
    """Bad input, option, config, weights or checkpoint. The message says what, where, and how to fix it."""


class DatasetError(UserError):
    """Bad or missing input data. The message names the file, field or option and how to fix it."""


class ConfigError(UserError):
    """A config, option, weights file or checkpoint that does not fit what is being run."""
