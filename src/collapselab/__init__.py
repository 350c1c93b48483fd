"""CollapseLab: the geometry of training deep classifiers.

Explicit zero-loss minimizers of deep ReLU networks, gradient flows in parameter and
output space, the effective truncation dynamics of clustered data, and neural
collapse, from its measurement on any PyTorch model to the toy models that explain it.

The main entry points are importable from here; each is imported on first use (so
``import collapselab`` does not import torch):

- data: :func:`load_dataset` (named data sets, ``.npz``/``.pt`` files, IDX folders);
- explicit minimizers: :func:`construct_clustered`, :func:`construct_sequential`,
  :func:`construct_shallow`, :func:`admissible_mu`, :func:`load_network`;
- neural collapse: :func:`collapse_report`, :class:`CollapseStatistics`, :class:`CollapseTracker`,
  :func:`~collapselab.collapse.measure`;
- the adapted flow (Chen & Munoz Ewald 2024): :func:`~collapselab.flows.fit`, :class:`AdaptedFlow`;
- the effective truncation dynamics (Chen 2025): :func:`make_state`, :class:`SeparatedFlow`
  (integrated by :func:`collapselab.effective.integrate`), :func:`exact_bias_coordinate`;
- training: :class:`Trainer`, :class:`TrainConfig`;
- experiments: :func:`run_experiment`.

The subpackages (``collapselab.collapse``, ``construct``, ``core``, ``effective``,
``experiments``, ``flows``, ``toy``, ``train``) are attributes too, imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .core.errors import CollapseLabError

_EXPORTS: dict[str, str] = {
    "load_dataset": "core.data",
    "construct_clustered": "construct",
    "construct_sequential": "construct",
    "construct_shallow": "construct",
    "admissible_mu": "construct",
    "load_network": "construct",
    "collapse_report": "collapse",
    "CollapseStatistics": "collapse",
    "CollapseTracker": "collapse",
    "measure": "collapse",
    "fit": "flows",
    "AdaptedFlow": "flows",
    "make_state": "effective",
    "SeparatedFlow": "effective",
    "exact_bias_coordinate": "effective",
    "Trainer": "train",
    "TrainConfig": "train",
    "run_experiment": "experiments",
}
"""Public name -> the subpackage that defines it (imported on first access)."""

_SUBPACKAGES = frozenset({"collapse", "construct", "core", "effective", "experiments", "flows", "toy", "train"})

__all__ = ["CollapseLabError", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBPACKAGES})
