"""Shared vocabulary: data, the papers' network and costs, truncation geometry, run folders.

``core`` knows nothing of the packages above it. Its submodules are imported on first use
(``collapselab.core.geometry`` or ``from collapselab.core import geometry``), so importing
:mod:`collapselab.core.errors` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import errors
from .errors import CollapseLabError

__all__ = ["CollapseLabError", "cost", "data", "errors", "geometry", "network", "store", "validation"]

_SUBMODULES = frozenset({"cost", "data", "geometry", "network", "store", "validation"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
