"""relu_jvp / relu_vjp against the dense autograd Jacobian and torch.func."""

from __future__ import annotations

import pytest
import torch

from collapselab.core.errors import ShapeError
from collapselab.core.network import hidden_layers, unflatten_params
from collapselab.flows.relu_products import relu_jvp, relu_vjp

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


@pytest.mark.parametrize("widths,n", [([3, 7, 5, 2], 9), ([4, 6, 6, 6, 3], 11), ([2, 3], 5), ([16, 64, 64, 4], 40)])
def test_products_equal_the_dense_jacobian(relu_problem, widths, n):
    _, omap, theta, _ = relu_problem(widths, n)
    D = omap.jacobian(theta)  # torch.func.jacrev
    params = unflatten_params(theta, widths)
    hidden = hidden_layers(params, omap.X)
    g = torch.Generator().manual_seed(7)
    v = torch.randn(theta.shape[0], generator=g, dtype=torch.float64)
    u = torch.randn(D.shape[0], generator=g, dtype=torch.float64)
    torch.testing.assert_close(relu_jvp(params, hidden, v), D @ v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(relu_vjp(params, hidden, u), D.T @ u, rtol=1e-12, atol=1e-12)


def test_dead_units_get_zero_gradient(relu_problem):
    net, omap, theta, _ = relu_problem([3, 8, 2], 6)
    params = unflatten_params(theta, [3, 8, 2])
    with torch.no_grad():
        params[0][1][:4] = -100.0  # units 0-3 never fire: h(z) = 0 there, as torch's ReLU backward
    hidden = hidden_layers(params, omap.X)
    u = torch.ones(12, dtype=torch.float64)
    grad = relu_vjp(params, hidden, u)
    W1, b1 = unflatten_params(grad, [3, 8, 2])[0]
    assert torch.count_nonzero(W1[:4]) == 0 and torch.count_nonzero(b1[:4]) == 0
    _, pull = torch.func.vjp(lambda th: hidden_layers(unflatten_params(th, [3, 8, 2]), omap.X)[-1].reshape(-1), theta)
    torch.testing.assert_close(grad, pull(u)[0], rtol=1e-12, atol=1e-12)


def test_shape_errors(relu_problem):
    _, omap, theta, _ = relu_problem([3, 4, 2], 5)
    params = unflatten_params(theta, [3, 4, 2])
    hidden = hidden_layers(params, omap.X)
    with pytest.raises(ShapeError, match=r"u must have shape \(10,\)"):
        relu_vjp(params, hidden, torch.zeros(9, dtype=torch.float64))
    with pytest.raises(ShapeError, match="hidden must hold the 3 layer outputs"):
        relu_jvp(params, hidden[:-1], theta)
