"""Shallow networks: the constructive upper bound and the barycentric least squares (docs/theory/minimizers.md).

* :func:`barycentric_noise` and :func:`delta_p`: the noise of data in barycentric
  coordinates, ``Δ_1 = (T^red)^+ ΔT`` and ``delta_P = sup_{j,i} |Δ_1 e_{j,i}|`` (CE23 (2.56);
  shallow paper's signal-to-noise quantity).
* :func:`barycentric_lsq`: CE23's exact least-squares identity (2.4)/(4.3): for ``T`` with
  invertible ``T^red``,
  ``min_W |W T - Y^ext|_{L2_N} = |Y |Δ_2|^{1/2} (1 + Δ_2)^{-1/2}|_F``, ``Δ_2 = Δ_1 N^{-1} Δ_1^T``,
  attained at ``W^* T^red = Y (1 + Δ_2)^{-1}``. The minimum is over ``W`` **without** an
  output bias (erratum E5, docs/theory/errata.md): a free bias gives a strictly smaller value for generic data.
* :func:`construct_shallow`: one hidden layer of width ``M`` (Chen & Muñoz Ewald,
  arXiv:2309.10370; **reconstructed** in docs/theory/minimizers.md since only the abstracts are
  available) with ``C_N = |Y Δ_1|_{L2_N} <= sqrt(Q) |Y|_op delta_P``.

Rows are points here: ``T`` is ``(N, M)``, ``T^red`` is ``(Q, M)`` (row ``j`` the mean of
class ``j``), so the papers' column matrices are the transposes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from ..core.data import ClassificationData, check_data
from ..core.errors import ParameterError, ShapeError, SingularError
from ..core.geometry import truncation
from ..core.network import from_layers
from ._checks import check_independent_means
from ._result import ConstructedNetwork, LayerExplanation, check_output_dtype

__all__ = ["barycentric_noise", "delta_p", "barycentric_lsq", "BarycentricLSQ", "construct_shallow"]


def _checked(T: Any, labels: Any, Y: Any | None, num_classes: int | None, where: str) -> ClassificationData:
    """The boundary check of the public functions below: float64 (float32 inputs upcast exactly)."""
    return check_data(T, labels, Y, num_classes=num_classes, dtype=torch.float64, where=where)


def _barycentric(data: ClassificationData) -> torch.Tensor:
    """``Δ_1^T`` ``(N, Q)`` of checked data: ``(x_i - x̄_{label(i)}) (X^red)^+`` (one pseudo-inverse)."""
    return (data.X - data.class_means[data.labels]) @ torch.linalg.pinv(data.class_means)


def barycentric_noise(T: Any, labels: Any, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T^red, Δ_1^T)``: the class means ``(Q, M)`` and the deviations in barycentric coordinates ``(N, Q)``.

    ``Δ_1 = (T^red)^+ ΔT`` (CE23 2.4; the left inverse for ``M > Q``), i.e. row ``i`` of the
    result solves ``Δt_i = sum_k c_k t̄_k`` (in the least-squares sense when ``M > Q``).
    T: ``(N, M)``; labels: ``(N,)`` in ``[0, Q)``, ``Q = num_classes`` (default ``max + 1``),
    every class non-empty (else EmptyClassError).
    """
    data = _checked(T, labels, None, num_classes, "barycentric_noise")
    return data.class_means, _barycentric(data)


def delta_p(T: Any, labels: Any, num_classes: int | None = None) -> float:
    """``delta_P = sup_{j,i} |(T^red)^+ Δt_{j,i}|``: noise relative to signal, in barycentric coordinates.

    CE23 (2.56) (there ``T = tau(X_0)``) and the shallow paper (``T = X_0``). Invariant under
    ``GL`` acting on input space. T: ``(N, M)``; labels: ``(N,)`` as in :func:`barycentric_noise`.
    """
    data = _checked(T, labels, None, num_classes, "delta_p")
    return float(_barycentric(data).norm(dim=1).max())


