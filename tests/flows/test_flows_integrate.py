"""Integrators: the exponential law on a ReLU net, Euler = gradient descent, failure statuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from collapselab.core.cost import mean_l2
from collapselab.core.errors import DivergenceError, NonFiniteError, ParameterError, SingularError
from collapselab.flows import AdaptedField, HomotopyField, OutputMap, StandardField, Status, evaluate_field, integrate


def test_adapted_flow_on_overparametrised_net_is_exponential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    X = torch.randn(6, 3, dtype=torch.float64)
    omap, theta = OutputMap.from_module(net, X)  # K = 370 >= QN = 12
    y = torch.eye(2, dtype=torch.float64)[torch.arange(6) % 2].reshape(-1)
    tr = integrate(AdaptedField(), omap, theta, y, 18.0, method="DOP853", rtol=1e-11, atol=1e-13)
    assert tr.status is Status.END_TIME, tr.message
    exact = y + torch.exp(-tr.s / 6)[:, None] * (tr.x0 - y)  # x(s) = y + e^{-s/N}(x0 - y)
    assert float((tr.outputs - exact).abs().max()) < 1e-8
    assert float((tr.deviation_error).max()) < 1e-8  # full rank: no deviation, tracked R stays 0
    assert float(tr.cost[-1]) < float(tr.cost[0]) * 3e-3


def test_relu_sliding_mode_stalls_with_message_and_law_holds_before(relu_problem):
    _, omap, theta, y = relu_problem([3, 16, 2], 6)
    tr = integrate(AdaptedField(), omap, theta, y, 18.0, method="DOP853", rtol=1e-11, atol=1e-13, max_steps=400)
    assert tr.status is Status.STALLED
    assert "sliding mode" in tr.message
    exact = y + torch.exp(-tr.s / 6)[:, None] * (tr.x0 - y)
    assert float((tr.outputs - exact).abs().max()) < 1e-7


def test_euler_standard_field_is_gradient_descent():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X = torch.randn(5, 3, dtype=torch.float64)
    targets = torch.randn(5, 2, dtype=torch.float64)
    omap, theta = OutputMap.from_module(net, X)
    tr = integrate(StandardField(), omap, theta, targets.reshape(-1), 0.5, method="euler", ds=0.1)
    assert tr.steps == 5 and tr.status is Status.END_TIME
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        mean_l2(net(X), targets).backward()
        opt.step()
    gd = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    # the field's D^T (x - y)/N and autograd's backward sum the same N Q = 10 products per entry in
    # their own orders: per step the gradients differ by <= 2 N Q eps sum|terms| (< 1e-13 for
    # these O(1) terms), times ds = 0.1, over 5 steps of a map with Lipschitz constant ~1: 1e-14
    assert torch.allclose(tr.theta, gd, atol=1e-14, rtol=0)


def test_euler_adapted_step_with_ds_equal_n_solves_linear_least_squares():
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double()  # affine in theta: K = 12 >= QN = 8
    X = torch.randn(4, 5, dtype=torch.float64)
    omap, theta = OutputMap.from_module(model, X)
    y = torch.randn(8, dtype=torch.float64)
    tr = integrate(AdaptedField(), omap, theta, y, 4.0, method="euler", ds=4.0)  # ds = N: Gauss-Newton
    assert tr.steps == 1
    assert float(tr.cost[-1]) < 1e-28


def test_nan_stops_with_status_and_keeps_trajectory():
    X = torch.ones(2, 1, dtype=torch.float64)

    def f(theta, X):
        return torch.sqrt(theta[:1]) * X  # NaN once theta[0] < 0

    omap = OutputMap(f, X)
    y = torch.full((2,), -1.0, dtype=torch.float64)
    tr = integrate(StandardField(), omap, torch.tensor([1.0], dtype=torch.float64), y, 10.0, method="euler", ds=3.0)
    assert tr.status is Status.NON_FINITE
    assert "NaN" in tr.message and len(tr.s) >= 1
    assert bool(torch.isfinite(tr.theta).all())
    with pytest.raises(DivergenceError, match="stopped: NaN or Inf"):
        tr.raise_for_status()


def test_divergence_stops():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    X = 10 * torch.randn(6, 3, dtype=torch.float64)
    omap, theta = OutputMap.from_module(model, X)
    tr = integrate(StandardField(), omap, theta, torch.zeros(12, dtype=torch.float64), 1e3, method="euler", ds=50.0)
    assert tr.status is Status.DIVERGED
    assert "C(0)" in tr.message and tr.steps >= 1


def test_rank_loss_stops_by_default(duplicate_problem):
    omap, theta, y = duplicate_problem
    tr = integrate(AdaptedField(), omap, theta, y, 5.0)
    assert tr.status is Status.RANK_LOSS
    assert "rank D = 4 < min(QN, K) = 6 at s=0" in tr.message
    with pytest.raises(SingularError, match="lost rank"):
        tr.raise_for_status()


def test_rank_loss_corrected_deviation_tracks_the_flow(duplicate_problem):
    omap, theta, y = duplicate_problem
    tr = integrate(AdaptedField(), omap, theta, y, 15.0, on_rank_loss="continue", rtol=1e-11, atol=1e-13)
    assert tr.ok, tr.message
    assert bool((tr.rank == 4).all())
    assert float(tr.deviation.max()) > 0.1  # a visible deviation from the straight line
    assert float(tr.deviation_error.max()) < 1e-7  # ... that the corrected Prop 2.5 predicts
    # the duplicated pair cannot split: its outputs stay equal and head for the mean of its targets
    x = tr.outputs[-1].reshape(3, 2)
    assert torch.allclose(x[0], x[2], atol=1e-9)


def test_all_homotopy_fields_share_the_equilibrium(duplicate_problem):
    omap, theta, y = duplicate_problem
    # Euler with ds = N is the Gauss-Newton iteration: it lands on the equilibrium quickly
    tr = integrate(AdaptedField(), omap, theta, y, 60.0, method="euler", ds=3.0, on_rank_loss="continue", record_outputs=False)
    assert tr.ok, tr.message
    for alpha in (0.0, 0.5, 1.0):
        ev = evaluate_field(HomotopyField(alpha), omap, tr.theta, y)
        assert float(ev.velocity.abs().max()) < 1e-6  # a zero of V_1 is a zero of every V_alpha
        assert ev.defect > 0.1  # ... although grad_x C != 0: a rank-loss critical point


def test_integrate_errors(tanh_problem):
    omap, theta, y = tanh_problem
    with pytest.raises(ParameterError, match="method must be one of 'euler', 'RK23'"):
        integrate(AdaptedField(), omap, theta, y, 1.0, method="rk4")
    with pytest.raises(ParameterError, match="ds must be float in"):
        integrate(AdaptedField(), omap, theta, y, 1.0, method="euler")
    bad = theta.clone()
    bad[3] = float("nan")
    with pytest.raises(NonFiniteError, match="theta0 has 1 non-finite entry"):
        integrate(AdaptedField(), omap, bad, y, 1.0)
