"""Standard (pullback-metric) loss in two special initial configurations: Chen 2025 §8-9 (docs/theory/effective-flow.md).

Row conventions of this package: ``P (Q, Q)`` has rows ``p_j`` (the collapse points), ``Y`` has
rows ``y_j``; in the paper's column notation ``X = P^T`` and ``Y_spec = Y^T``. ``b^(Q+1) = 0``.

Fully collapsed data (§8): ``C_N = 1/2 ||W X - Y||_F^2`` with ``X = [p_1 ... p_Q]``, flow
``dX/ds = -W^T E``, ``dW/ds = -E X^T``, ``E = W X - Y``. Prop 8.3: ``Lambda = W^T W - X X^T`` is
conserved. Thm 8.4: if ``Lambda(0) >= lambda`` or ``Lambda(0) <= -lambda`` (``lambda > 0``), then
``C_N(s) <= e^{-2 lambda s} C_N(0)`` and the limits ``W_inf``, ``X_inf`` exist with ``W_inf X_inf = Y``.

Untruncated clustered data (§9): ``tau = id`` on the data, ``dW/ds = -(W X_0 - Y^ext) N^{-1} X_0^T``
and, with ``A = X_0 N^{-1} X_0^T`` invertible, Thm 9.1 (9.10):
``W(s) = W(0) e^{-sA} + Y^ext N^{-1} X_0^T A^{-1} (1 - e^{-sA}) -> Y^ext X_0^+`` at rate ``lambda_min(A)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..core.cost import weighted_l2
from ..core.data import ClassificationData
from ..core.errors import AssumptionError, DivergenceError, ParameterError, ShapeError, SingularError
from ..core.validation import OneOf, check_param
from ._expm import expm_symmetric
from ._forward import check_flow_data, forward_pass, sample_weights
from ._separated import check_cluster_separated
from ._state import EffectiveState

__all__ = [
    "collapsed_loss",
    "collapsed_field",
    "balancedness",
    "spectral_gap",
    "collapsed_initial",
    "integrate_collapsed",
    "CollapsedSolution",
    "check_untruncated",
    "ClusteredSolution",
    "clustered_closed_form",
]


def _square(name: str, t: torch.Tensor, Q: int, where: str) -> None:
    if t.shape != (Q, Q):
        raise ShapeError(f"{where}: {name} must be ({Q}, {Q}), got {tuple(t.shape)}")


def collapsed_loss(W: torch.Tensor, P: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``C_N = 1/2 ||W P^T - Y^T||_F^2`` (Chen 2025 (8.2)/(8.3); rows of ``P`` and ``Y`` are ``p_j``, ``y_j``).

    ``W``, ``P``: ``(..., Q, Q)`` (a leading batch of times is allowed), ``Y``: ``(Q, Q)``; returns ``(...)``.
    """
    return 0.5 * (W @ P.transpose(-1, -2) - Y.T).square().sum((-2, -1))


def collapsed_field(W: torch.Tensor, P: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dW/ds, dP/ds) = (-E X^T, -(W^T E)^T)`` with ``E = W X - Y_spec`` (Chen 2025 (8.5)-(8.7))."""
    E = W @ P.T - Y.T
    return -E @ P, -E.T @ W


def balancedness(W: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """The conserved matrix ``Lambda = W^T W - X X^T = W^T W - P^T P`` (Prop 8.3, (8.21))."""
    return W.T @ W - P.T @ P


def spectral_gap(W: torch.Tensor, P: torch.Tensor) -> float:
    """``lambda = max(lambda_min(Lambda), lambda_min(-Lambda), 0)``: the rate in ``C(s) <= e^{-2 lambda s} C(0)`` (Thm 8.4).

    0 when ``Lambda`` is indefinite or singular (then Thm 8.4 gives no rate).
    """
    ev = torch.linalg.eigvalsh(balancedness(W, P))
    return max(float(ev[0]), float(-ev[-1]), 0.0)


def collapsed_initial(state: EffectiveState, data: ClassificationData) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, P) = (W^(Q+1), -beta)`` for a state whose truncations collapse every cluster (Chen 2025 (8.1)).

    Requires cluster-separated truncations and cluster ``j`` fully truncated by ``tau^(j)``
    (``z <= 0``), else :class:`AssumptionError` names the cluster; ``b^(Q+1)`` must be 0.
    """
    where = "collapsed_initial"
    check_cluster_separated(state, data, where)
    zs = forward_pass(state, data.X).zs
    own = zs[data.labels, torch.arange(data.num_samples, device=data.X.device)]
    bad = torch.nonzero(~(own <= 0).all(1)).flatten()
    if bad.numel():
        j = int(data.labels[bad[0]])
        raise AssumptionError(f"{where}: cluster {j} is not fully truncated by its layer {j + 1} ({int((data.labels[bad] == j).sum())} point(s) in a mixed or positive sector); §8 needs collapsed initial data")
    if bool((state.b_out != 0).any()):
        raise AssumptionError(f"{where}: §8 assumes b^(Q+1) = 0, got |b_out| = {float(state.b_out.norm()):.3g}")
    return state.W_out, -state.beta


@dataclass(frozen=True)
class CollapsedSolution:
    """Solution of the §8 flow at times ``s (T,)``: ``W (T, Q, Q)``, ``P (T, Q, Q)``, ``loss (T,)``."""

    s: torch.Tensor
    W: torch.Tensor
    P: torch.Tensor
    loss: torch.Tensor


