"""Lazy import of optional dependencies with an error that says what to install."""

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional dependency is not installed."""


def lazy_import(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise an error naming the pip extra that provides it.

    Args:
        module: Importable module name, e.g. ``"open_clip"``.
        extra: The avtoolkit extra that installs it, e.g. ``"clip"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"This feature needs the optional package `{module}`, which is not installed. "
            f"Install it with: pip install 'avtoolkit[{extra}]' (inside the project: make install)."
        ) from err
