"""Jacobian, matrix-free products and the structured Gram against independent computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from collapselab.core.errors import ParameterError, ShapeError
from collapselab.core.network import stacked_outputs, unflatten_params
from collapselab.flows import OutputMap, mlp_widths, relu_gram

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _finite_difference_jacobian(omap: OutputMap, theta: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    cols = []
    for k in range(theta.shape[0]):
        e = torch.zeros_like(theta)
        e[k] = eps
        cols.append((omap.outputs(theta + e) - omap.outputs(theta - e)) / (2 * eps))
    return torch.stack(cols, 1)


def test_dense_jacobian_matches_finite_differences(tanh_problem):
    omap, theta, _ = tanh_problem
    D = omap.jacobian(theta)
    assert D.shape == (6, 22)
    assert torch.allclose(D, _finite_difference_jacobian(omap, theta), atol=1e-8, rtol=0)


def test_jacfwd_branch_for_underparametrised(relu_problem):
    _, omap, theta, _ = relu_problem([2, 3, 3], 20)  # K = 21 < QN = 60 -> jacfwd
    D = omap.jacobian(theta)
    assert D.shape == (60, 21)
    assert torch.allclose(D, _finite_difference_jacobian(omap, theta), atol=1e-8, rtol=0)


def test_jvp_vjp_match_dense(relu_problem, rounding_bound):
    _, omap, theta, _ = relu_problem([3, 7, 5, 2], 9)
    D = omap.jacobian(theta)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(theta.shape[0], generator=g, dtype=torch.float64)
    u = torch.randn(D.shape[0], generator=g, dtype=torch.float64)
    out, Dv = omap.jvp(theta, v)
    out2, Dtu = omap.vjp(theta, u)
    assert torch.allclose(Dv, D @ v, atol=1e-12, rtol=1e-12)
    assert torch.allclose(Dtu, D.T @ u, atol=1e-12, rtol=1e-12)
    # forward and reverse mode evaluate the outputs through different kernels: equal up to rounding
    bound = rounding_bound(unflatten_params(theta, [3, 7, 5, 2]), omap.X).reshape(-1)
    assert bool(((out - out2).abs() <= bound).all())


@pytest.mark.parametrize("widths,n", [([3, 7, 5, 2], 9), ([4, 6, 6, 6, 3], 11), ([2, 3], 5)])
def test_structured_gram_equals_autograd_gram(relu_problem, widths, n):
    _, omap, theta, _ = relu_problem(widths, n)
    D = omap.jacobian(theta)
    dense = D @ D.T
    structured = relu_gram(unflatten_params(theta, widths), omap.X)
    rel = torch.linalg.matrix_norm(structured - dense) / torch.linalg.matrix_norm(dense)
    assert float(rel) < 1e-12
    assert torch.equal(omap.gram(theta), structured)  # auto -> structured for MLPs
    upper = relu_gram(unflatten_params(theta, widths), omap.X, upper_only=True)  # BLAS syrk on the CPU
    iu = torch.triu_indices(*dense.shape)
    rel = torch.linalg.vector_norm(upper[iu[0], iu[1]] - dense[iu[0], iu[1]]) / torch.linalg.matrix_norm(dense)
    assert float(rel) < 1e-12


def test_structured_gram_with_dead_units_and_blocks_are_ntk(relu_problem):
    net, omap, theta, _ = relu_problem([3, 8, 2], 6)
    with torch.no_grad():
        net.layers[0].bias[:4] = -100.0  # four dead units: their columns of D vanish
    omap, theta = OutputMap.from_module(net, omap.X)
    D = omap.jacobian(theta)
    G = omap.gram(theta, "structured")
    assert float(torch.linalg.matrix_norm(G - D @ D.T) / torch.linalg.matrix_norm(G)) < 1e-12
    # block (i, j) is Theta(x_i, x_j) = Df(x_i) Df(x_j)^T (Chen & Munoz Ewald 2024 (3.14)-(3.15))
    Di = torch.func.jacrev(lambda th: stacked_outputs(th, net.widths, omap.X[1:2]))(theta)
    Dj = torch.func.jacrev(lambda th: stacked_outputs(th, net.widths, omap.X[4:5]))(theta)
    assert torch.allclose(G[2:4, 8:10], Di @ Dj.T, atol=1e-12, rtol=1e-12)


def test_sequential_mlp_is_recognised_and_matches():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    assert mlp_widths(seq) == [4, 5, 3]
    X = torch.randn(7, 4, dtype=torch.float64)
    omap, theta = OutputMap.from_module(seq, X)
    assert torch.allclose(omap.outputs(theta), seq(X).reshape(-1))
    dense = omap.gram(theta, "dense")
    assert float(torch.linalg.matrix_norm(omap.gram(theta, "structured") - dense) / torch.linalg.matrix_norm(dense)) < 1e-12


def test_non_mlp_modules_are_not_structured():
    assert mlp_widths(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))) is None
    assert mlp_widths(nn.Sequential(nn.Linear(2, 3), nn.ReLU())) is None
    assert mlp_widths(nn.Linear(2, 3)) is None
    assert mlp_widths(nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1))) is None


def test_structured_gram_refused_for_non_mlp(make_tanh_map):
    omap = make_tanh_map(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ParameterError, match="method='structured' needs a ReLU MLP"):
        omap.gram(torch.zeros(22, dtype=torch.float64), "structured")
    with pytest.raises(ParameterError, match="method must be one of"):
        omap.gram(torch.zeros(22, dtype=torch.float64), "fast")


def test_vjp_shape_error(tanh_problem):
    omap, theta, _ = tanh_problem
    with pytest.raises(ShapeError, match=r"u must have shape \(6,\)"):
        omap.vjp(theta, torch.zeros(5, dtype=torch.float64))


def test_relu_gram_input_shape_error(relu_problem):
    _, omap, theta, _ = relu_problem([3, 4, 2], 5)
    with pytest.raises(ShapeError, match=r"X must be \(N, 3\)"):
        relu_gram(unflatten_params(theta, [3, 4, 2]), torch.zeros(5, 4, dtype=torch.float64))


def test_relu_gram_in_given_buffers(relu_problem):
    _, omap, theta, _ = relu_problem([3, 7, 5, 2], 9)
    params = unflatten_params(theta, [3, 7, 5, 2])
    out, work = torch.full((18, 18), float("nan"), dtype=torch.float64), torch.empty(18, 18, dtype=torch.float64)
    gram = relu_gram(params, omap.X, out=out, work=work)
    assert gram.data_ptr() == out.data_ptr()
    torch.testing.assert_close(gram, relu_gram(params, omap.X), rtol=1e-14, atol=1e-14)
    with pytest.raises(ShapeError, match=r"work must be a contiguous \(18, 18\) tensor of torch.float64"):
        relu_gram(params, omap.X, out=out, work=torch.empty(18, 18, dtype=torch.float32))


def test_jacobian_sample_by_sample_and_its_fallbacks():
    torch.manual_seed(0)
    X = torch.randn(6, 3, dtype=torch.float64)
    eval_bn = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double().eval()
    batch_bn = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.Tanh(), nn.Linear(5, 2)).double()

    def centred(theta, X):  # couples the samples through the batch mean, runs fine on one sample
        h = torch.tanh(X @ theta[:15].reshape(5, 3).T)
        return (h - h.mean(0)) @ theta[15:].reshape(2, 5).T

    def branching(theta, X):  # data-dependent control flow: vmap cannot run it
        out = X @ theta[:6].reshape(2, 3).T
        return out if float(out.detach().sum()) > 0 else -out

    cases = [(*OutputMap.from_module(eval_bn, X), True), (*OutputMap.from_module(batch_bn, X), False)]
    cases += [(OutputMap(centred, X), torch.randn(25, dtype=torch.float64), False), (OutputMap(branching, X), torch.randn(6, dtype=torch.float64), False)]
    for omap, theta, samplewise in cases:
        v = torch.randn(theta.shape[0], dtype=torch.float64)
        assert (omap._per_sample_jacobian(theta, v, omap.jvp(theta, v)[1], None) is not None) is samplewise
        D = omap.jacobian(theta)
        torch.testing.assert_close(D, torch.func.jacrev(omap.outputs)(theta), rtol=1e-12, atol=1e-12)  # the stacked map
        assert torch.allclose(D, _finite_difference_jacobian(omap, theta), atol=1e-7, rtol=0)