class BarycentricLSQ(NamedTuple):
    """Result of :func:`barycentric_lsq`."""

    weight: torch.Tensor
    """``(P, Q)``: the minimiser ``W^* = Y^T (1 + Δ_2)^{-1} (T^red)^{-T}`` (acts on rows as ``t @ W^T``)."""
    value: torch.Tensor
    """``|Y |Δ_2|^{1/2} (1 + Δ_2)^{-1/2}|_F``: the minimal ``L2_N`` cost (a norm, CE23 (2.35))."""
    delta2: torch.Tensor
    """``(Q, Q)``: ``Δ_2 = Δ_1 N^{-1} Δ_1^T``."""


def barycentric_lsq(T: Any, labels: Any, Y: Any) -> BarycentricLSQ:
    """CE23's barycentric least-squares formula (2.4)/(4.3) for the last layer, **without output bias**.

    ``min_W sum_j 1/N_j sum_i |W t_{j,i} - y_j|^2`` over ``W`` in ``R^{P x Q}`` equals
    ``|Y |Δ_2|^{1/2} (1 + Δ_2)^{-1/2}|_F^2`` with ``Δ_1 = (T^red)^{-1} ΔT``,
    ``Δ_2 = Δ_1 N^{-1} Δ_1^T`` (docs/theory/minimizers.md; verified against a direct weighted least
    squares in the tests). Per erratum E5 the minimum is over ``W`` with ``b^(L+1) = 0``.

    T: ``(N, Q)`` with invertible class-mean matrix ``T^red``; labels: ``(N,)`` in ``[0, Q)``;
    Y: ``(Q, P)``, row ``j`` is ``y_j``.
    """
    q = np.shape(Y)[0] if np.ndim(Y) == 2 else None
    if np.ndim(T) != 2 or np.shape(T)[1] != q:
        raise ShapeError(f"barycentric_lsq: T must be (N, Q) = (N, {q}) so that T^red is square (Q: rows of Y (Q, P)), got {tuple(np.shape(T))}")
    data = _checked(T, labels, Y, None, "barycentric_lsq")
    Yt, red = data.Y, data.class_means
    s = torch.linalg.svdvals(red)
    if float(s[-1]) <= 1e3 * torch.finfo(red.dtype).eps * q * float(s[0]):
        raise SingularError(f"barycentric_lsq: the class-mean matrix T^red is singular (singular values {s.tolist()}); the formula needs invertible T^red")
    d1 = _barycentric(data)
    w = 1.0 / data.class_counts.to(red.dtype)[data.labels]
    delta2 = (d1 * w[:, None]).T @ d1
    delta2 = 0.5 * (delta2 + delta2.T)
    evals, V = torch.linalg.eigh(delta2)
    evals = evals.clamp_min(0)
    eye = torch.eye(q, dtype=red.dtype, device=red.device)
    root = (V * (evals / (1 + evals)).sqrt()) @ V.T  # |Δ_2|^{1/2} (1 + Δ_2)^{-1/2}
    value = torch.linalg.matrix_norm(Yt.T @ root)
    A = Yt.T @ torch.linalg.inv(eye + delta2)  # W^* T^red_col
    weight = torch.linalg.solve(red, A.T).T  # W^* = A (T^red_col)^{-1}, T^red_col = red^T
    return BarycentricLSQ(weight, value, delta2)


