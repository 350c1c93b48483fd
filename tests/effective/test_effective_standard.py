"""T18 (section 8, conserved matrix and rate bound) and T19 (section 9, closed form (9.10))."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from collapselab.core.data import check_data
from collapselab.core.errors import AssumptionError, ParameterError, ShapeError, SingularError
from collapselab.effective import (
    balancedness,
    check_untruncated,
    clustered_closed_form,
    collapsed_field,
    collapsed_initial,
    collapsed_loss,
    integrate_collapsed,
    make_state,
    spectral_gap,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def test_t18_conserved_matrix_and_rate_bound():
    g = torch.Generator().manual_seed(0)
    Q = 3
    P0 = 0.3 * torch.randn(Q, Q, generator=g, dtype=torch.float64)
    W0 = 2.0 * torch.eye(Q, dtype=torch.float64) + 0.1 * torch.randn(Q, Q, generator=g, dtype=torch.float64)
    Y = torch.eye(Q, dtype=torch.float64)
    lam = spectral_gap(W0, P0)
    assert lam > 1.0  # Lambda(0) = W^T W - P^T P is positive definite here
    s = np.linspace(0, 4, 41)
    sol = integrate_collapsed(W0, P0, Y, s, rtol=1e-11, atol=1e-13)
    L0 = balancedness(W0, P0)
    drift = max(float((balancedness(W, P) - L0).abs().max()) for W, P in zip(sol.W, sol.P))
    assert drift < 1e-10
    bound = torch.exp(-2 * lam * sol.s) * sol.loss[0]
    assert bool((sol.loss <= bound * (1 + 1e-8) + 1e-15).all())
    assert float(sol.loss[-1]) < 1e-10  # the limit reaches zero loss: W_inf X_inf = Y
    assert torch.allclose(sol.W[-1] @ sol.P[-1].T, Y.T, atol=1e-5)
    # the field is the gradient of the loss (central differences in W and P)
    dW, dP = collapsed_field(W0, P0, Y)
    eps = 1e-6
    E = torch.zeros(Q, Q, dtype=torch.float64)
    E[0, 1] = eps
    assert float(-(collapsed_loss(W0 + E, P0, Y) - collapsed_loss(W0 - E, P0, Y)) / (2 * eps)) == pytest.approx(float(dW[0, 1]), rel=1e-8)
    assert float(-(collapsed_loss(W0, P0 + E, Y) - collapsed_loss(W0, P0 - E, Y)) / (2 * eps)) == pytest.approx(float(dP[0, 1]), rel=1e-8)


def test_t18_negative_definite_case_uses_the_p_side():
    Q = 2
    W0 = 0.1 * torch.eye(Q, dtype=torch.float64)
    P0 = 2.0 * torch.eye(Q, dtype=torch.float64)
    lam = spectral_gap(W0, P0)
    assert lam == pytest.approx(4.0 - 0.01)
    assert spectral_gap(torch.diag(torch.tensor([2.0, 0.1], dtype=torch.float64)), torch.diag(torch.tensor([0.1, 2.0], dtype=torch.float64))) == 0.0


def test_collapsed_initial_reads_collapse_points(single_cluster):
    data, state = single_cluster(3, 10)
    with pytest.raises(AssumptionError, match="cluster 0 is not fully truncated"):
        collapsed_initial(state, data)
    yt = data.Y[0]
    # eta = R (beta + ỹ) = -0.05: with R (x - ỹ) < -0.3 every point is fully truncated
    collapsed = state.replace(beta=(state.R[0].T @ (-0.05 * torch.ones(3, dtype=torch.float64)) - yt).unsqueeze(0))
    W, P = collapsed_initial(collapsed, data)
    assert torch.equal(P, -collapsed.beta) and torch.equal(W, state.W_out)


def _t19_data():
    # 2 x 4 data matrix (columns = points), two points per class, Y = 1
    X = torch.tensor([[1.0, 0.1], [0.9, -0.1], [0.1, 1.1], [-0.1, 0.8]], dtype=torch.float64)
    return check_data(X, [0, 0, 1, 1])


def test_t19_closed_form_matches_ode_and_limit_is_ce23_formula():
    data = _t19_data()
    W0 = torch.zeros(2, 2, dtype=torch.float64)
    sol = clustered_closed_form(data, W0)

    def rhs(_, w):
        return sol.field(torch.tensor(w).reshape(2, 2)).numpy().ravel()

    ts = np.array([0.0, 0.3, 1.0, 3.0, 10.0])
    ode = solve_ivp(rhs, (0, 10), W0.numpy().ravel(), t_eval=ts, method="DOP853", rtol=1e-12, atol=1e-14)
    for t, w in zip(ts, ode.y.T):
        assert torch.allclose(sol.W(float(t)), torch.tensor(w).reshape(2, 2), atol=1e-10)
    # limiting cost = 1/2 || Y |Delta_2|^{1/2} (1 + Delta_2)^{-1/2} ||_F^2 (CE23 section 2.4), computed independently
    Xc = data.X.T.numpy()  # columns are points
    means = np.stack([Xc[:, :2].mean(1), Xc[:, 2:].mean(1)], 1)  # T^red
    dX = Xc - np.repeat(means, 2, axis=1)
    D1 = np.linalg.solve(means, dX)
    D2 = D1 @ np.diag([0.5, 0.5, 0.5, 0.5]) @ D1.T
    ev, V = np.linalg.eigh(D2)
    f = V @ np.diag(np.sqrt(np.abs(ev)) / np.sqrt(1 + ev)) @ V.T
    expected = 0.5 * np.linalg.norm(np.eye(2) @ f) ** 2
    assert float(sol.loss(sol.limit)) == pytest.approx(expected, rel=1e-12)
    assert float(sol.loss(sol.W(60.0))) == pytest.approx(expected, rel=1e-10)
    assert sol.rate > 0


def test_t19_bad_input():
    data = _t19_data()
    with pytest.raises(ShapeError, match="W0 must be"):
        clustered_closed_form(data, torch.zeros(3, 2, dtype=torch.float64))
    flat = check_data(torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.5, 0.5]]), [0, 1, 1])
    with pytest.raises(SingularError, match="singular"):
        clustered_closed_form(flat, torch.zeros(2, 2, dtype=torch.float64))


def test_check_untruncated():
    data = _t19_data()
    eye = torch.eye(2, dtype=torch.float64)
    ok = make_state(torch.ones(2, 2), torch.stack([eye, eye]))
    check_untruncated(ok, data)
    with pytest.raises(AssumptionError, match="truncated by layer 1"):
        check_untruncated(make_state(torch.zeros(2, 2), torch.stack([eye, eye])), data)
    # a state of another width is refused by name (was a RuntimeError from a matrix product)
    eye3 = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ShapeError, match="inputs and labels in R\\^Q with Q = 3"):
        check_untruncated(make_state(torch.ones(2, 3), torch.stack([eye3, eye3])), data)


def test_integrate_collapsed_bad_times_and_method():
    W0, P0, Y = 2.0 * torch.eye(2, dtype=torch.float64), 0.3 * torch.ones(2, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    # s = [0] (an empty time span) used to crash with an AttributeError, a decreasing s with a scipy ValueError
    for bad in ([0.0], [0.0, 2.0, 1.0], [-1.0, 1.0], []):
        with pytest.raises(ParameterError, match="s must be an increasing 1-D array"):
            integrate_collapsed(W0, P0, Y, bad)
    with pytest.raises(ParameterError, match="method must be one of 'RK45'"):
        integrate_collapsed(W0, P0, Y, [0.0, 1.0], method="rk45")
    # collapsed_loss is batched over a leading time axis and agrees with the single-time value up
    # to rounding (a batched and a single matmul may sum in another order): each entry of
    # W P^T - Y^T is a sum of Q products, so the losses differ by at most ~ 2 Q eps (|W| |P| + |Y|)^2
    sol = integrate_collapsed(W0, P0, Y, [0.0, 0.5, 1.0])
    single = torch.stack([collapsed_loss(W, P, Y) for W, P in zip(sol.W, sol.P)])
    Q, eps = Y.shape[0], torch.finfo(torch.float64).eps
    scale = torch.linalg.matrix_norm(sol.W) * torch.linalg.matrix_norm(sol.P) + torch.linalg.matrix_norm(Y)
    assert bool(((sol.loss - single).abs() <= 4 * Q * eps * scale**2).all())
    assert float(sol.loss[0]) == pytest.approx(0.5 * float(((W0 @ P0.T - Y.T) ** 2).sum()), rel=1e-15)
