"""Shared vocabulary: data, the papers' network and costs, truncation geometry, run folders.

``core`` knows nothing of the packages above it.
"""

from . import cost, data, errors, geometry, network, store, validation
from .errors import CollapseLabError

__all__ = ["CollapseLabError", "cost", "data", "errors", "geometry", "network", "store", "validation"]
