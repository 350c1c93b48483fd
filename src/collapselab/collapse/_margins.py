"""Square-loss margin statistics of a network's outputs (Rangamani et al., CBMM Memo 117;
docs/theory/square-loss.md).

The definitions live in :mod:`collapselab.toy.normalisation` (``rho``, ``margins``,
``margin_stats``), next to the square-loss theory that uses them; this is their one-call
composition for measurement code.
"""

from __future__ import annotations

from typing import Any

from ..toy.normalisation import MarginStats, margin_stats, margins

__all__ = ["MarginStats", "margin_statistics"]


def margin_statistics(outputs: Any, labels: Any, *, rho: float = 1.0) -> MarginStats:
    """Mean ``mu``, second moment ``M``, population std ``sigma`` and minimum of the normalised
    margins ``(f_{y_n} - max_{c != y_n} f_c) / rho`` of outputs ``(N, C)``, ``C >= 2``.

    ``rho`` is typically :func:`collapselab.toy.rho` of the model (product of layer norms,
    divided by the batch-norm running-std norms as in the authors' code).
    """
    return margin_stats(margins(outputs, labels, rho))
