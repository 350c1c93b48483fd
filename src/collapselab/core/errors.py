"""The project's exceptions.

Every error raised at a public boundary is a :class:`CollapseLabError` and also a
built-in exception (``ValueError``, ``TypeError``, ``FileNotFoundError``,
``RuntimeError``), so callers that catch built-ins keep working. Messages are one
line that says what was found, what was expected, and what to do.
"""

from __future__ import annotations

__all__ = [
    "CollapseLabError",
    "ShapeError",
    "NonFiniteError",
    "LabelError",
    "EmptyClassError",
    "SingularError",
    "AssumptionError",
    "ParameterError",
    "ConfigError",
    "UnknownNameError",
    "DataFileError",
    "MissingFileError",
    "DivergenceError",
    "MissingDependencyError",
    "StorageError",
]


class CollapseLabError(Exception):
    """Base class of every error CollapseLab raises on purpose."""


class ShapeError(CollapseLabError, ValueError):
    """An array has the wrong number of dimensions or a mismatched size."""


class NonFiniteError(CollapseLabError, ValueError):
    """An array contains NaN or infinite entries."""


class LabelError(CollapseLabError, ValueError):
    """Labels are not integers in ``[0, Q)``."""


class EmptyClassError(CollapseLabError, ValueError):
    """A class of ``[0, Q)`` has no samples."""


class SingularError(CollapseLabError, ValueError):
    """A matrix that must be invertible (or of full rank) is not."""


class AssumptionError(CollapseLabError, ValueError):
    """Data violate an assumption of a theorem or construction; the message names it."""


class ParameterError(CollapseLabError, ValueError, TypeError):
    """A function parameter has the wrong type or lies outside its allowed range."""


class ConfigError(CollapseLabError, ValueError):
    """An experiment configuration has an unknown key or an invalid value."""


class UnknownNameError(CollapseLabError, ValueError):
    """A name (experiment, flow, loader, ...) is not in its registry; lists the known ones."""


class DataFileError(CollapseLabError, ValueError):
    """A data file exists but does not hold what was expected."""


class MissingFileError(CollapseLabError, FileNotFoundError):
    """A file or folder that was asked for does not exist."""


class DivergenceError(CollapseLabError, RuntimeError):
    """An iteration produced NaN/Inf or grew without bound; the message says where."""


class MissingDependencyError(CollapseLabError, ImportError):
    """An optional package needed for this call is not installed; the message says how to install it."""


class StorageError(CollapseLabError, OSError):
    """A file or folder could not be written or read (permissions, read-only or full disk, a
    file-size limit, a file in the way); the message names the path and the fix."""
