"""(Chen & Munoz Ewald 2024 Prop 2.5, corrected; erratum E8, docs/theory/errata.md) against a direct ODE solve of (2.58)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from collapselab.core.errors import ParameterError
from collapselab.flows import deviation_from_interpolation, linear_interpolation, reparametrised_time

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

N_DIM = 6


def _setup(seed: int = 0):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((N_DIM, N_DIM)))
    P0 = basis[:, :3] @ basis[:, :3].T  # rank-3 projector
    frame, _ = np.linalg.qr(rng.standard_normal((N_DIM, N_DIM)))
    speeds = rng.uniform(0.5, 2.0, N_DIM // 2)  # R(t) = frame . blockdiag(rotation(speed_k t)) . frame^T
    x0, y = rng.standard_normal(N_DIM), rng.standard_normal(N_DIM)
    return P0, (frame, speeds), x0, y


def _rotating(P0: np.ndarray, generator):
    frame, speeds = generator

    def P(t: float) -> np.ndarray:
        c, s = np.cos(speeds * t), np.sin(speeds * t)
        blocks = np.zeros((N_DIM, N_DIM))
        for k in range(N_DIM // 2):
            blocks[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = [[c[k], -s[k]], [s[k], c[k]]]
        R = frame @ blocks @ frame.T
        return R @ P0 @ R.T

    return P


def _true_deviation(P, x0, y, times):
    """Solve dx/dt = -(1/(1 - t)) P_t (x - y) (Chen & Munoz Ewald 2024 (2.58)) directly and subtract the line."""
    sol = solve_ivp(lambda t, x: -(P(t) @ (x - y)) / (1 - t), (0, times[-1]), x0, t_eval=times, method="DOP853", rtol=1e-12, atol=1e-14)
    return sol.y.T - ((1 - times)[:, None] * x0 + times[:, None] * y)


def test_t23_constant_projector_gives_t_times_perp():
    P0, _, x0, y = _setup()
    times = np.linspace(0.0, 0.95, 9)
    dev = deviation_from_interpolation(times, lambda t: P0, torch.tensor(x0), torch.tensor(y))
    expected = times[:, None] * ((np.eye(N_DIM) - P0) @ (x0 - y))
    assert np.abs(dev.numpy() - expected).max() < 1e-10


def test_t23_rotating_projector_corrected_formula_matches_ode():
    P0, A, x0, y = _setup(1)
    P = _rotating(P0, A)
    times = np.linspace(0.0, 0.9, 7)
    truth = _true_deviation(P, x0, y, times)
    dev = deviation_from_interpolation(times, P, torch.tensor(x0), torch.tensor(y)).numpy()
    assert np.abs(dev - truth).max() < 1e-8
    assert np.abs(truth).max() > 0.1  # a real deviation, not a trivial agreement


def test_printed_propagator_is_wrong():
    """The paper's P_t (instead of P_t^perp) in dU/dt disagrees with the ODE (errata E8)."""
    P0, A, x0, y = _setup(1)
    P = _rotating(P0, A)
    times = np.linspace(0.0, 0.9, 7)
    c = x0 - y
    printed = solve_ivp(lambda t, R: (P(t) @ R + (c - P(t) @ c)) / (1 - t), (0, 0.9), np.zeros(N_DIM), t_eval=times, rtol=1e-12, atol=1e-14)
    printed_dev = (1 - times)[:, None] * printed.y.T
    assert np.abs(printed_dev - _true_deviation(P, x0, y, times)).max() > 1e-2


def test_time_reparametrisation_and_line():
    s = torch.tensor([0.0, 1.0, 50.0], dtype=torch.float64)
    t = reparametrised_time(s, 10)
    # 1 - e^{-x} carries exp's rounding, up to an ulp of e^{-x} <= 1 (libm or a SIMD exp), and
    # expm1 an ulp of t: 2 eps apart at most
    eps = torch.finfo(torch.float64).eps
    assert torch.allclose(t, 1 - torch.exp(-s / 10), rtol=0, atol=2 * eps)
    assert reparametrised_time(1.0, 10) == pytest.approx(1 - np.exp(-0.1), rel=0, abs=2 * eps)
    x0, y = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    assert torch.allclose(linear_interpolation(torch.tensor([0.25]), x0, y), torch.full((1, 2), 0.25, dtype=torch.float64))


def test_deviation_rejects_bad_times():
    z = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ParameterError, match=r"t must be increasing in \[0, 1\)"):
        deviation_from_interpolation(np.array([0.0, 1.0]), lambda t: torch.eye(2), z, z)
