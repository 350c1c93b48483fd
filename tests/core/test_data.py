"""check_data refuses bad input by message; the generators have the structure they promise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from collapselab.core.data import (
    ClassificationData,
    check_data,
    etf_features,
    gaussian_clusters,
    sequentially_separable,
    simplex_etf,
)
from collapselab.core.errors import EmptyClassError, LabelError, NonFiniteError, ParameterError, ShapeError

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _X(n: int = 5, m: int = 3) -> np.ndarray:
    return np.arange(n * m, dtype=np.float64).reshape(n, m)


# -- check_data: bad input, matched by message ------------------------------------------


@pytest.mark.parametrize(
    "X, labels, error, message",
    [
        (np.ones(5), [0, 1, 0, 1, 1], ShapeError, r"check_data: X must be 2-D of shape \(N, M\), got shape \(5,\) \(reshape a single feature to \(N, 1\)\)"),
        (np.ones((2, 2, 2)), [0, 1], ShapeError, r"X must be 2-D of shape \(N, M\), got shape \(2, 2, 2\)$"),
        (np.ones((0, 3)), [], ShapeError, r"X must have at least one sample and one feature, got shape \(0, 3\)"),
        (np.ones((3, 0)), [0, 1, 0], ShapeError, r"X must have at least one sample and one feature, got shape \(3, 0\)"),
        (_X(), [0, 1, 0, 1], ShapeError, r"labels has length 4 but there are 5 samples"),
        (_X(), [[0, 1, 0, 1, 1]], ShapeError, r"labels must be 1-D of length N, got shape \(1, 5\)"),
        (_X(), [0, 1, -1, 1, 0], LabelError, r"labels must be integers in \[0, 2\), found -1"),
        (_X(), [0, 1, 0.5, 1, 0], LabelError, r"labels must be integers, got non-integral values such as 0.5"),
        (_X(), ["a", "b", "a", "b", "a"], LabelError, r"labels must be integers, got dtype <U1"),
        (_X(), [True, False, True, False, True], LabelError, r"labels must be integers, got booleans"),
        (_X(), [0, 2, 0, 2, 2], EmptyClassError, r"classes must be 0..2 with every class present, but class 1 has no samples \(label values \{0, 2\}\); remap them to 0..C-1 .*, or add samples of class 1"),
        (_X(), [0.0, 1.0, float("nan"), 1.0, 0.0], NonFiniteError, r"labels has 1 non-finite entry, first NaN at index \(2,\)"),
    ],
)
def test_check_data_rejects(X, labels, error, message):
    with pytest.raises(error, match=message):
        check_data(X, labels)


def test_check_data_rejects_nonfinite_X():
    X = _X()
    X[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"check_data: X has 1 non-finite entry, first NaN at index \(3, 2\); remove or impute them"):
        check_data(X, [0, 1, 0, 1, 1])
    X[3, 2] = 1.0
    X[1, 0] = X[4, 1] = -np.inf
    with pytest.raises(NonFiniteError, match=r"X has 2 non-finite entries, first Inf at index \(1, 0\)"):
        check_data(torch.from_numpy(X), torch.tensor([0, 1, 0, 1, 1]))


def test_check_data_num_classes_and_Y():
    with pytest.raises(LabelError, match=r"labels must be integers in \[0, 2\)( \(C = 2 classes given\))?, found 2"):
        check_data(_X(), [0, 1, 2, 1, 0], num_classes=2)
    with pytest.raises(LabelError, match=r"labels must be integers in \[0, 2\)( \(C = 2 classes given\))?, found 2"):
        check_data(_X(), [0, 1, 2, 1, 0], Y=np.eye(2))  # Y fixes Q
    with pytest.raises(EmptyClassError, match=r"classes must be 0..3 with every class present, but class 3 has no samples"):
        check_data(_X(), [0, 1, 2, 1, 0], Y=np.eye(4))
    with pytest.raises(ShapeError, match=r"Y must be 2-D, got shape \(2,\)"):
        check_data(_X(), [0, 1, 0, 1, 0], Y=np.ones(2))
    with pytest.raises(NonFiniteError, match=r"Y has 1 non-finite entry"):
        check_data(_X(), [0, 1, 0, 1, 0], Y=np.array([[1.0, np.inf], [0.0, 1.0]]))


def test_check_data_where_names_the_caller():
    with pytest.raises(ShapeError, match=r"^my_fn: X must be 2-D"):
        check_data(np.ones(3), [0, 1, 0], where="my_fn")


def test_check_data_normalises():
    data = check_data(_X().astype(np.float32), np.array([1, 0, 2, 1.0, 0]))
    assert isinstance(data, ClassificationData)
    assert data.X.dtype == torch.float64 and data.labels.dtype == torch.int64
    assert torch.equal(data.Y, torch.eye(3, dtype=torch.float64))
    assert (data.num_samples, data.dim, data.num_classes) == (5, 3, 3)
    single = check_data(_X(), [0, 0, 0, 0, 0], dtype=torch.float32)
    assert single.X.dtype == torch.float32 and single.num_classes == 1


def test_container_statistics_against_loops():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 4))
    labels = np.array([2, 0, 1, 2, 2, 0, 1, 2, 0])
    Y = rng.standard_normal((3, 3))
    data = check_data(X, labels, Y)
    assert data.class_counts.tolist() == [3, 2, 4]
    for j in range(3):
        members = [i for i in range(9) if labels[i] == j]
        assert data.class_indices[j].tolist() == members
        # a mean of n <= 4 numbers in two summation orders: within 2 n eps mean|x| of each other
        bound = 2 * len(members) * np.finfo(np.float64).eps * np.abs(X[members]).mean(0)
        assert (np.abs(data.class_means[j].numpy() - X[members].mean(0)) <= bound).all()
    assert np.array_equal(data.targets.numpy(), Y[labels])
    sub = data.subset([0, 1, 2])
    assert sub.labels.tolist() == [2, 0, 1] and torch.equal(sub.Y, data.Y)
    with pytest.raises(EmptyClassError, match=r"ClassificationData.subset: classes must be 0..2 with every class present, but class 1 has no samples"):
        data.subset([0, 1])
    f32 = data.to(dtype=torch.float32)
    assert f32.X.dtype == torch.float32 and f32.labels.dtype == torch.int64
    arrays = data.to_numpy()
    assert set(arrays) == {"X", "labels", "Y"} and np.array_equal(arrays["X"], X)


# -- generators ------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, 0.05, 0.3])
def test_gaussian_clusters_within_delta_of_generating_means(delta):
    # with jitter = 0 and M = Q the generating means are separation * e_j, known exactly
    q, sep = 4, 2.0
    data = gaussian_clusters(q, [5, 7, 6, 8], delta=delta, separation=sep, jitter=0.0, seed=3)
    assert tuple(data.X.shape) == (26, 4) and data.class_counts.tolist() == [5, 7, 6, 8]
    means = sep * torch.eye(q, dtype=torch.float64)
    dist = (data.X - means[data.labels]).norm(dim=1)
    assert float(dist.max()) <= delta + 1e-15
    if delta > 0:
        assert float(dist.max()) > 0.3 * delta  # the points fill the ball, not a speck


def test_gaussian_clusters_in_higher_dimension():
    q, m, delta = 3, 7, 0.1
    data = gaussian_clusters(q, 20, dim=m, delta=delta, separation=1.5, jitter=0.0, seed=1)
    assert tuple(data.X.shape) == (60, 7)
    # generating means are 1.5 * (orthonormal vectors): each class lies in a 2*delta ball, and
    # the class means are within delta of an orthogonal frame of length 1.5
    for idx in data.class_indices:
        pts = data.X[idx]
        assert float(torch.cdist(pts, pts).max()) <= 2 * delta + 1e-12
    gram = data.class_means @ data.class_means.T
    assert float((gram - 1.5**2 * torch.eye(q, dtype=torch.float64)).abs().max()) <= 2 * 1.5 * delta + delta**2


def test_gaussian_clusters_parameters():
    with pytest.raises(ParameterError, match=r"gaussian_clusters: delta must be float in \[0, inf\), got -0.1"):
        gaussian_clusters(3, 4, delta=-0.1)
    with pytest.raises(ParameterError, match=r"per_class lists 2 counts for 3 classes"):
        gaussian_clusters(3, [4, 4])
    with pytest.raises(ParameterError, match=r"dim must be int in \[3, inf\), got 2"):
        gaussian_clusters(3, 4, dim=2)
    a, b = gaussian_clusters(3, 4, seed=5), gaussian_clusters(3, 4, seed=5)
    assert torch.equal(a.X, b.X) and torch.equal(a.labels, b.labels)


def _linearly_separable(A: np.ndarray, B: np.ndarray) -> bool:
    """Feasibility LP: some (w, c) with w.a + c >= 1 on A and <= -1 on B."""
    m = A.shape[1]
    rows = np.vstack([-np.hstack([A, np.ones((len(A), 1))]), np.hstack([B, np.ones((len(B), 1))])])
    res = linprog(np.zeros(m + 1), A_ub=rows, b_ub=-np.ones(len(rows)), bounds=[(None, None)] * (m + 1), method="highs")
    return res.status == 0


def test_sequentially_separable_is_one_versus_rest_separable():
    data = sequentially_separable(3, 5, 12, seed=2)
    assert tuple(data.X.shape) == (36, 5) and data.class_counts.tolist() == [12, 12, 12]
    X, labels = data.X.numpy(), data.labels.numpy()
    # every class separable from all others implies sequential separability in every order (CE24 Def 5.1)
    for j in range(3):
        assert _linearly_separable(X[labels == j], X[labels != j])
    # and the LP does detect non-separable sets (a point inside the other set's hull)
    assert not _linearly_separable(X[labels == 0][:1], np.vstack([X[labels == 0][:1] + 0.1, X[labels == 0][:1] - 0.1]))


@pytest.mark.parametrize("q, d, seed", [(2, 1, None), (3, 2, None), (4, 4, None), (5, 9, 7), (10, 12, 0)])
def test_simplex_etf_gram(q, d, seed):
    M = simplex_etf(q, d, seed=seed)
    assert tuple(M.shape) == (q, d) and M.dtype == torch.float64
    expected = (q / (q - 1)) * (torch.eye(q, dtype=torch.float64) - torch.ones(q, q, dtype=torch.float64) / q)
    assert float((M @ M.T - expected).abs().max()) < 1e-12
    assert float((M.sum(0)).abs().max()) < 1e-12  # centred: the rows sum to zero


def test_simplex_etf_rejects_small_dimension():
    with pytest.raises(ParameterError, match=r"simplex_etf: dim must be int in \[3, inf\), got 2"):
        simplex_etf(4, 2)
    with pytest.raises(ParameterError, match=r"num_classes must be int in \[2, inf\), got 1"):
        simplex_etf(1)


def test_etf_features_exact_and_noisy():
    data, M = etf_features(4, 6, [3, 5, 2, 4], sigma=0.0, scale=2.5, seed=1)
    assert tuple(data.X.shape) == (14, 6) and data.class_counts.tolist() == [3, 5, 2, 4]
    assert float((data.X - 2.5 * simplex_etf(4, 6, seed=1)[data.labels]).abs().max()) == 0.0
    assert torch.equal(M, 2.5 * simplex_etf(4, 6, seed=1))
    assert float((data.class_means - M).abs().max()) < 1e-14
    sigma = 0.3
    noisy, M2 = etf_features(3, 5, 400, sigma=sigma, seed=2)
    resid = noisy.X - M2[noisy.labels]
    # per-coordinate standard deviation of 6000 normal draws: sigma within a few percent
    assert abs(float(resid.std()) / sigma - 1.0) < 0.05
    assert float(resid.mean().abs()) < 4 * sigma / math.sqrt(resid.numel())
