"""Shape aliases used in signatures across the package.

They are documentation, not runtime checks: the checks live in
:mod:`collapselab.core.validation` and :func:`collapselab.core.data.check_data`.
"""

from __future__ import annotations

from typing import TypeAlias

import torch

__all__ = ["Inputs", "Labels", "Targets", "Features", "Outputs", "Theta", "Matrix", "Vector"]

Inputs: TypeAlias = torch.Tensor
"""``(N, M)`` float64: one training input per row (the papers use columns)."""
Labels: TypeAlias = torch.Tensor
"""``(N,)`` int64 class indices in ``[0, Q)``."""
Targets: TypeAlias = torch.Tensor
"""``(Q, Q)`` reference outputs; row ``j`` is ``y_j`` (identity by default)."""
Features: TypeAlias = torch.Tensor
"""``(N, d)`` penultimate-layer features."""
Outputs: TypeAlias = torch.Tensor
"""``(N, Q)`` network outputs, one row per sample."""
Theta: TypeAlias = torch.Tensor
"""``(K,)`` flat parameter vector."""
Matrix: TypeAlias = torch.Tensor
Vector: TypeAlias = torch.Tensor
