"""Theorem 3 of Rangamani et al. 2021 at the last layer (erratum E-3) and the MSE unconstrained-features optimum."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from collapselab.core.data import simplex_etf
from collapselab.core.errors import AssumptionError, ParameterError, ShapeError
from collapselab.toy import collapsed_ridge, theorem3_check, ufm_mse_loss, ufm_mse_optimum, ufm_mse_point

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _lstsq(means, N, lam, bias):
    """Ridge by an independent route: materialised data, augmented least squares in numpy."""
    C, d = means.shape
    H = np.repeat(means.numpy(), N, axis=0)
    Y = np.repeat(np.eye(C), N, axis=0)
    A = np.hstack([H, np.ones((C * N, 1))]) if bias else H
    reg = np.sqrt(lam) * np.eye(A.shape[1])
    if bias:
        reg = reg[:-1]  # the bias is not penalised
    sol = np.linalg.lstsq(np.vstack([A, reg]), np.vstack([Y, np.zeros((reg.shape[0], C))]), rcond=None)[0]
    return sol[:d].T, (sol[d] if bias else np.zeros(C))


@pytest.mark.parametrize("bias", [True, False])
def test_collapsed_ridge_matches_least_squares(bias):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 6, dtype=torch.float64, generator=g)
    W, b = collapsed_ridge(means, 3, 0.7, bias=bias)
    W_ref, b_ref = _lstsq(means, 3, 0.7, bias)
    np.testing.assert_allclose(W.numpy(), W_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-10, atol=1e-12)


def _etf_means(C, d, offset):
    return 1.5 * simplex_etf(C, d, seed=3) + offset


@pytest.mark.parametrize("offset", [0.0, 0.8])
def test_theorem3_holds_with_an_unpenalised_bias(offset):
    C, N, lam = 5, 4, 0.2
    means = _etf_means(C, 6, offset)
    W, b = collapsed_ridge(means, N, lam)
    res = theorem3_check(W, b, means, N, lam)
    assert res.max_residual() <= 1e-10
    assert 0 < res.eps < (C - 1) / C
    # eq. 34: |W^c|^2 = (N/lam)(eps - C eps^2/(C-1)) checked by hand as well
    assert float(W[0].square().sum()) == pytest.approx((N / lam) * (res.eps - C * res.eps**2 / (C - 1)), rel=1e-10)


@pytest.mark.parametrize("offset", [0.0, 0.8])
def test_theorem3_check_fails_without_a_bias(offset):
    # erratum E-3: sum_c W^c = 0 contradicts outputs summing to 1 without a bias
    C, N, lam = 5, 4, 0.2
    means = _etf_means(C, 6, offset)
    W, b = collapsed_ridge(means, N, lam, bias=False)
    res = theorem3_check(W, b, means, N, lam)
    assert res.max_residual() > 0.1
    assert res.quasi_interpolation > 0.1 or res.proportionality > 0.1


def test_ufm_mse_optimum_against_lbfgs():
    C, N, d, lam = 3, 4, 4, 0.5
    labels = torch.arange(C).repeat_interleave(N)
    sizes = (C * d, C, C * N * d)

    def objective(v):
        z = torch.from_numpy(v).requires_grad_(True)
        loss = ufm_mse_loss(z[: sizes[0]].reshape(C, d), z[sizes[0] : sizes[0] + C], z[sizes[0] + C :].reshape(C * N, d), labels, lam)
        return float(loss.detach()), torch.autograd.grad(loss, z)[0].numpy()

    rng = np.random.default_rng(0)
    best = min((minimize(objective, rng.standard_normal(sum(sizes)), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000}) for _ in range(3)), key=lambda r: r.fun)
    opt = ufm_mse_optimum(C, N, lam)
    assert best.fun == pytest.approx(opt.loss, rel=1e-9)
    assert opt.eps == pytest.approx(lam * (C - 1) / (C * math.sqrt(N)))
    z = best.x
    W = z[: sizes[0]].reshape(C, d)
    H = z[sizes[0] + C :].reshape(C * N, d)
    means = H.reshape(C, N, d).mean(axis=1)
    np.testing.assert_allclose(W, math.sqrt(N) * (means - means.mean(axis=0)), atol=1e-5)
    np.testing.assert_allclose(np.sum(W**2, axis=1), opt.classifier_norm_sq, rtol=1e-5)


def test_ufm_mse_point_is_a_stationary_point_with_the_closed_form_loss():
    W, b, H, labels = ufm_mse_point(4, 3, 5, 0.4, seed=1)
    leaves = [t.clone().requires_grad_(True) for t in (W, b, H)]
    loss = ufm_mse_loss(*leaves, labels, 0.4)
    grads = torch.autograd.grad(loss, leaves)
    assert max(float(g.abs().max()) for g in grads) <= 1e-12
    assert float(loss.detach()) == pytest.approx(ufm_mse_optimum(4, 3, 0.4).loss, rel=1e-12)


def test_ufm_mse_large_weight_decay_gives_the_zero_solution():
    C, N = 3, 4
    opt = ufm_mse_optimum(C, N, 2.5)  # lam >= sqrt(N)
    assert not opt.collapsed
    b = torch.full((C,), 1.0 / C, dtype=torch.float64)
    zero = ufm_mse_loss(torch.zeros(C, 2, dtype=torch.float64), b, torch.zeros(C * N, 2, dtype=torch.float64), torch.arange(C).repeat_interleave(N), 2.5)
    assert float(zero) == pytest.approx(opt.loss, rel=1e-14)
    with pytest.raises(AssumptionError, match="needs dim >= 2"):
        ufm_mse_point(3, 4, 1, 0.5)
    with pytest.raises(ShapeError, match=r"W must have shape \(3, 2\)"):
        theorem3_check(torch.zeros(2, 2), torch.zeros(3), torch.ones(3, 2), 2, 0.1)
    # counts are parameters: ParameterError (was ShapeError, or a bare ValueError for a string)
    with pytest.raises(ParameterError, match=r"num_per_class must be an int >= 1, got 0"):
        collapsed_ridge(torch.ones(3, 2, dtype=torch.float64), 0, 0.1)
    with pytest.raises(ParameterError, match=r"num_classes must be an int >= 2, got 'three'"):
        ufm_mse_optimum("three", 4, 0.5)
