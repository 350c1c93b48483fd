"""``covariance="span"``: Sigma_W kept only on the span of the class means gives the same report."""

from __future__ import annotations

import pytest
import torch

from collapselab.collapse import CollapseStatistics, class_moments, collapse_report
from collapselab.core.errors import ParameterError

from .test_streaming import assert_reports_close, problem

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def two_pass(H, y, W, b, covariance, batch=64):
    means = CollapseStatistics(5, covariance=False).update(H, y).means()
    st = CollapseStatistics(5, means=means, weights=W, bias=b, covariance=covariance)
    for idx in torch.arange(len(y)).split(batch):
        st.update(H[idx], y[idx])
    return st


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_span_report_equals_the_full_covariance_report(offset):
    H, y, W, b = problem(seed=7, C=5, d=40, N=900, offset=offset)
    full, span = two_pass(H, y, W, b, True), two_pass(H, y, W, b, "span")
    assert_reports_close(span.report(), full.report(), rel=1e-10)
    assert span.report(global_mean="weighted").nc1 == pytest.approx(full.report(global_mean="weighted").nc1, rel=1e-10)


def test_span_moments_are_the_restriction_of_sigma_w():
    H, y, W, b = problem(seed=8, C=5, d=30, N=700)
    mom = two_pass(H, y, W, b, "span").moments()
    sigma = class_moments(H, y).sigma_w
    U = mom.basis
    assert U.shape == (30, 4)  # C - 1 directions: the centred means of 5 classes
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(mom.within, U.T @ sigma @ U, rtol=1e-11, atol=1e-13)
    assert float(mom.within_trace()) == pytest.approx(float(torch.trace(sigma)), rel=1e-12)
    v = U @ torch.randn(4, 3, dtype=torch.float64)  # any directions inside the span
    torch.testing.assert_close(mom.within_quadratic(v), (v * (sigma @ v)).sum(0), rtol=1e-11, atol=0)


def test_span_merge_of_two_halves_equals_one_pass():
    H, y, W, b = problem(seed=9, offset=1e3)
    means = collapse_report(H, y).means
    a = CollapseStatistics(5, means=means, weights=W, bias=b, covariance="span").update(H[:300], y[:300])
    a.merge(CollapseStatistics(5, means=means, weights=W, bias=b, covariance="span").update(H[300:], y[300:]))
    whole = CollapseStatistics(5, means=means, weights=W, bias=b, covariance=True).update(H, y)
    assert_reports_close(a.report(), whole.report(), rel=1e-11)


def test_span_mode_refuses_what_it_cannot_give():
    H, y, W, b = problem(seed=10)
    with pytest.raises(ParameterError, match="covariance='span' .* pass means="):
        CollapseStatistics(5, covariance="span")
    with pytest.raises(ParameterError, match="covariance must be one of"):
        CollapseStatistics(5, means=collapse_report(H, y).means, covariance="diagonal")
    mom = two_pass(H, y, W, b, "span").moments()
    with pytest.raises(ParameterError, match="only on the 4-dimensional span"):
        mom.sigma_w
    # reference means that are not the data's: the class means leave the span the covariance lives on
    wrong = collapse_report(H, y).means + torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    st = CollapseStatistics(5, means=wrong, covariance="span").update(H, y)
    with pytest.raises(ParameterError, match="outside the span .* differ from the reference means"):
        st.report()


def test_span_with_coinciding_means_reports_infinite_nc1():
    half = torch.randint(-9, 10, (30, 6), generator=torch.Generator().manual_seed(1)).double()
    H = torch.cat([half, -half])  # every class holds x and -x (integers: sums exact): all class means are 0
    y = torch.cat([torch.arange(30) % 3, torch.arange(30) % 3])
    st = CollapseStatistics(3, means=torch.zeros(3, 6, dtype=torch.float64), covariance="span").update(H, y)
    assert st.moments().basis.shape == (6, 0)
    assert st.report().nc1 == float("inf")
