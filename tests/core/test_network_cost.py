"""The papers' network, its flat parameter vector, and the costs, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from collapselab.core.cost import COSTS, cross_entropy, l2_split, mean_l2, weighted_l2
from collapselab.core.errors import ParameterError, ShapeError
from collapselab.core.network import (
    ReLUNet,
    flatten_params,
    forward,
    from_layers,
    functional,
    hidden_layers,
    layer_shapes,
    num_parameters,
    stacked_outputs,
    unflatten_params,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- network ---------------------------------------------------------------------------


@pytest.mark.parametrize("widths, k", [([4, 5, 3], 5 * 5 + 3 * 6), ([2, 2], 6), ([3, 3, 3, 3], 3 * 12), ([6, 5, 4, 3], 35 + 24 + 15)])
def test_num_parameters_formula(widths, k):
    assert num_parameters(widths) == k
    assert sum(p.numel() for p in ReLUNet(widths).parameters()) == k
    assert layer_shapes(widths) == [(widths[i + 1], widths[i]) for i in range(len(widths) - 1)]


def test_theta_round_trip_and_layout():
    torch.manual_seed(0)
    widths = [4, 5, 2, 3]
    net = ReLUNet(widths)
    theta = flatten_params(net).detach()
    assert theta.shape == (num_parameters(widths),) and theta.dtype == f64
    # papers' order: vec(W_1) row-major, b_1, vec(W_2), b_2, ...
    W1, b1 = net.layers[0].weight.detach(), net.layers[0].bias.detach()
    assert torch.equal(theta[:20], W1.reshape(-1)) and torch.equal(theta[20:25], b1)
    assert float(theta[1]) == float(W1[0, 1])  # row-major: W_1[0, 1] right after W_1[0, 0]
    pairs = unflatten_params(theta, widths)
    for (W, b), (Wn, bn) in zip(pairs, net.weights()):
        assert torch.equal(W, Wn.detach()) and torch.equal(b, bn.detach())
    assert torch.equal(flatten_params(pairs), theta)
    other = torch.randn(theta.shape[0], dtype=f64, generator=_gen(1))
    assert torch.equal(flatten_params(unflatten_params(other, widths)), other)
    with pytest.raises(ShapeError, match=r"unflatten_params: theta must have shape \(46,\) for widths \[4, 5, 2, 3\], got \(45,\)"):
        unflatten_params(theta[:-1], widths)


def test_forward_paths_agree_with_module(rounding_bound):
    torch.manual_seed(1)
    widths = [3, 6, 4, 2]
    net = ReLUNet(widths)
    X = torch.randn(11, 3, dtype=f64, generator=_gen(2))
    params = net.weights()
    with torch.no_grad():
        out = net(X)
        # by hand: two ReLU layers, then affine, one sample and one output at a time in Python
        # floats (an order of summation of its own); the module's fused kernels may round
        # otherwise, within the standard bound
        Ws = [(lay.weight.tolist(), lay.bias.tolist()) for lay in net.layers]
        manual = []
        for x in X.tolist():
            for k, (W, b) in enumerate(Ws):
                x = [sum(w * v for w, v in zip(row, x)) + c for row, c in zip(W, b)]
                x = x if k == len(Ws) - 1 else [max(v, 0.0) for v in x]
            manual.append(x)
        manual = torch.tensor(manual, dtype=f64)
        bound = rounding_bound(params, X)
        assert bool(((out - manual).abs() <= bound).all())
        assert float(bound.max()) < 1e-13  # the bound is tight enough to catch a wrong layer
        # forward, hidden_layers and stacked_outputs share one code path (X @ W.T + b): equal
        ref = forward(params, X)
        assert bool(((ref - out).abs() <= bound).all())
        xs = hidden_layers(params, X)
        assert len(xs) == 4 and torch.equal(xs[0], X) and torch.equal(xs[-1], ref) and bool((xs[1] >= 0).all())
        theta = flatten_params(net)
        stacked = stacked_outputs(theta, widths, X)
        assert stacked.shape == (11 * 2,) and torch.equal(stacked, ref.reshape(-1))
        assert torch.equal(stacked[2:4], ref[1])  # sample-major
        rebuilt = from_layers(params)  # another module of the same layers: the module's path again
        assert rebuilt.widths == widths and torch.equal(rebuilt(X), out)
    assert net.depth == 2


def test_functional_matches_module_and_finite_differences(rounding_bound):
    torch.manual_seed(3)
    widths = [3, 4, 2]
    net = ReLUNet(widths)
    X = torch.randn(5, 3, dtype=f64, generator=_gen(4))
    theta0, f = functional(net)
    assert torch.equal(theta0, flatten_params(net))
    with torch.no_grad():
        assert torch.equal(f(theta0, X), net(X))
    shifted = theta0 + 0.1 * torch.randn(theta0.shape[0], dtype=f64, generator=_gen(5))
    # the module (fused addmm) against X @ W.T + b: equal up to the rounding bound
    bound = rounding_bound(unflatten_params(shifted, widths), X).reshape(-1)
    assert bool(((f(shifted, X).reshape(-1) - stacked_outputs(shifted, widths, X)).abs() <= bound).all())
    # the Jacobian through torch.func against central differences
    J = torch.func.jacrev(lambda t: stacked_outputs(t, widths, X))(theta0)
    assert J.shape == (10, num_parameters(widths))
    v = torch.randn(theta0.shape[0], dtype=f64, generator=_gen(6))
    eps = 1e-6
    fd = (stacked_outputs(theta0 + eps * v, widths, X) - stacked_outputs(theta0 - eps * v, widths, X)) / (2 * eps)
    assert float((J @ v - fd).abs().max()) < 1e-7


def test_network_bad_widths():
    with pytest.raises(ParameterError, match=r"ReLUNet: widths must list at least input and output sizes, got \[3\]"):
        ReLUNet([3])
    with pytest.raises(ParameterError, match=r"ReLUNet: widths\[1\] must be int in \[1, inf\), got 0"):
        ReLUNet([3, 0, 2])
    with pytest.raises(ParameterError, match=r"from_layers: need at least one"):
        from_layers([])
    with pytest.raises(ShapeError, match=r"from_layers: layer 2 has W \(2, 5\)"):
        from_layers([(torch.ones(4, 3), torch.ones(4)), (torch.ones(2, 5), torch.ones(2))])


# -- costs -----------------------------------------------------------------------------


def test_weighted_l2_and_mean_l2_by_hand():
    outputs = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 1.0]], dtype=f64)
    labels = torch.tensor([0, 0, 1])
    # Y = identity: residuals (0,0), (-1,0) in class 0 (N_0 = 2); (3,0) in class 1 (N_1 = 1)
    assert float(weighted_l2(outputs, labels)) == pytest.approx((0 + 1) / 2 + 9 / 1, abs=1e-15)
    assert float(mean_l2(outputs, labels)) == pytest.approx((0 + 1 + 9) / (2 * 3), abs=1e-15)
    Y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=f64)
    # residuals (1,-1), (0,-1) | (2, 0)
    assert float(weighted_l2(outputs, labels, Y)) == pytest.approx((2 + 1) / 2 + 4, abs=1e-15)
    assert float(mean_l2(outputs, labels, Y)) == pytest.approx((2 + 1 + 4) / 6, abs=1e-15)
    assert float(mean_l2(outputs, Y[labels])) == pytest.approx(7 / 6, abs=1e-15)
    assert COSTS["weighted_l2"] is weighted_l2 and COSTS["mean_l2"] is mean_l2


def test_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], dtype=f64)
    labels = torch.tensor([0, 2])
    z0 = math.log(math.exp(2.0) + 1 + math.exp(-1.0))
    expected = ((z0 - 2.0) + math.log(3.0)) / 2
    # exp and log within an ulp or two each (libm, or ATen's vectorised kernels), summed over
    # terms of size <= z0 + 2 + log 3: 8 eps times that
    eps = torch.finfo(f64).eps
    assert float(cross_entropy(logits, labels)) == pytest.approx(expected, rel=0, abs=8 * eps * (z0 + 2.0 + math.log(3.0)))
    assert torch.equal(cross_entropy(logits, labels), F.cross_entropy(logits, labels))


def _split_by_loop(outputs, labels, Y):
    within = mismatch = 0.0
    for j in range(Y.shape[0]):
        members = [outputs[i] for i in range(outputs.shape[0]) if int(labels[i]) == j]
        if not members:
            continue
        mean = sum(members) / len(members)
        within += sum(float(((x - mean) ** 2).sum()) for x in members) / len(members)
        mismatch += float(((mean - Y[j]) ** 2).sum())
    return within, mismatch


@pytest.mark.parametrize("seed, counts", [(0, [3, 3, 3]), (1, [1, 7, 2, 5]), (2, [10, 1])])
def test_l2_split_exact(seed, counts):
    g = _gen(seed)
    q = len(counts)
    labels = torch.repeat_interleave(torch.arange(q), torch.tensor(counts))
    labels = labels[torch.randperm(labels.shape[0], generator=g)]
    outputs = 5 * torch.randn(labels.shape[0], q, dtype=f64, generator=g) + 3
    Y = torch.randn(q, q, dtype=f64, generator=g)
    split = l2_split(outputs, labels, Y)
    within, mismatch = _split_by_loop(outputs, labels, Y)
    assert float(split.within) == pytest.approx(within, rel=1e-12, abs=1e-12)
    assert float(split.mismatch) == pytest.approx(mismatch, rel=1e-12, abs=1e-12)
    total = float(weighted_l2(outputs, labels, Y))
    assert abs(float(split.total) - total) <= 1e-12 * max(1.0, total)


def test_costs_reject_bad_shapes():
    out = torch.zeros(3, 2, dtype=f64)
    with pytest.raises(ShapeError, match=r"weighted_l2: outputs must be \(N, Q\), got shape \(3,\)"):
        weighted_l2(torch.zeros(3, dtype=f64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ShapeError, match=r"weighted_l2: labels must have shape \(3,\), got \(2,\)"):
        weighted_l2(out, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ShapeError, match=r"l2_split: Y must be \(Q, 2\), got \(2, 3\)"):
        l2_split(out, torch.zeros(3, dtype=torch.int64), torch.zeros(2, 3, dtype=f64))
    with pytest.raises(ShapeError, match=r"mean_l2: targets must have the shape of outputs \(3, 2\), got \(3, 3\)"):
        mean_l2(out, torch.zeros(3, 3, dtype=f64))
