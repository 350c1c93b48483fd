"""Small problems with known answers for the flows tests (float64, CPU, a few ms each)."""

from __future__ import annotations

import pytest
import torch

from collapselab.core.network import ReLUNet, flatten_params
from collapselab.flows import OutputMap


def tanh_map(X: torch.Tensor) -> OutputMap:
    """A tanh net: widths [2, 4, 2], K = 22 parameters."""

    def f(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        W1, b1 = theta[:8].reshape(4, 2), theta[8:12]
        W2, b2 = theta[12:20].reshape(2, 4), theta[20:22]
        return torch.tanh(X @ W1.T + b1) @ W2.T + b2

    return OutputMap(f, X)


@pytest.fixture
def tanh_problem():
    """T20: N = 3, Q = 2 (QN = 6 <= K = 22). Returns (omap, theta0, y)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 2, generator=g, dtype=torch.float64)
    theta = torch.randn(22, generator=g, dtype=torch.float64)
    y = torch.eye(2, dtype=torch.float64)[[0, 1, 0]].reshape(-1)
    return tanh_map(X), theta, y


@pytest.fixture
def duplicate_problem():
    """T20's tanh net with samples 0 and 2 identical but labelled differently: rank D = 4 < QN = 6,
    zero cost unreachable. Returns (omap, theta0, y)."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(2, 2, generator=g, dtype=torch.float64)
    X = torch.cat([X, X[:1]])
    theta = torch.randn(22, generator=g, dtype=torch.float64)
    y = torch.eye(2, dtype=torch.float64)[[0, 1, 1]].reshape(-1)
    return tanh_map(X), theta, y


def _relu_problem(widths: list[int], n: int, seed: int = 0):
    torch.manual_seed(seed)
    net = ReLUNet(widths)
    X = torch.randn(n, widths[0], dtype=torch.float64)
    labels = torch.arange(n) % widths[-1]
    y = torch.eye(widths[-1], dtype=torch.float64)[labels].reshape(-1)
    omap, theta = OutputMap.from_module(net, X)
    assert torch.equal(theta, flatten_params(net))
    return net, omap, theta, y


@pytest.fixture
def relu_problem():
    """Factory ``(widths, n, seed=0) -> (net, omap, theta, y)``: a ReLUNet on Gaussian inputs, one-hot targets."""
    return _relu_problem


@pytest.fixture
def make_tanh_map():
    """Factory ``X -> OutputMap`` of the tanh net (widths [2, 4, 2], K = 22)."""
    return tanh_map
