"""The fast paths of the streaming pass against independent computations: the block-triangular
Gram (several blocks, a partial last block) against numpy's x^T x, the vectorised first-index
rule against numpy's argmin/argmax on matrices full of ties, and exact ties in the nearest
class centre and the classifier decided as the float64 reference decides them.

Exact ties are tested only where every quantity that decides them is computed exactly (small
integers, no basis): the span path projects onto an orthonormal basis of the centred means,
irrational in general and, for equal singular values, any rotation a LAPACK build returns, so
there an exact tie is decided by rounding, as in any float computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collapselab.collapse import CollapseStatistics, collapse_report
from collapselab.collapse._accumulate import _GRAM_BLOCK, add_upper_gram, first_index, symmetric_gram

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


@pytest.mark.parametrize("d", [5, _GRAM_BLOCK, 2 * _GRAM_BLOCK + 44])
def test_block_triangular_gram_equals_the_full_product(d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((300, d)) + 10.0
    gram = torch.zeros(d, d, dtype=torch.float64)
    for part in np.array_split(x, 3):  # accumulated over batches, as update() does
        add_upper_gram(gram, torch.from_numpy(part))
    full = symmetric_gram(gram)
    assert torch.equal(full, full.T)
    # x > 0, so x^T x has no cancellation: two summation orders of n = 300 products differ by at
    # most 2 n eps relative (Higham 3.1), whatever the BLAS kernel
    assert (x > 0).all()
    np.testing.assert_allclose(full.numpy(), x.T @ x, rtol=2 * x.shape[0] * np.finfo(np.float64).eps, atol=0)


@pytest.mark.parametrize("C", [1, 3, 40])
def test_first_index_is_the_first_argmin_and_argmax_under_ties(C):
    rng = np.random.default_rng(C)
    z = rng.integers(0, 3, (C, 500)).astype(np.float64)  # three values: most columns tie
    t = torch.from_numpy(z)
    np.testing.assert_array_equal(first_index(t, t.amin(0)).numpy(), np.argmin(z, axis=0))
    np.testing.assert_array_equal(first_index(t, t.amax(0)).numpy(), np.argmax(z, axis=0))


def tied_problem():
    """Four classes with exactly representable means (0,0), (4,0), (0,4), (4,4) (global mean
    (2,2)); the class-3 sample (2,0) is equally far from the means of classes 0 and 1, and the
    class-1 sample (0,0) has four equal logits. First index wins every tie (numpy's rule).
    Every distance and logit is a small integer, exact on any CPU."""
    H = np.array([[-1, 0], [1, 0], [0, 0], [8, 0], [0, 3], [0, 5], [2, 0], [6, 8]], dtype=np.float64)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    W = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], dtype=np.float64)
    return H, labels, W


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's cosines of the zero rows of W
def test_exact_ties_are_decided_like_the_float64_reference(reference):
    H, labels, W = tied_problem()
    ref = reference.metrics(H, labels, W)
    # first index on ties: nearest centres 0 0 0 1 2 2 0 3, predictions 1 0 0 0 2 2 0 2 (NC4 3/8);
    # the last index would give 0 0 0 1 2 2 1 3 and 3 0 3 0 2 2 0 2 (NC4 5/8)
    assert (ref["nc4"], ref["ncc_accuracy"], ref["accuracy"]) == (0.375, 0.75, 0.375)
    # the full-covariance pass: distances from (m - m_G) (h - m_y)^T, integers throughout
    means = CollapseStatistics(4, covariance=False).update(H, labels).means()
    st = CollapseStatistics(4, means=means, weights=W, covariance=True).update(H, labels)
    sums = st.sample_sums()
    assert (sums.ncc_correct / 8, sums.correct / 8, 1.0 - sums.nc4_agree / 8) == (ref["ncc_accuracy"], ref["accuracy"], ref["nc4"])
    # collapse_report's span pass: the logits W (h - m_y) + W m_y do not involve the basis of the
    # span (here all of R^2, with equal singular values), so their ties are still exact
    assert collapse_report(H, labels, W).accuracy == ref["accuracy"]


def test_float32_wide_features_match_the_reference(reference):
    """d spans three Gram blocks (the last partial); float32 input with an offset."""
    rng = np.random.default_rng(7)
    C, d = 7, 2 * _GRAM_BLOCK + 44
    labels = rng.integers(0, C, 500)
    H = (20.0 + 3.0 * rng.standard_normal((C, d))[labels] + rng.standard_normal((500, d))).astype(np.float32)
    W = rng.standard_normal((C, d))
    b = rng.standard_normal(C)
    rep = collapse_report(H, labels, W, b).as_dict()
    ref = reference.metrics(H.astype(np.float64), labels, W, b)
    for k in ("nc1", "nc1_trace_ratio", "cdnv", "nc3", "margin_mean", "margin_min", "nc_margin", "ulpm_within_class_variation"):
        assert rep[k] == pytest.approx(ref[k], rel=1e-9), k
    for k in ("accuracy", "ncc_accuracy", "nc4"):
        assert rep[k] == ref[k], k


def test_one_class_counts_every_sample_as_right_and_agreeing():
    rng = np.random.default_rng(0)
    H = torch.from_numpy(rng.standard_normal((50, 6)))
    y = torch.zeros(50, dtype=torch.int64)
    st = CollapseStatistics(1, means=H.mean(0, keepdim=True), weights=torch.ones(1, 6)).update(H, y)
    sums = st.sample_sums()
    assert (sums.correct, sums.ncc_correct, sums.nc4_agree) == (50.0, 50.0, 50.0)
