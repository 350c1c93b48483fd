"""Shallow construction, delta_P and the barycentric least squares (docs/theory/minimizers.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapselab.construct import barycentric_lsq, barycentric_noise, construct_shallow, delta_p
from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import AssumptionError, EmptyClassError, LabelError, ParameterError, ShapeError, SingularError

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _direct_lsq(T: np.ndarray, labels: np.ndarray, Y: np.ndarray, bias: bool) -> float:
    """min over (W[, b]) of sum_j 1/N_j sum_i |W t + b - y_j|^2 by numpy's lstsq, as a norm."""
    w = 1.0 / np.bincount(labels)[labels]
    A = np.hstack([T, np.ones((len(T), 1))]) if bias else T
    sw = np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(A * sw, Y[labels] * sw, rcond=None)
    return float(np.sqrt((w * ((A @ sol - Y[labels]) ** 2).sum(1)).sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_t6_lsq_identity_and_the_bias_erratum_e5(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = 3
    labels = np.repeat(np.arange(q), [5, 7, 6])
    T = np.eye(q)[labels] + 0.3 * rng.standard_normal((len(labels), q))  # any T with invertible T^red
    Y = np.eye(q) + 0.5 * rng.standard_normal((q, q))
    res = barycentric_lsq(torch.as_tensor(T), torch.as_tensor(labels), torch.as_tensor(Y))
    no_bias = _direct_lsq(T, labels, Y, bias=False)
    assert float(res.value) == pytest.approx(no_bias, rel=1e-10)
    W = res.weight.numpy()
    w = 1.0 / np.bincount(labels)[labels]
    assert math.sqrt((w * ((T @ W.T - Y[labels]) ** 2).sum(1)).sum()) == pytest.approx(no_bias, rel=1e-10)
    assert _direct_lsq(T, labels, Y, bias=True) < no_bias * (1 - 1e-6)  # a free output bias does strictly better


def test_lsq_errors() -> None:
    T = torch.zeros(4, 2, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(SingularError, match="class-mean matrix T\\^red is singular"):
        barycentric_lsq(T, labels, torch.eye(2, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"T must be \(N, Q\) = \(N, 3\)"):
        barycentric_lsq(T, labels, torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize(("q", "m"), [(3, 3), (3, 6)])
def test_t11_shallow_cost_equals_the_barycentric_noise(q: int, m: int) -> None:
    data = gaussian_clusters(q, 15, dim=m, delta=0.1, seed=q + m)
    Y = torch.eye(q, dtype=torch.float64) + 0.2
    result = construct_shallow(data.X, data.labels, Y)
    # independent: barycentric coordinates by numpy lstsq of Δx against the means
    X, lab = data.X.numpy(), data.labels.numpy()
    means = np.stack([X[lab == j].mean(0) for j in range(q)])
    coords, *_ = np.linalg.lstsq(means.T, (X - means[lab]).T, rcond=None)  # (Q, N)
    w = 1.0 / np.bincount(lab)[lab]
    expected = math.sqrt((w * ((Y.numpy().T @ coords) ** 2).sum(0)).sum())
    with torch.no_grad():
        out = result.module(data.X)
    measured = float((((out - Y[data.labels]) ** 2).sum(1) * torch.as_tensor(w)).sum().sqrt())
    assert measured == pytest.approx(expected, abs=1e-12)
    assert result.cost == pytest.approx(expected, abs=1e-12)
    dp = float(np.linalg.norm(coords, axis=0).max())
    assert result.delta_P == pytest.approx(dp, rel=1e-12)
    assert delta_p(data.X, data.labels) == pytest.approx(dp, rel=1e-12)
    assert result.bound == pytest.approx(math.sqrt(q) * float(torch.linalg.matrix_norm(Y, ord=2)) * dp, rel=1e-12)
    assert result.cost <= result.bound
    assert [tuple(lay.weight.shape) for lay in result.module.layers] == [(m, m), (q, m)]
    assert result.descriptive_parameters == q * m + 1
    # the metric rule argmin_j |Y (X^red)^+ P (x - x̄_j)| agrees with the nearest output: two
    # computations of the same distances, equal decisions as the runner-up is far behind
    dist = torch.cdist(out, Y).topk(2, dim=1, largest=False).values
    assert float((dist[:, 1] - dist[:, 0]).min()) > 1e-6
    assert torch.equal(result.classify(data.X), torch.cdist(out, Y).argmin(1))


def test_t11_sharp_value_is_second_order_close_to_the_bound() -> None:
    ratios = []
    for scale in (0.08, 0.04, 0.02, 0.01):
        data = gaussian_clusters(3, 20, delta=scale, seed=5)
        result = construct_shallow(data.X, data.labels)
        sharp = float(barycentric_lsq(data.X, data.labels, data.Y).value)
        assert sharp <= result.cost
        ratios.append((1 - sharp / result.cost) / result.delta_P**2)
    assert all(0 < r < 1 for r in ratios)
    assert max(ratios) / min(ratios) < 3


def test_shallow_errors() -> None:
    data = gaussian_clusters(3, 5, delta=0.05, seed=0)
    with pytest.raises(ParameterError, match=r"beta must be a number > max_i \|x_i\|"):
        construct_shallow(data.X, data.labels, beta=0.1)
    X = np.array([[1.0, 0.0], [1.1, 0.0], [2.0, 0.0], [2.1, 0.0]])
    with pytest.raises(AssumptionError, match=r"linearly dependent .*class \d"):
        construct_shallow(X, np.array([0, 0, 1, 1]))
    with pytest.raises(AssumptionError, match=r"Q=3 class means in R\^2 cannot be linearly independent"):
        construct_shallow(np.eye(3)[:, :2], np.arange(3))


def test_barycentric_functions_check_their_inputs() -> None:
    # an empty class used to give NaN means and a raw torch error; bad labels an IndexError
    T = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(EmptyClassError, match=r"delta_p: classes must be 0..3 with every class present, but class 1 has no samples"):
        delta_p(T, torch.tensor([0, 0, 2, 2, 3, 3]))
    with pytest.raises(LabelError, match=r"barycentric_noise: labels must be integers in \[0, 3\)( \(C = 3 classes given\))?, found 5"):
        barycentric_noise(T, torch.tensor([0, 0, 1, 1, 2, 5]), 3)
    with pytest.raises(EmptyClassError, match=r"barycentric_lsq: classes must be 0..2 with every class present, but class 2 has no samples"):
        barycentric_lsq(T, torch.tensor([0, 0, 0, 1, 1, 1]), torch.eye(3, dtype=torch.float64))
    red, d1 = barycentric_noise(T.numpy(), [0, 0, 1, 1, 2, 2])  # array-likes are accepted
    means = T.reshape(3, 2, 3).mean(1)
    assert torch.allclose(red, means, atol=1e-15)
    assert torch.allclose(d1 @ means, T - means.repeat_interleave(2, 0), atol=1e-12)  # Δt_i = sum_k c_k t̄_k
