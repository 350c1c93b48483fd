"""Neural-collapse measurement inside other training frameworks.

- :mod:`collapselab.integrations.lightning`: ``NeuralCollapseCallback`` for PyTorch
  Lightning (``pip install 'collapselab[lightning]'``).
- :mod:`collapselab.integrations.transformers`: ``NeuralCollapseCallback`` for the Hugging
  Face ``Trainer`` (``pip install 'collapselab[transformers]'``).

Both callbacks are thin adapters around one framework-independent part,
:class:`CollapseMonitor` (schedule, loaders, history, state) and :func:`measure_layers`
(the exact two-pass measurement of several layers in one forward pass per pass, reduced
over processes): the metrics are those of :func:`collapselab.collapse.collapse_report`
(Papyan, Han and Donoho 2020; docs/theory/neural-collapse.md), accumulated in float64 by
:class:`collapselab.collapse.CollapseStatistics`. The frameworks themselves are imported
only by their submodule, so ``import collapselab.integrations`` needs neither.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..core.errors import MissingDependencyError
from ._measure import Layer, measure_layers
from ._monitor import CollapseMonitor

__all__ = ["CollapseMonitor", "Layer", "measure_layers", "require"]


def require(package: str, extra: str, where: str) -> ModuleType:
    """Import ``package`` or raise :class:`MissingDependencyError` naming the extra that
    installs it (``pip install 'collapselab[extra]'``)."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{where}: the {package!r} package is not installed ({exc}); pip install 'collapselab[{extra}]'"
        ) from None
