"""CE24 Thm 5.2 and Prop 4.1 (docs/theory/minimizers.md) and the max-margin LP."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from collapselab.construct import construct_clustered_wide, construct_sequential, max_margin_hyperplane
from collapselab.construct._cones import check_sectors
from collapselab.core.data import gaussian_clusters, sequentially_separable
from collapselab.core.errors import AssumptionError, ParameterError


def _ce24_cost(result, X: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(0.5 * ((result.module(X) - Y[labels]) ** 2).sum())


def test_t8_needles_in_r5() -> None:
    data = sequentially_separable(3, 5, 25, seed=0)
    result = construct_sequential(data.X, data.labels)
    assert result.cost < 1e-20
    assert _ce24_cost(result, data.X, data.labels, data.Y) < 1e-20
    P = torch.stack([layer.collapse_point for layer in result.layers])
    assert int(torch.linalg.matrix_rank(P)) == 3
    assert [tuple(lay.weight.shape) for lay in result.module.layers] == [(5, 5)] * 3 + [(3, 5)]
    assert result.descriptive_parameters == 21
    assert result.num_parameters == 3 * (25 + 5) + 3 * 5 + 3
    means = data.class_means
    bary = means.mean(0)
    for layer in result.layers:  # p_l on the open segment (x̄_l, x̄) at position mu_l (Thm 5.2)
        j = layer.collapses_class
        assert 0 < layer.mu < 1
        assert torch.allclose(layer.collapse_point, means[j] + layer.mu * (bary - means[j]), atol=1e-13)
        assert 0 < layer.cone_angle < np.pi


def _hull_data() -> tuple[np.ndarray, np.ndarray]:
    """Class 0 lies inside the convex hull of class 1 (a ring around it); class 2 far away."""
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.stack([np.full_like(t, 4.0), np.cos(t), np.sin(t), np.full_like(t, 0.5)], axis=1)
    inner = np.array([4.0, 0.3, 0.0, 0.5]) + 0.1 * np.array([[0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, -1, 0.0]])
    far = np.array([0.0, 0.0, 0.0, 5.0]) + 0.05 * np.eye(4)
    X = np.concatenate([inner, ring, far])
    labels = np.repeat([0, 1, 2], [len(inner), len(ring), len(far)])
    return X, labels


@pytest.mark.parametrize("search", ["exhaustive", "greedy"])
def test_t9_class_in_the_hull_of_another_is_rejected(search: str) -> None:
    X, labels = _hull_data()
    match = r"(not sequentially linearly separable in any|greedy search found no class separable) .*class [01] cannot be separated from class [01] by any hyperplane \(pair \((0, 1|1, 0)\)\)"
    with pytest.raises(AssumptionError, match=match):
        construct_sequential(X, labels, search=search)


def test_t9_every_order_fails() -> None:
    X, labels = _hull_data()
    for order in ([0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [0, 2, 1], [1, 2, 0]):
        with pytest.raises(AssumptionError, match=re.escape(f"in the order {order}")):
            construct_sequential(X, labels, order=order)


def test_t10_prop41_constant_width() -> None:
    data = gaussian_clusters(3, 10, dim=5, delta=0.02, seed=3)
    result = construct_clustered_wide(data.X, data.labels)
    delta = float((data.X - data.class_means[data.labels]).norm(dim=1).max())
    assert [layer.mu for layer in result.layers] == pytest.approx([2.5 * delta] * 3)
    assert result.cost < 1e-20
    assert _ce24_cost(result, data.X, data.labels, data.Y) < 1e-20
    assert [tuple(lay.weight.shape) for lay in result.module.layers] == [(5, 5)] * 3 + [(3, 5)]
    with pytest.raises(ParameterError, match=r"mu\[0\] = .* must lie in \(2 delta, 3 delta\)"):
        construct_clustered_wide(data.X, data.labels, mu=1.5 * delta)
    with pytest.raises(ParameterError, match="theta must lie in"):
        construct_clustered_wide(data.X, data.labels, theta=1.0)
    with pytest.raises(ParameterError, match=r"construct_clustered_wide: mu must be a number or 3 numbers \(one per class\), got 2"):
        construct_clustered_wide(data.X, data.labels, mu=[2.5 * delta] * 2)
    with pytest.raises(ParameterError, match=r"construct_clustered_wide: mu must be a number or 3 numbers \(one per class\), got 'big'"):
        construct_clustered_wide(data.X, data.labels, mu="big")  # used to raise a bare ValueError


def test_given_order_and_greedy_search() -> None:
    data = sequentially_separable(4, 5, 12, seed=4)
    for kwargs in ({"order": [3, 1, 0, 2]}, {"search": "greedy"}, {"search": "exhaustive"}):
        result = construct_sequential(data.X, data.labels, **kwargs)
        assert result.cost < 1e-20 and _ce24_cost(result, data.X, data.labels, data.Y) < 1e-20
        if "order" in kwargs:
            assert list(result.order) == kwargs["order"]
    with pytest.raises(ParameterError, match="order must be a permutation of 0..3"):
        construct_sequential(data.X, data.labels, order=[0, 1, 1, 2])
    with pytest.raises(ParameterError, match=r"order must be a permutation of 0..3, got \['a'"):
        construct_sequential(data.X, data.labels, order=["a", "b", "c", "d"])  # used to raise a bare ValueError
    with pytest.raises(ParameterError, match="search must be one of"):
        construct_sequential(data.X, data.labels, search="random")


def test_dependent_means_rejected() -> None:
    X = np.array([[1.0, 0, 0], [1.1, 0, 0], [0, 1.0, 0], [0, 1.1, 0], [1.0, 1.0, 0], [1.1, 1.1, 0]])
    with pytest.raises(AssumptionError, match=r"linearly dependent.*CE24 Thm 5.2"):
        construct_sequential(X, np.repeat([0, 1, 2], 2))


def _full_lp_gamma(A: np.ndarray, B: np.ndarray) -> float:
    """The max-margin LP on all points at once (no cutting planes), in the same normalisation."""
    shift = 0.5 * (A.mean(0) + B.mean(0))
    scale = max(np.abs(A - shift).max(), np.abs(B - shift).max())
    A, B = (A - shift) / scale, (B - shift) / scale
    m = A.shape[1]
    A_ub = np.vstack([np.hstack([A, -np.ones((len(A), 1)), np.ones((len(A), 1))]), np.hstack([-B, np.ones((len(B), 1)), np.ones((len(B), 1))])])
    c = np.zeros(m + 2)
    c[-1] = -1
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(len(A_ub)), bounds=[(-1, 1)] * m + [(None, None)] * 2, method="highs")
    return float(res.x[-1]), res.x, shift, scale


def test_max_margin_hyperplane_simple_and_cutting_planes() -> None:
    neg = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    pos = torch.tensor([[2.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    h, c, margin = max_margin_hyperplane(neg, pos)
    assert torch.allclose(h, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert c == pytest.approx(1.0, abs=1e-9) and margin == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, (3000, 4))
    B = rng.uniform(-1, 1, (2500, 4)) + np.array([2.5, 1.0, 0.0, 0.0])
    h, c, margin = max_margin_hyperplane(torch.as_tensor(A), torch.as_tensor(B), batch=64)
    gamma, x, shift, scale = _full_lp_gamma(A, B)
    hn = x[:4] / scale
    cn = x[4] + hn @ shift
    full_margin = min((cn - A @ hn).min(), (B @ hn - cn).min()) / np.linalg.norm(hn)
    assert gamma > 0 and margin == pytest.approx(full_margin, rel=1e-7)
    _, _, overlap = max_margin_hyperplane(torch.as_tensor(A), torch.as_tensor(A[:10] + 0.01))
    assert overlap <= 0


def test_check_sectors_names_the_pair() -> None:
    data = gaussian_clusters(3, 6, delta=0.01, seed=5)
    result = construct_clustered_wide(data.X, data.labels)
    hidden = result.cumulative[:3]
    radii = (data.X - data.class_means[data.labels]).norm(dim=1)
    radii = torch.zeros(3, dtype=torch.float64).scatter_reduce(0, data.labels, radii, "amax")
    P = torch.stack([layer.collapse_point for layer in result.layers])
    kwargs = {"where": "test", "forward_condition": "FWD", "collapse_condition": "COL"}
    check_sectors(data, radii, hidden, [0, 1, 2], P, **kwargs)  # the true pattern passes
    with pytest.raises(AssumptionError, match=r"test: the data of class 0 leave the forward cone of hidden layer 1 \(which collapses class 1\).*FWD fails for the pair \(1, 0\)"):
        check_sectors(data, radii, hidden, [1, 0, 2], P, **kwargs)
    with pytest.raises(AssumptionError, match=r"test: hidden layer 1 does not collapse class 1.*COL fails for class 1"):
        check_sectors(data, radii, hidden, [0, 0, 2], P, **kwargs)
    with pytest.raises(AssumptionError, match=r"test: the data of class 0 leave the forward cone of hidden layer 1 \(which collapses no class\).*FWD fails for class 0;"):
        check_sectors(data, radii, hidden, [None, 1, 2], P, **kwargs)
    with pytest.raises(AssumptionError, match=r"test: the collapse point of class 0 leaves the forward cone of hidden layer 2.*FWD fails for the pair \(1, 0\)"):
        check_sectors(data, radii, hidden, [0, 1, 2], P - 5.0, **kwargs)
