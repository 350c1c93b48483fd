"""Linear interpolation in output space and the deviation from it under rank loss.

Chen & Munoz Ewald 2024 Prop 2.4-2.5, (2.51)-(2.64); docs/theory/adapted-flow.md; erratum E8, docs/theory/errata.md. With
``t = 1 - e^{-s/N}`` a full-rank adapted flow is the straight line
``x~(t) = (1 - t) x_0 + t y``. Under rank loss (``P_t`` the projector onto
``ran(D D^T)`` at time ``t``), ``dx~/dt = -(1/(1 - t)) P_t (x~ - y)`` and, **corrected**,

    x~(t) - ((1 - t) x_0 + t y) = (1 - t) R(t),
    dR/dt = (1/(1 - t)) P_t^perp (R + x_0 - y),  R(0) = 0,

equivalently ``int_0^t U_{t,t'} (1 - t)/(1 - t') P_{t'}^perp (x_0 - y) dt'`` with
``dU_{t,t'}/dt = (1/(1 - t)) P_t^perp U_{t,t'}``. The paper prints ``P_t`` instead of
``P_t^perp`` in the propagator equation, contradicting its own (2.64), and
``(1 - t) x_0 - t y`` in (2.59); we follow the corrected form (erratum E8, docs/theory/errata.md; numerical check: 0.40612 true,
0.40612 corrected, 0.06597 as printed). For constant ``P`` the deviation is exactly
``t P^perp (x_0 - y)``. In flow time ``s`` (``dt/ds = (1 - t)/N``) the ``R`` equation
reads ``dR/ds = (1/N) P^perp (R + x_0 - y)``, which the integrators carry along.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..core.errors import DivergenceError, ParameterError
from ..core.types import Matrix, Vector
from .linalg import GramSolve

__all__ = ["reparametrised_time", "linear_interpolation", "deviation_from_interpolation", "deviation_rate"]


def reparametrised_time(s: torch.Tensor | float, num_samples: int) -> torch.Tensor | float:
    """``t = 1 - e^{-s/N}`` (Chen & Munoz Ewald 2024 (2.54)): ``s = 0 -> t = 0``, ``s -> inf -> t -> 1``."""
    if isinstance(s, torch.Tensor):
        return -torch.expm1(-s / num_samples)
    return -float(np.expm1(-s / num_samples))


def linear_interpolation(t: torch.Tensor, x0: Vector, y: Vector) -> Matrix:
    """``(1 - t) x_0 + t y`` for each ``t`` (``(n,)`` -> ``(n, QN)``) (Chen & Munoz Ewald 2024 (2.57))."""
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device).reshape(-1, 1)
    return (1.0 - t) * x0 + t * y


def deviation_rate(R: Vector, x0: Vector, y: Vector, solve: GramSolve, num_samples: int) -> Vector:
    """``dR/ds = (1/N) P^perp (R + x_0 - y)``: the corrected Prop 2.5 in flow time ``s``."""
    v = R + x0 - y
    return (v - solve.project(v)) / num_samples


def deviation_from_interpolation(t: np.ndarray | torch.Tensor, projector: Callable[[float], Matrix], x0: Vector, y: Vector, *, rtol: float = 1e-11, atol: float = 1e-13) -> Matrix:
    """The corrected Prop 2.5 deviation ``(1 - t) R(t)`` at the times ``t`` (``(n,)`` -> ``(n, QN)``).

    ``projector(t)`` returns ``P_t`` (``QN x QN``). Solved with scipy's DOP853 on
    ``[0, max t]``; ``t`` must lie in ``[0, 1)`` and increase.
    """
    times = np.asarray(torch.as_tensor(t).cpu(), dtype=np.float64).reshape(-1)
    if times.size == 0 or times[0] < 0 or times[-1] >= 1 or np.any(np.diff(times) < 0):
        raise ParameterError(f"deviation_from_interpolation: t must be increasing in [0, 1), got range [{times.min() if times.size else 'empty'}, {times.max() if times.size else 'empty'}]")
    c = (x0 - y).detach().cpu().numpy().astype(np.float64)

    def rhs(tt: float, R: np.ndarray) -> np.ndarray:
        P = np.asarray(torch.as_tensor(projector(tt)).cpu(), dtype=np.float64)
        v = R + c
        return (v - P @ v) / (1.0 - tt)

    if times[-1] == 0.0:
        return torch.zeros(times.size, c.size, dtype=x0.dtype, device=x0.device)
    sol = solve_ivp(rhs, (0.0, float(times[-1])), np.zeros_like(c), method="DOP853", t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise DivergenceError(f"deviation_from_interpolation: the propagator ODE failed at t={sol.t[-1]:.6g} ({sol.message}); check that projector(t) is finite")
    dev = (1.0 - times)[:, None] * sol.y.T
    return torch.as_tensor(dev, dtype=x0.dtype, device=x0.device)
