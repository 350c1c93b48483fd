"""Assumption checks shared by the constructions (docs/theory/minimizers.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import AssumptionError, ParameterError

__all__ = ["check_independent_means", "deviation_stats", "per_class"]


def check_independent_means(means: torch.Tensor, *, where: str, source: str) -> None:
    """Raise AssumptionError unless the class means (rows of ``means``, ``(Q, M)``) are linearly independent.

    The class named is the one with the largest weight in the (near) linear relation
    ``sum_j c_j x̄_j ~ 0`` (the last left singular vector of the mean matrix): its mean is
    (nearly) a combination of the others'. ``source`` names the theorem that needs it.
    """
    q, m = means.shape
    if q > m:
        raise AssumptionError(
            f"{where}: Q={q} class means in R^{m} cannot be linearly independent ({source} needs Q <= M); "
            "use fewer classes or more input features"
        )
    U, S, _ = torch.linalg.svd(means, full_matrices=False)
    tol = 1e3 * torch.finfo(means.dtype).eps * max(q, m) * float(S[0])
    if float(S[0]) == 0.0 or float(S[-1]) <= tol:
        c = U[:, -1]
        j = int(c.abs().argmax())
        others = [k for k in range(q) if k != j and abs(float(c[k])) > 1e-8 * abs(float(c[j]))]
        raise AssumptionError(
            f"{where}: the class means are linearly dependent (smallest singular value {float(S[-1]):.3g} vs largest {float(S[0]):.3g}): "
            f"the mean of class {j} is a combination of the means of classes {others}; {source} needs linearly independent "
            f"means; drop or move class {j}"
        )


def deviation_stats(X: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One pass over the data: per-class radii ``r_j = max_i |x_{j,i} - x̄_j|`` ``(Q,)`` and
    ``delta_P = sup_{j,i} |(X_0^red)^+ Δx_{j,i}|`` (CE23 (2.56) with ``tau = id``; docs/theory/minimizers.md).

    X: ``(N, M)``; labels: ``(N,)``; means: ``(Q, M)`` with independent rows.
    """
    dev = X - means[labels]
    radii = torch.zeros(means.shape[0], dtype=X.dtype, device=X.device).scatter_reduce(0, labels, dev.norm(dim=1), "amax")
    bary = dev @ torch.linalg.pinv(means)  # (N, Q): Δ_1^T
    return radii, float(bary.norm(dim=1).max())


def per_class(value: float | Sequence[float], q: int, name: str, where: str) -> list[float]:
    """``value`` as ``q`` floats, one per class: a number (repeated) or a sequence of ``q`` numbers."""
    try:
        values = [float(value)] * q if isinstance(value, (int, float)) else [float(v) for v in value]
    except (TypeError, ValueError):
        raise ParameterError(f"{where}: {name} must be a number or {q} numbers (one per class), got {value!r}") from None
    if len(values) != q:
        raise ParameterError(f"{where}: {name} must be a number or {q} numbers (one per class), got {len(values)}")
    return values
