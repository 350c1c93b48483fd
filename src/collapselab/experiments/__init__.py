"""Experiments: one module per experiment, discovered by name (see ``_base``).

The names below are imported on first use, so ``collapselab list`` reads the catalogue
(``_catalogue.catalogue()``: names, summaries and sources) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Experiment",
    "ExperimentConfig",
    "RunContext",
    "RunResult",
    "experiments",
    "get_experiment",
    "parse_overrides",
    "progress",
    "run_experiment",
]

_HOME = {"progress": "._progress", "run_experiment": "._runner"}  # the rest live in ._base


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(_HOME.get(name, "._base"), __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
