"""Property tests of the measurement boundary (``collapse_report``, ``nc1``): random shapes,
dtypes (float16/32/64, integers, bool), NaN/Inf, empty, single-class and out-of-range inputs
give either a correct report or a :class:`CollapseLabError`, never another exception."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collapselab.collapse import collapse_report, nc1
from collapselab.core.errors import CollapseLabError

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_]


def _elements(dtype):
    if np.issubdtype(dtype, np.floating):
        return st.floats(width=np.finfo(dtype).bits, allow_nan=True, allow_infinity=True)
    return None  # hypothesis' default for the integer and bool dtypes


@st.composite
def well_formed(draw):
    """Float features (any float dtype, moderate or huge finite values), int labels, C >= 2."""
    C, d = draw(st.integers(2, 4)), draw(st.integers(1, 4))
    N = draw(st.integers(C, 12))
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64, np.int64]))
    big = np.finfo(dtype).max / 4 if np.issubdtype(dtype, np.floating) else 1e6
    elements = st.floats(-big, big, width=np.finfo(dtype).bits) if np.issubdtype(dtype, np.floating) else st.integers(-10**6, 10**6)
    H = draw(hnp.arrays(dtype, (N, d), elements=elements))
    labels = np.concatenate([np.arange(C), draw(hnp.arrays(np.int64, (N - C,), elements=st.integers(0, C - 1)))])
    W = draw(st.none() | hnp.arrays(np.float64, (C, d), elements=st.floats(-10, 10)))
    return H, labels, W


@st.composite
def malformed(draw):
    """Anything near the contract: wrong ndim or lengths, empty, one class, NaN/Inf, ints,
    bool, fractional or negative labels, a classifier of the wrong shape."""
    N, d = draw(st.integers(0, 12)), draw(st.integers(0, 4))
    dtype = draw(st.sampled_from(DTYPES))
    H = draw(hnp.arrays(dtype, draw(st.sampled_from([(N, d)] * 4 + [(N,), (N, d, 2)])), elements=_elements(dtype)))
    label_dtype = draw(st.sampled_from([np.int64, np.int32, np.float64, np.bool_]))
    label_values = {np.float64: st.floats(-1, 3) | st.just(np.nan) | st.integers(0, 3).map(float), np.bool_: st.booleans()}
    n_labels = draw(st.sampled_from([N] * 4 + [N + 1, max(N - 1, 0)]))
    labels = draw(hnp.arrays(label_dtype, (n_labels,), elements=label_values.get(label_dtype, st.integers(-1, 3))))
    W = None
    if draw(st.booleans()):
        C = draw(st.sampled_from([len(np.unique(labels))] * 2 + [0, 5]))
        W = draw(hnp.arrays(np.float64, (C, draw(st.sampled_from([d, d, d + 1]))), elements=st.floats(-10, 10)))
    return H, labels, W


def problems():
    """(features, labels, weights or None), half of them within the contract."""
    return well_formed() | malformed()


def _check_report(rep, H, labels, W):
    """What any returned report must satisfy, computed independently with numpy."""
    X = np.asarray(H, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    classes = np.unique(y)
    assert rep.num_samples == X.shape[0] and rep.dim == X.shape[1]
    assert rep.num_classes >= 2 and rep.counts == [int((y == c).sum()) for c in rep.classes]
    assert set(rep.classes) >= set(classes.tolist())
    eps = np.finfo(np.float64).eps
    for k, c in enumerate(rep.classes):
        rows = X[y == c]
        if len(rows):  # a mean of n numbers in any order: within 2 n eps mean|x|
            bound = 2 * len(rows) * eps * np.abs(rows).mean(0)
            assert (np.abs(rep.means[k].numpy() - rows.mean(0)) <= bound).all()
    for k in ("accuracy", "ncc_accuracy", "nc4"):
        v = getattr(rep, k)
        assert v is None or 0.0 <= v <= 1.0, k
    assert 0 <= rep.rank <= min(rep.num_classes - 1, rep.dim)
    assert (W is None) == (rep.nc3 is None)


@given(problems())
def test_collapse_report_returns_a_correct_report_or_a_collapselab_error(problem):
    H, labels, W = problem
    try:
        rep = collapse_report(H, labels, W)
    except CollapseLabError as exc:
        event(type(exc).__name__)
        return
    event("report")
    _check_report(rep, H, labels, W)


@given(problems())
def test_nc1_returns_a_number_or_a_collapselab_error(problem):
    H, labels, _ = problem
    try:
        value = nc1(H, labels)
    except CollapseLabError as exc:
        event(type(exc).__name__)
        return
    event("value")
    assert isinstance(value, float)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_the_entry(bad):
    H = np.arange(12, dtype=np.float64).reshape(6, 2)
    H[4, 1] = bad
    with pytest.raises(CollapseLabError, match=r"index \(4, 1\)"):
        collapse_report(H, [0, 1, 0, 1, 0, 1])
