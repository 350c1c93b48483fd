"""CE23 Thm 2.3 and the local-minimum families (docs/theory/minimizers.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapselab.construct import admissible_mu, barycentric_lsq, cluster_geometry, construct_clustered
from collapselab.core.data import check_data, gaussian_clusters
from collapselab.core.errors import AssumptionError, ParameterError
from collapselab.core.geometry import cone_aperture
from collapselab.core.network import stacked_outputs, flatten_params

from .problems import two_axes

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _weighted_lstsq(T: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor, bias: bool = False) -> float:
    """min_W sum_j 1/N_j sum_i |W t - y_j|^2 by a direct weighted least squares (numpy), as a norm."""
    w = 1.0 / np.bincount(labels.numpy())[labels.numpy()]
    A = T.numpy()
    if bias:
        A = np.hstack([A, np.ones((len(A), 1))])
    sw = np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(A * sw, Y.numpy()[labels.numpy()] * sw, rcond=None)
    r = A @ sol - Y.numpy()[labels.numpy()]
    return float(np.sqrt((w * (r**2).sum(1)).sum()))


def test_t4_two_axes_collapse_points_from_the_formula() -> None:
    X, labels, _ = two_axes()
    result = construct_clustered(X, labels)
    # independent computation of docs/theory/minimizers.md step 3 with the documented mu rule:
    # x̄ = (1/2, 1/2), f_j = (x̄ - e_j)/|.|, delta = 0.05, D_j = |x̄ - e_j| = sqrt(2)/2 (the cone never binds:
    # the other mean lies on the axis), mu_j = -(2 delta sqrt(2) + sqrt(2)/2)/2, p_j = e_j - mu_j f_j.
    mu = -(2 * 0.05 * math.sqrt(2) + math.sqrt(2) / 2) / 2
    f = np.array([[-1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2)
    p = np.eye(2) - mu * f
    assert result.cost < 1e-12
    for j, layer in enumerate(result.layers):
        assert layer.collapses_class == j
        assert layer.mu == pytest.approx(mu, abs=1e-15)
        np.testing.assert_allclose(layer.collapse_point.numpy(), p[j], atol=1e-14)
    tau = result.truncate(torch.as_tensor(X))
    np.testing.assert_allclose(tau.numpy(), p[labels], atol=1e-14)
    with torch.no_grad():
        out = result.module(torch.as_tensor(X))
    assert float(((out - torch.eye(2)[labels]) ** 2).sum(1).mean()) < 1e-24


# theta_* on both sides of theta_Q; for Q = 4 the angles between mean differences exceed theta_4 / 2 already
@pytest.mark.parametrize(("q", "side"), [(2, "wide"), (2, "narrow"), (3, "wide"), (3, "narrow"), (4, "wide")])
@pytest.mark.parametrize("extra", [0, 2])
def test_t5_random_clusters(q: int, extra: int, side: str) -> None:
    data = gaussian_clusters(q, 8, delta=0.01, jitter=0.0 if side == "narrow" else 0.2, seed=q + extra)
    geom = cluster_geometry(data)
    theta_q = cone_aperture(q)
    theta = None if side == "wide" else (geom.theta_max + theta_q) / 2
    result = construct_clustered(data.X, data.labels, depth=q + extra, theta=theta)
    assert (result.layers[0].cone_angle > theta_q) == (side == "wide")
    if side == "narrow":  # lambda = 1: W_* = 1 and every cumulative hidden weight is a rotation
        W = result.cumulative[0][0]
        assert torch.allclose(W @ W.T, torch.eye(q, dtype=W.dtype), atol=1e-13)
    assert result.module.depth == q + extra
    with torch.no_grad():
        out = result.module(data.X)
    counts = data.class_counts.double()
    assert float((((out - data.Y[data.labels]) ** 2).sum(1) / counts[data.labels]).sum().sqrt()) < 1e-12
    # each cluster maps to x̄_j - mu_j f_j (computed here from the means)
    means = data.class_means
    bary = means.mean(0)
    f = (bary - means) / (bary - means).norm(dim=1, keepdim=True)
    mus = torch.tensor([layer.mu for layer in result.layers[:q]], dtype=torch.float64)
    tau = result.truncate(data.X)
    assert torch.allclose(tau, (means - mus[:, None] * f)[data.labels], atol=1e-12, rtol=0)
    # a fresh point in B_delta(x̄_j) is classified as j by the metric rule
    rng = np.random.default_rng(0)
    g = rng.standard_normal((50 * q, q))
    g *= (0.01 * rng.random(len(g)) ** (1 / q) / np.linalg.norm(g, axis=1))[:, None]
    fresh_labels = np.repeat(np.arange(q), 50)
    fresh = means.numpy()[fresh_labels] + g
    assert torch.equal(result.classify(fresh), torch.as_tensor(fresh_labels))


def test_t7_thm24_keeps_the_data_and_gives_the_lsq_value() -> None:
    data = gaussian_clusters(3, 10, delta=0.03, seed=6)
    result = construct_clustered(data.X, data.labels, keep=[0, 1, 2])
    assert all(layer.collapses_class is None for layer in result.layers)
    assert float((result.truncate(data.X) - data.X).abs().max()) < 1e-12  # tau(X_0) = X_0 (2.70)
    with torch.no_grad():
        out = result.module(data.X)
    measured = float((((out - data.Y[data.labels]) ** 2).sum(1) / data.class_counts.double()[data.labels]).sum().sqrt())
    formula = float(barycentric_lsq(data.X, data.labels, data.Y).value)  # with X_0^red (2.71)-(2.73)
    assert measured == pytest.approx(formula, rel=1e-10)
    assert measured == pytest.approx(_weighted_lstsq(data.X, data.labels, data.Y), rel=1e-10)
    assert measured > 1e-3  # a positive-cost (local) minimum, not a global one


def test_thm25_needs_the_truncated_reduced_matrix_erratum_e4() -> None:
    data = gaussian_clusters(3, 10, delta=0.03, seed=7)
    result = construct_clustered(data.X, data.labels, keep=[1])
    assert [layer.collapses_class for layer in result.layers] == [0, None, 2]
    tau = result.truncate(data.X)
    with torch.no_grad():
        out = result.module(data.X)
    measured = float((((out - data.Y[data.labels]) ** 2).sum(1) / data.class_counts.double()[data.labels]).sum().sqrt())
    assert measured == pytest.approx(_weighted_lstsq(tau, data.labels, data.Y), rel=1e-9)
    as_printed = float(barycentric_lsq(data.X[:, :], data.labels, data.Y).value)  # (2.81) with X_0^red
    assert abs(as_printed - measured) > 1e-4 * measured


@pytest.mark.parametrize("q", [2, 3])
def test_t24_jacobian_rank_is_q_squared(q: int) -> None:
    data = gaussian_clusters(q, 6, delta=0.02, seed=11)
    result = construct_clustered(data.X, data.labels)
    widths = result.module.widths
    theta = flatten_params(result.module).detach()
    D = torch.func.jacrev(stacked_outputs)(theta, widths, data.X)
    assert D.shape == (q * data.num_samples, theta.numel())
    assert int(torch.linalg.matrix_rank(D, rtol=1e-10)) == q * q


def test_mu_override_and_admissible_interval() -> None:
    data = gaussian_clusters(3, 8, delta=0.02, seed=12)
    geom = cluster_geometry(data)
    theta = (geom.theta_max + math.pi) / 2
    lo, D = admissible_mu(geom, theta)
    delta = float((data.X - data.class_means[data.labels]).norm(dim=1).max())
    assert lo == pytest.approx(2 * delta * math.sqrt(3), rel=1e-14)
    mu = [-(lo + float(D[0])) * 0.3, -lo * 1.1, -float(D[2]) * 0.99]
    result = construct_clustered(data.X, data.labels, mu=mu)
    assert [layer.mu for layer in result.layers] == pytest.approx(mu)
    assert result.cost < 1e-12
    with pytest.raises(ParameterError, match=r"mu\[1\] = .* is in neither admissible interval for class 1"):
        construct_clustered(data.X, data.labels, mu=[mu[0], -lo * 0.5, mu[2]])
    with pytest.raises(ParameterError, match=r"construct_clustered: mu must be a number or 3 numbers \(one per class\), got 4"):
        construct_clustered(data.X, data.labels, mu=[*mu, mu[0]])
    with pytest.raises(ParameterError, match="either mu .* or keep"):
        construct_clustered(data.X, data.labels, mu=mu, keep=[0])
    with pytest.raises(ParameterError, match=r"theta must lie in \(max_j theta_\*,j, pi\)"):
        construct_clustered(data.X, data.labels, theta=geom.theta_max * 0.9)
    with pytest.raises(ParameterError, match="depth must be int in"):
        construct_clustered(data.X, data.labels, depth=2)


def test_clusters_too_wide_name_the_class() -> None:
    data = gaussian_clusters(3, 10, delta=0.3, seed=0)
    with pytest.raises(AssumptionError, match=r"clusters too wide: delta = .*class \d.*\(CE23 \(2.14\)\)"):
        construct_clustered(data.X, data.labels)


def test_cone_condition_names_the_pair() -> None:
    # class 0 sits between classes 1 and 2, near class 1: seen from its mean, class 1 lies more than
    # 90 degrees away from the direction f_0 to the barycenter, so theta_*,0 > pi.
    means = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, -3.0, 0.3]])
    offsets = 0.01 * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    X = np.concatenate([m + offsets for m in means])
    labels = np.repeat([0, 1, 2], 4)
    with pytest.raises(AssumptionError, match=r"cone condition \(CE23 \(2.52\)\) fails for the pair \(0, 1\): theta_\*,0 = .* >= pi"):
        construct_clustered(X, labels)


def test_linearly_dependent_means_name_the_class() -> None:
    means = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    X = np.concatenate([m + 0.01 * np.array([[1, 0, 0], [-1, 0, 0]]) for m in means])
    labels = np.repeat([0, 1, 2], 2)
    with pytest.raises(AssumptionError, match=r"linearly dependent .* the mean of class \d is a combination of the means of classes"):
        construct_clustered(X, labels)


def test_empty_admissible_interval_names_the_class() -> None:
    # Q = 10, means e_j, delta = 0.2: (2.14) and (2.52) hold but the collapse distance 2 delta sqrt(Q)
    # pushes the apex so far that the delta-ball of class 1 leaves the cone
    q = 10
    offsets = 0.2 * np.concatenate([np.eye(q), -np.eye(q)])
    X = np.concatenate([m + offsets for m in np.eye(q)])
    labels = np.repeat(np.arange(q), 2 * q)
    geom = cluster_geometry(check_data(X, labels))
    assert geom.theta_max < math.pi
    with pytest.raises(AssumptionError, match=r"no admissible mu for class 0 \(CE23 \(4.26\)\): the collapse needs \|mu\| > 2 delta sqrt\(Q\).*\(pair \(0, 1\)\)"):
        construct_clustered(X, labels)
    # the local family of Thm 2.4 collapses nothing, so it does not need that interval
    kept = construct_clustered(X, labels, keep=list(range(q)))
    assert kept.cost == pytest.approx(_weighted_lstsq(torch.as_tensor(X), torch.as_tensor(labels), torch.eye(q, dtype=torch.float64)), rel=1e-9)


def test_wrong_input_dimension() -> None:
    data = gaussian_clusters(3, 5, dim=5, delta=0.01, seed=0)
    with pytest.raises(AssumptionError, match="inputs live in R\\^5 but CE23 Thm 2.3 needs M = Q = 3"):
        construct_clustered(data.X, data.labels)
    with pytest.raises(AssumptionError, match="at least Q = 2 classes"):
        construct_clustered(np.zeros((3, 1)) + np.arange(3)[:, None], np.zeros(3, dtype=int))
