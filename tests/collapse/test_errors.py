"""Bad input: each error says what was found and what to do (matched by message)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collapselab.collapse import CollapseStatistics, cdnv, collapse_report, mse_decomposition, nc1, nc3
from collapselab.core.errors import EmptyClassError, LabelError, NonFiniteError, ParameterError, ShapeError


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    H = rng.standard_normal((40, 5)) + 3 * np.eye(5)[y]
    return H, y, rng.standard_normal((4, 5)), rng.standard_normal(4)


def test_non_finite_features(data):
    H, y, W, b = data
    H[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"features has 1 non-finite entry, first NaN at index \(3, 2\)"):
        nc1(H, y)
    H[3, 2] = np.inf
    with pytest.raises(NonFiniteError, match="first Inf"):
        CollapseStatistics(4).update(torch.from_numpy(H).float(), y)


def test_empty_class(data):
    H, y, W, b = data
    with pytest.raises(EmptyClassError, match=r"nc1: class 4 of C=6 has no samples \(2 empty classes\)"):
        nc1(H, y, num_classes=6)
    with pytest.raises(EmptyClassError, match="class 2 of C=4 has no samples"):
        collapse_report(H[y != 2], y[y != 2], W, b)  # labels index the classifier's 4 rows
    st = CollapseStatistics(4).update(H[y < 3], y[y < 3])
    with pytest.raises(EmptyClassError, match="class 3 of C=4 has no samples"):
        st.report()


def test_mismatched_lengths_and_dimensions(data):
    H, y, W, b = data
    with pytest.raises(ShapeError, match="labels has length 39 but features has 40 rows"):
        nc1(H, y[:-1])
    with pytest.raises(ShapeError, match="labels has length 39 but features has 40 rows"):
        CollapseStatistics(4).update(H, y[:-1])
    st = CollapseStatistics(4).update(H, y)
    with pytest.raises(ShapeError, match="features have 3 columns but earlier batches had 5"):
        st.update(H[:, :3], y)


def test_one_dimensional_features(data):
    H, y, W, b = data
    with pytest.raises(ShapeError, match=r"features must be 2-D of shape \(N, d\), got shape \(40,\); reshape a single feature to \(N, 1\)"):
        nc1(H[:, 0], y)


def test_wrong_classifier_shape(data):
    H, y, W, b = data
    with pytest.raises(ShapeError, match=r"weights must have shape \(4, 5\), got \(4, 3\)"):
        collapse_report(H, y, W[:, :3])
    with pytest.raises(ShapeError, match="labels contain 4 distinct classes but weights has 3 rows"):
        nc3(H, y + 10, W[:3])
    with pytest.raises(ShapeError, match=r"bias must have shape \(1, 4\), got \(1, 3\)"):
        collapse_report(H, y, W, b[:3])
    with pytest.raises(ParameterError, match="bias given without weights"):
        CollapseStatistics(4, bias=b)
    with pytest.raises(ShapeError, match=r"weights must have shape \(4, 5\)"):
        mse_decomposition(H, y, W[:, :4], weight_decay=0.1)


def test_bad_labels(data):
    H, y, W, b = data
    with pytest.raises(LabelError, match="labels must be integers, got non-integral values such as 0.5"):
        nc1(H, y + 0.5)
    with pytest.raises(LabelError, match=r"labels must lie in \[0, 3\), found 3"):
        nc1(H, y, num_classes=3)
    with pytest.raises(LabelError, match="labels contain a single class"):
        collapse_report(H, np.zeros(40, dtype=int))


def test_bad_parameters(data):
    H, y, W, b = data
    with pytest.raises(ParameterError, match="nc1: variant must be one of 'span', 'trace_ratio', got 'pinv'"):
        nc1(H, y, variant="pinv")
    with pytest.raises(ParameterError, match="cdnv: ddof must be one of 0, 1"):
        cdnv(H, y, ddof=2)
    with pytest.raises(ParameterError, match="global_mean must be one of 'unweighted', 'weighted'"):
        collapse_report(H, y, global_mean="sample")
    with pytest.raises(ShapeError, match="no samples yet"):
        CollapseStatistics(4).report()
    with pytest.raises(ParameterError, match="covariance=False"):
        CollapseStatistics(4, covariance=False).update(H, y).moments()
    with pytest.raises(ParameterError, match="built without a classifier"):
        CollapseStatistics(4).update(H, y, weights=W)


def test_non_finite_entry_is_located_in_the_whole_array():
    rng = np.random.default_rng(1)
    y = np.arange(20000) % 3
    H = rng.standard_normal((20000, 2)) + y[:, None]
    H[17000, 1] = -np.inf
    with pytest.raises(NonFiniteError, match=r"collapse_report: features has 1 non-finite entry, first Inf at index \(17000, 1\)"):
        collapse_report(H, y)
