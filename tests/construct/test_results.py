"""What a constructed network tells its user, and the float32 policy of the constructions.

float32 policy: every construction computes in float64 after an exact upcast of float32
inputs; ``dtype`` only sets the returned network's dtype. So a float32 request gives the float64
construction's numbers (cost, collapse points) and its parameters rounded once (before, the
construction ran in float32: collapse points off by ~1e-8 and a cost that was not the
float32 network's). Intervals: ``delta``, the admissible ``theta`` and per-class ``mu`` intervals
are on the result, checked against a direct computation and against what the construction
accepts just inside and refuses just outside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapselab.construct import admissible_mu, cluster_geometry, construct, construct_clustered, construct_clustered_wide
from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import ParameterError

from .problems import PROBLEMS


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_float32_inputs_are_upcast_exactly_and_computed_in_float64(problem) -> None:
    X, labels, Y = problem.make()
    X32 = torch.as_tensor(X, dtype=torch.float32)
    Y32 = None if Y is None else torch.as_tensor(Y, dtype=torch.float32)
    exact = construct(problem.kind, X32.double(), labels, None if Y32 is None else Y32.double(), **problem.options)
    as32 = construct(problem.kind, X32, labels, Y32, dtype=torch.float32, **problem.options)
    default = construct(problem.kind, X32, labels, Y32, **problem.options)
    # the same float64 computation on the same numbers (the upcast of a float32 is exact)
    assert as32.cost == exact.cost == default.cost and as32.delta_P == exact.delta_P
    assert default.metric.dtype == torch.float64 and as32.metric.dtype == torch.float32
    for mine, ref in zip(as32.module.parameters(), exact.module.parameters()):
        assert mine.dtype == torch.float32 and torch.equal(mine, ref.to(torch.float32))  # rounded once
    for mine, ref in zip(as32.layers, exact.layers):
        if ref.collapse_point is not None:
            assert torch.equal(mine.collapse_point, ref.collapse_point.to(torch.float32))
    with pytest.raises(ParameterError, match="dtype must be torch.float64 or torch.float32"):
        construct(problem.kind, X32, labels, Y32, dtype=torch.float16, **problem.options)


def _direct_delta(X: torch.Tensor, labels: torch.Tensor) -> float:
    """``sup_{j,i} |x_{j,i} - x̄_j|`` by a loop over classes (CE23 (2.14))."""
    Xn, y = X.numpy(), labels.numpy()
    return max(float(np.linalg.norm(Xn[y == j] - Xn[y == j].mean(0), axis=1).max()) for j in np.unique(y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustered_result_carries_delta_and_the_admissible_intervals(seed) -> None:
    data = gaussian_clusters(3, 10, delta=0.02, seed=seed)
    result = construct_clustered(data.X, data.labels, keep=[2])
    delta = _direct_delta(data.X, data.labels)
    assert result.delta == pytest.approx(delta, rel=1e-13)  # float64 rounding of a few norms
    geom = cluster_geometry(data)
    assert result.theta_interval == (geom.theta_max, math.pi)
    theta = result.layers[0].cone_angle
    lo, D = admissible_mu(geom, theta, classes=[0, 1])
    assert lo == pytest.approx(2 * delta * math.sqrt(3), rel=1e-13)
    assert result.mu_intervals[:2] == ((-float(D[0]), -lo), (-float(D[1]), -lo)) and result.mu_intervals[2] == (lo, math.inf)
    for layer, (a, b) in zip(result.layers, result.mu_intervals):
        assert a < layer.mu < b
    # the intervals are the construction's own: just inside is built, just outside refused
    (a0, b0), (a1, b1), (a2, _) = result.mu_intervals
    inside = [a0 * (1 - 1e-6), b1 * (1 + 1e-6), a2 * (1 + 1e-6)]
    assert [layer.mu for layer in construct_clustered(data.X, data.labels, mu=inside, theta=theta).layers] == pytest.approx(inside)
    with pytest.raises(ParameterError, match=r"mu\[0\]"):
        construct_clustered(data.X, data.labels, mu=[a0 * (1 + 1e-6), inside[1], inside[2]], theta=theta)
    doc = result.as_dict()
    assert doc["delta"] == result.delta and doc["mu_intervals"][2] == [lo, None] and doc["theta_interval"] == list(result.theta_interval)


def test_clustered_wide_result_carries_its_prop41_intervals() -> None:
    data = gaussian_clusters(3, 10, dim=5, delta=0.02, seed=4)
    result = construct_clustered_wide(data.X, data.labels)
    d = _direct_delta(data.X, data.labels)
    assert result.delta == pytest.approx(d, rel=1e-13)
    for (a, b), layer in zip(result.mu_intervals, result.layers):
        assert (a, b) == pytest.approx((2 * result.delta, 3 * result.delta), rel=1e-15) and a < layer.mu < b
    assert result.theta_interval[1] == math.pi and result.theta_interval[0] >= math.pi / 2
