"""Closed forms of the square-loss toy model (Rangamani et al. 2021) against direct minimisation and integration."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import brentq, least_squares

from collapselab.core.errors import ParameterError
from collapselab.toy import (
    lambda_from_weight_decay,
    lemma2_equal_margins,
    lemma2_stuck_points,
    lemma9_loss,
    mean_lambda,
    recursion_factor,
    recursion_regime,
    rho_eq,
    rho_flow_solution,
    rho_recursion,
    toy_loss,
    unnormalised_rho_rate,
)
from collapselab.toy.dynamics import bias_free_forward

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

MARGINS = torch.tensor([0.3, 0.1, 0.25, -0.05, 0.2, 0.15], dtype=torch.float64)
MU, M = float(MARGINS.mean()), float(MARGINS.square().mean())


def _argmin(loss, low, high):
    """Minimiser of a smooth 1-D loss: the root of its autograd derivative (Brent, to rounding)."""

    def derivative(r):
        t = torch.tensor(r, dtype=torch.float64, requires_grad=True)
        return float(torch.autograd.grad(loss(t), t)[0])

    return brentq(derivative, low, high, xtol=1e-300, rtol=1e-15)


@pytest.mark.parametrize("lam", [0.0, 0.04])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_rho_eq_minimises_the_toy_loss(lam, reduction):
    N = MARGINS.numel()
    best = _argmin(lambda r: toy_loss(r, MARGINS, lam, reduction=reduction), 0.0, 100.0)
    assert rho_eq(MU, M, lam, reduction=reduction, num_samples=N) == pytest.approx(best, rel=1e-12)


def test_conventions_relate_sum_and_mean_and_pytorch_weight_decay():
    N = MARGINS.numel()
    assert float(toy_loss(2.0, MARGINS, 0.3, reduction="sum")) == pytest.approx(N * float(toy_loss(2.0, MARGINS, 0.3 / N)), rel=1e-14)
    assert mean_lambda(0.3, reduction="sum", num_samples=N) == pytest.approx(0.3 / N)
    assert lambda_from_weight_decay(0.01) == 0.005
    with pytest.raises(ParameterError, match="reduction='sum' needs num_samples"):
        rho_eq(MU, M, 0.1, reduction="sum")
    with pytest.raises(ParameterError, match="reduction must be one of 'mean', 'sum'"):
        rho_eq(MU, M, 0.1, reduction="avg")
    with pytest.raises(ParameterError, match="lam must be float in"):
        rho_eq(MU, M, -1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_lemma9_identity(reduction):
    N = MARGINS.numel()
    for rho, lam in ((0.5, 0.0), (3.0, 0.07)):
        r = torch.tensor(rho, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(toy_loss(r, MARGINS, lam, reduction=reduction), r)
        rho_dot = -float(grad)  # gradient flow
        direct = float(toy_loss(rho, MARGINS, lam, reduction=reduction))
        assert lemma9_loss(rho, MU, rho_dot, reduction=reduction, num_samples=N) == pytest.approx(direct, rel=1e-12)


def test_rho_flow_solution_matches_an_ode_solver():
    lam, rho0 = 0.05, 0.2
    sol = solve_ivp(lambda _t, r: 2.0 * (MU - r * (M + lam)), (0.0, 30.0), [rho0], rtol=1e-12, atol=1e-14, t_eval=np.linspace(0, 30, 31))
    exact = rho_flow_solution(torch.tensor(sol.t), rho0, MU, M, lam).numpy()
    np.testing.assert_allclose(sol.y[0], exact, rtol=1e-9)
    N = MARGINS.numel()
    summed = solve_ivp(lambda _t, r: 2.0 * N * (MU - r * M) - 2.0 * lam * r, (0.0, 2.0), [rho0], rtol=1e-12, atol=1e-14)
    assert rho_flow_solution(2.0, rho0, MU, M, lam, reduction="sum", num_samples=N) == pytest.approx(summed.y[0, -1], rel=1e-9)


@pytest.mark.parametrize(("factor", "regime"), [(0.2, "monotone"), (0.45, "monotone"), (0.8, "oscillating"), (1.2, "divergent")])
def test_exact_gd_recursion_and_its_regimes(factor, regime):
    lam, rho0 = 0.02, 0.3
    lr = factor / (M + lam)
    r = torch.tensor(rho0, dtype=torch.float64)
    seq = [rho0]
    for _ in range(25):
        r = r.requires_grad_(True)
        (g,) = torch.autograd.grad(toy_loss(r, MARGINS, lam), r)
        r = (r - lr * g).detach()
        seq.append(float(r))
    closed = rho_recursion(rho0, MU, M, lam, lr, 25).numpy()
    np.testing.assert_allclose(seq, closed, rtol=1e-10)
    q = recursion_factor(lr, M, lam)
    assert q == pytest.approx(1 - 2 * factor)
    assert recursion_regime(q) == regime
    gaps = np.array(seq) - rho_eq(MU, M, lam)
    gaps = gaps[np.abs(gaps) > 1e-9 * abs(gaps[0])]  # beyond that the sign is rounding noise
    flips = bool((np.sign(gaps[1:]) != np.sign(gaps[:-1])).any())
    assert flips == (regime != "monotone")
    assert (abs(gaps[-1]) > abs(gaps[0])) == (regime == "divergent")


def test_lemma2_equal_margins_against_minimisation():
    rho0, lam, N = 5.0, 0.03, 12
    loss = lambda r: N * (1 - r / rho0) ** 2 + lam * r * r  # noqa: E731
    best = _argmin(loss, 0.0, rho0)
    case = lemma2_equal_margins(rho0, lam, N, reduction="sum")
    assert case.rho == pytest.approx(best, rel=1e-12)
    assert case.loss == pytest.approx(loss(best), rel=1e-12)
    assert case.gap == pytest.approx(1 - best / rho0, rel=1e-10)
    assert case.gap != pytest.approx(lam * rho0, rel=1e-2)  # the printed gap is wrong (docs/theory/errata.md)
    assert case.margin_difference == 0.0
    mean_case = lemma2_equal_margins(rho0, lam / N, N, reduction="mean")
    assert mean_case.rho == pytest.approx(case.rho, rel=1e-14)
    assert mean_case.loss == pytest.approx(case.loss / N, rel=1e-14)


def test_lemma2_reduction_is_required_and_agrees_with_toy_loss():
    """One point, one loss: the Lemma 2 configurations evaluated by :func:`toy_loss` give the
    closed forms' ``loss`` for each reduction, and neither ``lemma2_*`` function picks a reduction
    silently (they defaulted to "sum" while ``toy_loss`` defaults to "mean": the same point gave
    losses ``N`` apart)."""
    import inspect

    for f in (lemma2_equal_margins, lemma2_stuck_points):
        p = inspect.signature(f).parameters["reduction"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty, f.__name__
    with pytest.raises(TypeError, match="reduction"):
        lemma2_equal_margins(5.0, 0.03, 8)
    rho0, lam, N = 5.0, 0.03, 8
    for reduction in ("mean", "sum"):
        for stuck in (1, 3, N):
            case = lemma2_stuck_points(rho0, lam, N, stuck, reduction=reduction)
            if stuck == N:
                assert case == lemma2_equal_margins(rho0, lam, N, reduction=reduction)
            # stuck margins at 1/rho_0, the others interpolate (margin 1/rho): Lemma 2's configuration
            margins = torch.tensor([1 / rho0] * stuck + [1 / case.rho] * (N - stuck), dtype=torch.float64)
            # float64 sums of N = 8 terms of size <= 1: a few ulps
            assert float(toy_loss(case.rho, margins, lam, reduction=reduction)) == pytest.approx(case.loss, rel=1e-13), (reduction, stuck)


@pytest.mark.parametrize("stuck", [1, 3])
def test_lemma2_stuck_points_against_joint_minimisation(stuck):
    rho0, lam, N = 5.0, 0.03, 8

    def residuals(v):  # the loss is the sum of their squares
        r, free = v[0], v[1:]
        return np.r_[math.sqrt(stuck) * (1 - r / rho0), 1 - r * free, math.sqrt(lam) * r]

    res = least_squares(residuals, np.r_[rho0, np.full(N - stuck, 0.3)], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    case = lemma2_stuck_points(rho0, lam, N, stuck, reduction="sum")
    assert case.rho == pytest.approx(res.x[0], rel=1e-8)
    assert case.loss == pytest.approx(float((res.fun**2).sum()), rel=1e-10)
    assert case.margin_difference == pytest.approx(float(np.mean(res.x[1:])) - 1 / rho0, rel=1e-7)
    assert case.loss < lemma2_equal_margins(rho0, lam, N, reduction="sum").loss
    with pytest.raises(ParameterError, match=r"num_stuck must be an int in \[1, 8\]"):
        lemma2_stuck_points(rho0, lam, N, 9, reduction="sum")


@pytest.mark.parametrize("lam", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_unnormalised_rho_rate_against_autograd(lam, reduction):
    g = torch.Generator().manual_seed(5)
    X = torch.randn(6, 3, dtype=torch.float64, generator=g)
    y = torch.tensor([1.0, -1, 1, -1, 1, 1], dtype=torch.float64)
    Ws = [torch.randn(4, 3, dtype=torch.float64, generator=g).requires_grad_(True), torch.randn(4, 4, dtype=torch.float64, generator=g).requires_grad_(True), torch.randn(1, 4, dtype=torch.float64, generator=g).requires_grad_(True)]
    s = 1 / 6 if reduction == "mean" else 1.0
    loss = s * (1 - y * bias_free_forward(Ws, X)).square().sum() + 0.5 * lam * sum(W.square().sum() for W in Ws)
    grads = torch.autograd.grad(loss, Ws)
    norms = torch.stack([torch.linalg.norm(W.detach()) for W in Ws])
    rho = float(norms.prod())
    rate = sum(rho / float(n) * float((W.detach() / n * -gr).sum()) for W, n, gr in zip(Ws, norms, grads))
    f = (y * bias_free_forward([W.detach() for W in Ws], X) / rho)
    got = unnormalised_rho_rate(norms, float(f.mean()), float(f.square().mean()), lam, reduction=reduction, num_samples=6)
    assert got == pytest.approx(rate, rel=1e-10)


def test_unnormalised_rate_reduces_to_eq51_with_equal_norms():
    L, rho = 3, 8.0
    rho_k = torch.full((L,), rho ** (1 / L), dtype=torch.float64)
    assert unnormalised_rho_rate(rho_k, 0.2, 0.05) == pytest.approx(2 * L * rho ** ((2 * L - 2) / L) * (0.2 - rho * 0.05), rel=1e-12)
    assert math.isfinite(unnormalised_rho_rate(rho_k, 0.2, 0.05, 0.1))