def integrate_collapsed(W0: torch.Tensor, P0: torch.Tensor, Y: torch.Tensor, s: Sequence[float], *, rtol: float = 1e-11, atol: float = 1e-13, method: str = "RK45") -> CollapsedSolution:
    """Integrate the §8 flow with scipy's ``solve_ivp`` (``method``, ``rtol``, ``atol``) and report it at ``s``.

    A general-purpose solver on purpose: the conservation of ``Lambda`` is then a property of the
    equations, not of a structure-preserving scheme.
    """
    where = "integrate_collapsed"
    Q = W0.shape[0] if W0.ndim else 0
    for name, t in (("W0", W0), ("P0", P0), ("Y", Y)):
        _square(name, t, Q, where)
    check_param("method", method, OneOf(["RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA"]), where)
    times = np.asarray(s, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or not np.isfinite(times).all() or times[0] < 0 or times[-1] <= 0 or (np.diff(times) <= 0).any():
        raise ParameterError(
            f"{where}: s must be an increasing 1-D array of finite times in [0, s_end] with s_end > 0, got {times.tolist()!r:.80}; pass e.g. numpy.linspace(0, s_end, n)"
        )
    Yc = Y.detach().to("cpu", torch.float64)

    def rhs(_: float, u: np.ndarray) -> np.ndarray:
        W, P = torch.from_numpy(u).reshape(2, Q, Q)
        return torch.cat([d.reshape(-1) for d in collapsed_field(W, P, Yc)]).numpy()

    u0 = torch.cat([W0.detach().reshape(-1), P0.detach().reshape(-1)]).to("cpu", torch.float64).numpy()
    sol = solve_ivp(rhs, (0.0, float(times[-1])), u0, method=method, t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise DivergenceError(f"{where}: solve_ivp ({method}) stopped early: {sol.message}; loosen rtol/atol or shorten s")
    u = torch.as_tensor(sol.y.T, dtype=W0.dtype, device=W0.device)
    W, P = u.reshape(-1, 2, Q, Q).unbind(1)
    return CollapsedSolution(torch.as_tensor(times, dtype=W0.dtype, device=W0.device), W, P, collapsed_loss(W, P, Y))


def check_untruncated(state: EffectiveState, data: ClassificationData, where: str = "check_untruncated") -> None:
    """Raise :class:`AssumptionError` unless every point lies strictly inside every positive sector (§9 (9.1)/(9.2)).

    Raises ShapeError unless inputs and labels live in ``R^Q`` of the state.
    """
    check_flow_data(state, data, where)
    zs = forward_pass(state, data.X).zs
    bad = (zs <= 0).any(-1)  # (L, N)
    if bool(bad.any()):
        l, i = (int(t) for t in torch.nonzero(bad)[0])
        raise AssumptionError(f"{where}: point {i} of cluster {int(data.labels[i])} is truncated by layer {l + 1}; §9 needs untruncated clustered data (tau = id)")


@dataclass(frozen=True)
class ClusteredSolution:
    """Thm 9.1 in rows: ``W(s) = W0 e^{-sA} + B A^{-1} (1 - e^{-sA})`` with ``A = X^T D X``, ``B = Y[labels]^T D X``, ``D = diag(1/N_j)``."""

    W0: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    data: ClassificationData

    @property
    def limit(self) -> torch.Tensor:
        """``W_inf = Y^ext X_0^+ = B A^{-1}`` (9.11)/(9.12)."""
        return torch.linalg.solve(self.A.T, self.B.T).T

    @property
    def rate(self) -> float:
        """``lambda_min(A)``, the exponential rate of ``W(s) -> W_inf``."""
        return float(torch.linalg.eigvalsh(self.A)[0])

    def W(self, s: float) -> torch.Tensor:
        """``W(s)`` (9.10); ``e^{-sA}`` from the eigendecomposition of the symmetric ``A`` (``expm_symmetric``)."""
        E = expm_symmetric(-s * self.A)
        return self.W0 @ E + self.limit @ (torch.eye(self.A.shape[0], dtype=self.A.dtype, device=self.A.device) - E)

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """``C_N = 1/2 sum_j 1/N_j sum_i |W x_i - y_j|^2`` (9.3)-(9.5), i.e. ``1/2 weighted_l2``."""
        return 0.5 * weighted_l2(self.data.X @ W.T, self.data.labels, self.data.Y)

    def field(self, W: torch.Tensor) -> torch.Tensor:
        """``dW/ds = -(W X_0 - Y^ext) N^{-1} X_0^T`` (9.7), for comparison with an ODE solver."""
        return self.B - W @ self.A


def clustered_closed_form(data: ClassificationData, W0: torch.Tensor) -> ClusteredSolution:
    """Closed form of the §9 flow of the output weight ``W (P, M)`` from ``W0`` (Chen 2025 Thm 9.1).

    Raises SingularError if ``A = X_0 N^{-1} X_0^T`` (9.9) is not invertible.
    """
    where = "clustered_closed_form"
    if W0.shape != (data.Y.shape[1], data.dim):
        raise ShapeError(f"{where}: W0 must be ({data.Y.shape[1]}, {data.dim}) to map inputs to labels, got {tuple(W0.shape)}")
    w = sample_weights(data).unsqueeze(1)
    A = data.X.T @ (w * data.X)
    ev = torch.linalg.eigvalsh(A)
    if float(ev[0]) <= 1e3 * torch.finfo(A.dtype).eps * float(ev[-1]) * A.shape[0]:
        raise SingularError(f"{where}: A = X_0 N^-1 X_0^T is singular (smallest eigenvalue {float(ev[0]):.3g}); Thm 9.1 needs inputs spanning R^M")
    return ClusteredSolution(W0, A, data.targets.T @ (w * data.X), data)
