"""Exact bias flow at fixed ``R``: Chen 2025 §4.3 (4.38)-(4.50), docs/theory/effective-flow.md.

With ``R`` frozen, ``xi_i = R (x_i - ỹ)`` and ``eta = R (beta + ỹ)``, the bias flow
``d eta/ds = -J0perp(eta) eta`` is diagonal: each coordinate solves
``d eta/ds = -(n(eta)/N) eta`` with ``n(eta) = #{i : xi_i <= -eta}`` (``h(0) = 0``: a point on
the wall counts as truncated). With thresholds ``c_i = -xi_i``:

* ``n(eta_0) = 0`` or ``eta_0 = 0``: ``eta`` is constant (4.44);
* ``eta_0 > 0``: ``eta`` decreases and crosses the thresholds in ``(0, eta_0)`` in decreasing
  order at ``s_{k+1} = s_k + (N/n_k) ln(eta(s_k)/c_(k+1))``, ``n_{k+1} = n_k + 1`` (4.45)-(4.49);
  once all ``N`` points are truncated the rate is exactly 1 (4.50);
* ``eta_0 < 0``: the mirror case; ``eta`` increases, points in ``[eta_0, 0)`` become untruncated
  one by one (``n_{k+1} = n_k - 1``) and the flow stops if ``n`` reaches 0.

Between switching times ``eta(s) = eta(s_k) e^{-(n_k/N)(s - s_k)}``. The switching times are
one cumulative sum; no ODE solver is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import AssumptionError, ShapeError
from ..core.validation import check_finite
from ._state import ORTHOGONALITY_TOL, orthogonality_errors

__all__ = ["PiecewiseExponential", "exact_bias_coordinate", "ExactBiasFlow", "exact_bias_flow"]


@dataclass(frozen=True)
class PiecewiseExponential:
    """One coordinate: segment ``k`` starts at ``starts[k]`` with value ``values[k]`` and rate ``rates[k]``."""

    starts: torch.Tensor
    values: torch.Tensor
    rates: torch.Tensor

    @property
    def switching_times(self) -> torch.Tensor:
        """``(K,)``: the times ``s_1 < s_2 < ...`` at which a point changes truncation state."""
        return self.starts[1:]

    def __call__(self, s: torch.Tensor | float) -> torch.Tensor:
        """``eta(s)`` for ``s >= 0`` (any shape)."""
        s = torch.as_tensor(s, dtype=self.starts.dtype, device=self.starts.device)
        k = (torch.searchsorted(self.starts, s.reshape(-1), right=True) - 1).clamp_min(0).reshape(s.shape)
        return self.values[k] * torch.exp(-self.rates[k] * (s - self.starts[k]))


def exact_bias_coordinate(xi: torch.Tensor, eta0: float | torch.Tensor) -> PiecewiseExponential:
    """The exact solution of ``d eta/ds = -(n(eta)/N) eta`` for one coordinate (``xi (N,)``)."""
    N = xi.shape[0]
    eta0 = torch.as_tensor(eta0, dtype=xi.dtype, device=xi.device).reshape(())
    c = -xi
    n0 = int((c >= eta0).sum())
    zero = xi.new_zeros(1)
    if n0 == 0 or float(eta0) == 0.0:
        return PiecewiseExponential(zero, eta0.reshape(1), zero)
    if float(eta0) > 0:
        thr = torch.sort(c[(c > 0) & (c < eta0)], descending=True).values
        ns = n0 + torch.arange(thr.shape[0] + 1, device=xi.device, dtype=xi.dtype)
    else:
        thr = torch.sort(c[(c >= eta0) & (c < 0)]).values
        ns = n0 - torch.arange(thr.shape[0] + 1, device=xi.device, dtype=xi.dtype)
    values = torch.cat([eta0.reshape(1), thr])
    durations = (N / ns[:-1]) * torch.log(values[:-1] / thr)
    starts = torch.cat([zero, torch.cumsum(durations, 0)])
    return PiecewiseExponential(starts, values, ns / N)


@dataclass(frozen=True)
class ExactBiasFlow:
    """The decoupled exact bias flow of one cluster at fixed ``R`` (one :class:`PiecewiseExponential` per coordinate)."""

    coordinates: list[PiecewiseExponential]
    R: torch.Tensor
    ytilde: torch.Tensor

    def eta(self, s: torch.Tensor | float) -> torch.Tensor:
        """``eta(s) = R (beta(s) + ỹ)``: shape ``s.shape + (Q,)``."""
        return torch.stack([c(s) for c in self.coordinates], -1)

    def beta(self, s: torch.Tensor | float) -> torch.Tensor:
        """``beta(s) = R^T eta(s) - ỹ``."""
        return self.eta(s) @ self.R - self.ytilde

    @property
    def switching_times(self) -> torch.Tensor:
        """All switching times of all coordinates, sorted."""
        return torch.sort(torch.cat([c.switching_times for c in self.coordinates])).values


def exact_bias_flow(X: torch.Tensor, R: torch.Tensor, beta0: torch.Tensor, ytilde: torch.Tensor) -> ExactBiasFlow:
    """Exact bias flow of a cluster ``X (N, Q)`` at fixed orthogonal ``R (Q, Q)`` from ``beta0 (Q,)`` towards ``ỹ (Q,)``."""
    where = "exact_bias_flow"
    if X.ndim != 2 or R.shape != (X.shape[1], X.shape[1]) or beta0.shape != (X.shape[1],) or ytilde.shape != (X.shape[1],):
        raise ShapeError(
            f"{where}: need X (N, Q), R (Q, Q), beta0 (Q,), ytilde (Q,); got {tuple(X.shape)}, {tuple(R.shape)}, {tuple(beta0.shape)}, {tuple(ytilde.shape)}"
        )
    for t, name in ((X, "X"), (R, "R"), (beta0, "beta0"), (ytilde, "ytilde")):
        check_finite(t, name, where)
    err = float(orthogonality_errors(R))
    if err > ORTHOGONALITY_TOL:
        raise AssumptionError(f"{where}: R is not orthogonal (max |R^T R - 1| = {err:.3g} > {ORTHOGONALITY_TOL:g}); pass the orthogonal factor of the layer")
    xi = (X - ytilde) @ R.T
    eta0 = R @ (beta0 + ytilde)
    return ExactBiasFlow([exact_bias_coordinate(xi[:, a], eta0[a]) for a in range(X.shape[1])], R, ytilde)