def construct_shallow(
    X: Any,
    labels: Any,
    Y: Any | None = None,
    *,
    beta: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> ConstructedNetwork:
    """One hidden layer of width ``M`` with ``C_N = |Y Δ_1|_{L2_N} <= sqrt(Q) |Y|_op delta_P`` (docs/theory/minimizers.md).

    Reconstructed construction (the shallow paper's equations are unavailable; docs/theory/minimizers.md):

    1. ``R`` in ``O(M)`` whose first ``Q`` rows are an orthonormal basis of
       ``V = span{x̄_{0,j}}`` and the rest one of ``V^perp``.
    2. ``W_1 = R``, ``b_1 = beta (u_Q; -u_{M-Q})`` with ``beta > max_i |x_i|``: the ReLU keeps
       the ``V`` coordinates (shifted into the positive sector) and truncates the ``V^perp``
       ones to 0.
    3. ``W_2 = Y (X_0^red)^+ R^T``, ``b_2 = -W_2 beta (u_Q; 0)``.

    Then ``x^(2)_{j,i} - y_j = Y (X_0^red)^+ Δx_{0,j,i}`` exactly, the cost (CE23's ``L2_N``
    norm) is ``|Y Δ_1|_{L2_N}`` and ``result.bound = sqrt(Q) |Y|_op delta_P``. The decision
    rule is ``argmin_j |Y (X_0^red)^+ P (x - x̄_{0,j})|`` (a metric on ``V``).

    X: ``(N, M)``; labels: ``(N,)`` in ``[0, Q)``, ``Q <= M``; Y: ``(Q, P)`` (identity if
    ``None``). beta: the shift; default ``1 + max_i |x_i|`` (any value above ``max_i |x_i|``
    works; the default keeps the shift of order the data). Descriptive parameters: ``QM + 1``
    (the means, which fix ``V`` and ``(X_0^red)^+``, and ``beta``). dtype: the returned network's
    (float64 or float32); the construction runs in float64 after an exact upcast of float32 inputs.
    Raises AssumptionError if the class means are linearly dependent (naming the class).
    """
    where = "construct_shallow"
    dtype = check_output_dtype(dtype, where)
    data = check_data(X, labels, Y, dtype=torch.float64, where=where)  # float32 inputs: an exact upcast
    Xt, lab, Yt = data.X, data.labels, data.Y
    q, m = data.num_classes, data.dim
    means = data.class_means
    check_independent_means(means, where=where, source="the shallow construction (docs/theory/minimizers.md)")
    radius = float(Xt.norm(dim=1).max())
    if beta is None:
        beta = 1.0 + radius
    elif not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > radius):
        raise ParameterError(f"{where}: beta must be a number > max_i |x_i| = {radius:.6g} so that the ReLU keeps the V coordinates, got {beta!r}")
    basis, _ = torch.linalg.qr(means.T, mode="complete")  # (M, M); first Q columns span V
    W1 = basis.T
    shift = torch.cat([torch.ones(q, dtype=Xt.dtype, device=Xt.device), torch.zeros(m - q, dtype=Xt.dtype, device=Xt.device)])
    b1 = beta * (2 * shift - 1)  # beta (u_Q; -u_{M-Q})
    pinv = torch.linalg.pinv(means)  # (M, Q): (X_0^red)^+ acting on rows
    metric = Yt.T @ pinv.T  # Y (X_0^red)^+ : (P, M)
    W2 = metric @ basis
    b2 = -(W2 @ (beta * shift))
    module = from_layers([(W1, b1), (W2, b2)])
    cumulative = [(W1.clone(), b1.clone()), (W2 @ W1, W2 @ b1 + b2)]
    d1 = (Xt - means[lab]) @ pinv  # Δ_1^T, (N, Q)
    w = 1.0 / data.class_counts.to(Xt.dtype)[lab]
    cost = float(((d1 @ Yt).pow(2).sum(1) * w).sum().sqrt())  # |Y Δ_1|_{L2_N}; module(X) reproduces it
    dp = float(d1.norm(dim=1).max())
    bound = math.sqrt(q) * float(torch.linalg.matrix_norm(Yt, ord=2)) * dp
    return ConstructedNetwork(
        kind="shallow",
        module=module,
        cumulative=cumulative,
        layers=[LayerExplanation()],
        anchors=truncation(means, W1, b1),
        metric=metric,
        cost=cost,
        cost_definition="CE23 (2.35): L2_N norm",
        delta_P=dp,
        descriptive_parameters=q * m + 1,
        order=tuple(range(q)),
        bound=bound,
    ).astype(dtype)
