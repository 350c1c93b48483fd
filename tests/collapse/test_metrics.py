"""Neural-collapse metrics against independent numbers: the slow numpy reference, closed
forms on simplex-ETF data, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapselab.collapse import (
    cdnv,
    class_moments,
    collapse_report,
    margin_statistics,
    mse_decomposition,
    nc1,
    nc2,
    nc3,
    nc4,
    principal_angles,
)
from collapselab.core.data import etf_features, simplex_etf

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

KEYS = [
    "nc1", "nc1_trace_ratio", "rank", "cdnv", "nc2_equinorm_means", "nc2_equiangular_means", "nc2_etf_error_means",
    "ncc_accuracy", "nc2_equinorm_weights", "nc2_equiangular_weights", "nc2_etf_error_weights", "nc3",
    "nc3_self_duality_error", "accuracy", "nc4", "bias_collapse", "margin_mean", "margin_std", "margin_min",
    "nc_margin", "nc_margin_bound", "ulpm_self_duality", "ulpm_within_class_variation",
]


def random_problem(C, d, counts, seed, spread=0.7):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((C, d)) * 2.0
    labels = np.repeat(np.arange(C), counts)
    rng.shuffle(labels)
    H = means[labels] + spread * rng.standard_normal((len(labels), d))
    W = means + 0.5 * rng.standard_normal((C, d))
    b = 0.3 * rng.standard_normal(C)
    return H, labels, W, b


def assert_matches_reference(rep, ref, keys=KEYS, rtol=1e-9):
    got = rep.as_dict()
    for k in keys:
        if k in ref:
            assert got[k] == pytest.approx(ref[k], rel=rtol, abs=1e-12), k


@pytest.mark.parametrize(
    "C,d,counts",
    [(5, 12, 40), (6, 9, [5, 80, 13, 40, 7, 60]), (10, 4, 15)],  # balanced, imbalanced, d < C
    ids=["balanced", "imbalanced", "d<C"],
)
def test_fast_path_matches_slow_reference(C, d, counts, reference):
    H, labels, W, b = random_problem(C, d, counts, seed=C + d)
    rep = collapse_report(H, labels, W, b)
    ref = reference.metrics(H, labels, W, b)
    assert_matches_reference(rep, ref)
    assert rep.rank == min(C - 1, d)
    assert rep.counts == list(np.bincount(labels))


def test_many_classes_small_dim(reference):
    C, d = 1000, 64
    H, labels, W, b = random_problem(C, d, 2, seed=3)
    rep = collapse_report(H, labels, W, b)
    ref = reference.metrics(H, labels, W, b)
    assert rep.rank == d
    assert_matches_reference(rep, ref, keys=["nc1", "nc1_trace_ratio", "cdnv", "nc2_etf_error_means", "nc3", "accuracy", "nc4", "ncc_accuracy"])


def test_collapsed_etf_gives_zero():
    C, d = 10, 16
    data, M = etf_features(C, d, 7, sigma=0.0, scale=3.0, seed=4)
    rep = collapse_report(data.X, data.labels, 0.5 * M, torch.zeros(C))
    for k in ("nc1", "nc1_trace_ratio", "cdnv", "nc2_equinorm_means", "nc2_equiangular_means", "nc2_etf_error_means",
              "nc2_equinorm_weights", "nc2_equiangular_weights", "nc2_etf_error_weights", "nc3",
              "nc3_self_duality_error", "nc3_max_principal_angle", "nc4", "bias_collapse", "ulpm_self_duality",
              "ulpm_within_class_variation", "margin_std"):
        assert abs(getattr(rep, k)) < 1e-12, k
    assert rep.accuracy == 1.0 and rep.ncc_accuracy == 1.0 and rep.rank == C - 1
    # the margin of a collapsed ETF pair: |w| |h| (1 + 1/(C-1)) (Ji et al. 2022, proof of Lemma 3.1);
    # etf_features returns M already scaled: |h| = 3, |w| = 1.5
    assert rep.nc_margin == pytest.approx(1.5 * 3.0 * C / (C - 1), rel=1e-12)


@pytest.mark.parametrize("batch", [None, 7])
def test_margin_std_is_accurate_for_a_large_mean_and_a_small_spread(batch):
    """Margins ~ 2e6 with spread ~ 2e-3: E[m^2] - E[m]^2 would lose all of it (its rounding,
    eps E[m^2] ~ 1e-3, exceeds var ~ 4e-6); the report must match a two-pass float64 reference.
    Each margin is a float64 logit difference, rounded to a few eps |m|, so the std can differ by
    that much: 8 eps max|m| absolute (~4e-9 against a std of ~2e-3)."""
    from collapselab.collapse import CollapseStatistics

    rng = np.random.default_rng(12)
    N = 200
    labels = np.arange(N) % 2
    side = np.where(labels == 0, 1.0, -1.0)
    H = np.stack([side * (1e6 + 1e-3 * rng.standard_normal(N)), rng.standard_normal(N)], axis=1)
    W = np.array([[1.0, 0.0], [-1.0, 0.0]])
    logits = H @ W.T
    m = np.where(labels == 0, logits[:, 0] - logits[:, 1], logits[:, 1] - logits[:, 0])
    ref = np.sqrt(np.mean((m - m.mean()) ** 2))  # two passes
    if batch is None:
        rep = collapse_report(H, labels, W)
    else:  # streamed in batches and merged from two accumulators: the shifts of the parts differ
        parts = [CollapseStatistics(2, weights=W) for _ in range(2)]
        for k, i in enumerate(range(0, N, batch)):
            parts[k % 2].update(H[i : i + batch], labels[i : i + batch])
        rep = parts[0].merge(parts[1]).report()
    eps = np.finfo(np.float64).eps
    assert abs(rep.margin_std - ref) <= 8 * eps * np.abs(m).max()
    assert rep.margin_mean == pytest.approx(m.mean(), rel=4 * eps)
    assert rep.margin_second_moment == pytest.approx(np.mean(m**2), rel=8 * eps)


def test_nc_margin_bound_is_attained_at_collapse():
    """Ji et al. 2022 Lemma 3.1: equality iff neural collapse, here with |w_c|^2 = n |h|^2."""
    C, d, n = 4, 6, 9
    data, M = etf_features(C, d, n, sigma=0.0, scale=2.0, seed=0)
    rep = collapse_report(data.X, data.labels, math.sqrt(n) * M)  # |h| = 2, |w| = 2 sqrt(n)
    assert rep.nc_margin == pytest.approx(rep.nc_margin_bound, rel=1e-12)
    rep2 = collapse_report(data.X, data.labels, 1.0 * M)
    assert rep2.nc_margin < rep2.nc_margin_bound


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nc_margin_includes_a_given_bias(seed):
    """``nc_margin`` of ``W h + b`` when a bias is passed (it ignored the bias before), against a
    per-sample loop over the logits; Lemma 3.1's bound (Ji et al.) still holds on balanced classes
    because the bias differences ``b_c - b_j`` average to zero over ordered class pairs. The bias is
    large enough to change the minimum margin, so ignoring it fails the comparison."""
    rng = np.random.default_rng(seed)
    C, d, n = 4, 5, 6
    labels = np.repeat(np.arange(C), n)
    W = rng.standard_normal((C, d))
    H = 2.0 * W[labels] + 0.3 * rng.standard_normal((C * n, d))
    b = 3.0 * rng.standard_normal(C)
    z = H @ W.T + b
    direct = min(z[i, labels[i]] - np.delete(z[i], labels[i]).max() for i in range(C * n))
    z0 = H @ W.T
    unbiased = min(z0[i, labels[i]] - np.delete(z0[i], labels[i]).max() for i in range(C * n))
    assert abs(direct - unbiased) > 1e-3  # the bias matters here
    rep = collapse_report(H, labels, W, b)
    eps = np.finfo(np.float64).eps
    # float64 rounding of one logit difference: a few eps times the logits' size
    assert rep.nc_margin == pytest.approx(direct, abs=16 * eps * np.abs(z).max())
    assert rep.nc_margin == rep.margin_min
    assert rep.nc_margin <= rep.nc_margin_bound
    assert collapse_report(H, labels, W).nc_margin == pytest.approx(unbiased, abs=16 * eps * np.abs(z0).max())


def test_etf_plus_noise_matches_closed_form():
    """h = M_c + sigma g: Sigma_W -> sigma^2 (N-C)/N I and Sigma_B = M^T M / C has C-1
    eigenvalues 1/(C-1), so NC1 -> sigma^2 (C-1)^2 / C * (N-C)/N; the trace ratio ->
    sigma^2 d (N-C)/N / ((C-1)/C)... with |M_c| = 1: Tr Sigma_B = (1/C) sum |M_c|^2 = 1."""
    C, d, n, sigma = 4, 6, 20000, 0.1
    data, _ = etf_features(C, d, n, sigma=sigma, seed=11)
    N = C * n
    expected = sigma**2 * (C - 1) ** 2 / C * (N - C) / N
    assert nc1(data.X, data.labels) == pytest.approx(expected, rel=0.02)
    assert nc1(data.X, data.labels, variant="trace_ratio") == pytest.approx(sigma**2 * d * (N - C) / N, rel=0.02)
    # CDNV: var_c = d sigma^2, |mu_c - mu_c'|^2 = 2 C/(C-1)
    assert cdnv(data.X, data.labels) == pytest.approx(d * sigma**2 / (2 * C / (C - 1)), rel=0.02)


def test_invariance_to_rotation_scaling_relabelling_and_permutation():
    H, labels, W, b = random_problem(6, 8, [10, 30, 12, 25, 9, 17], seed=5)
    base = collapse_report(H, labels, W, b).as_dict()
    Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((8, 8)))
    rot = collapse_report(H @ Q, labels, W @ Q, b).as_dict()
    scaled = collapse_report(H * 7.5, labels, W, b)
    perm = np.random.default_rng(2).permutation(len(labels))
    shuffled = collapse_report(H[perm], labels[perm], W, b).as_dict()
    for k in ("nc1", "nc1_trace_ratio", "cdnv", "nc2_etf_error_means", "nc3", "nc4", "accuracy"):
        assert rot[k] == pytest.approx(base[k], rel=1e-10, abs=1e-14), k
        assert shuffled[k] == pytest.approx(base[k], rel=1e-10, abs=1e-14), k
    for k in ("nc1", "nc1_trace_ratio", "cdnv", "nc2_etf_error_means", "nc2_equiangular_means", "nc3"):
        assert getattr(scaled, k) == pytest.approx(base[k], rel=1e-10), k
    # relabelling the classes (and permuting the classifier rows alike) changes nothing
    sigma = np.array([3, 0, 5, 1, 4, 2])
    inv = np.argsort(sigma)
    relab = collapse_report(H, sigma[labels], W[inv], b[inv]).as_dict()
    for k in ("nc1", "cdnv", "nc2_etf_error_means", "nc3", "nc4", "accuracy"):
        assert relab[k] == pytest.approx(base[k], rel=1e-10, abs=1e-14), k


def test_non_contiguous_labels_are_mapped_by_sorted_value():
    H, labels, W, b = random_problem(3, 5, [20, 11, 30], seed=6)
    values = np.array([42, 3, 7])  # class 0 -> 42, class 1 -> 3, class 2 -> 7
    sparse = values[labels]
    # sorted values 3, 7, 42 are classes 0, 1, 2: classifier rows follow that order
    order = np.argsort(values)
    rep = collapse_report(H, sparse, W[order], b[order])
    ref = collapse_report(H, labels, W, b)
    assert rep.classes == [3, 7, 42]
    assert rep.counts == [11, 30, 20]
    for k in ("nc1", "cdnv", "nc3", "nc4", "accuracy", "ncc_accuracy"):
        assert getattr(rep, k) == pytest.approx(getattr(ref, k), rel=1e-12, abs=1e-15), k


def test_large_common_offset_with_float32_input(reference):
    """float32 features 1e6 + x: the metrics equal the float64 reference on the same float32
    values (the one-pass textbook sum h h^T - N mu mu^T would lose every digit)."""
    rng = np.random.default_rng(7)
    C, d = 5, 10
    labels = rng.integers(0, C, 3000)
    means = rng.standard_normal((C, d)) * 4.0
    H32 = (1e6 + means[labels] + rng.standard_normal((3000, d))).astype(np.float32)
    W = rng.standard_normal((C, d))
    rep = collapse_report(torch.from_numpy(H32), labels, W)
    ref = reference.metrics(H32.astype(np.float64), labels, W)
    assert_matches_reference(rep, ref, keys=["nc1", "nc1_trace_ratio", "cdnv", "nc2_etf_error_means", "nc3", "ncc_accuracy", "accuracy", "nc4"], rtol=1e-8)


def test_function_variants_agree_with_report_and_reference(reference):
    H, labels, W, b = random_problem(5, 7, 30, seed=8)
    ref = reference.metrics(H, labels, W, b)
    assert nc1(H, labels) == pytest.approx(ref["nc1"], rel=1e-10)
    assert nc2(H, labels) == pytest.approx((ref["nc2_equinorm_means"], ref["nc2_equiangular_means"], ref["nc2_etf_error_means"]), rel=1e-10)
    assert nc2(H, labels, W, of="weights").etf_error == pytest.approx(ref["nc2_etf_error_weights"], rel=1e-10)
    assert nc3(H, labels, W) == pytest.approx(ref["nc3"], rel=1e-10)
    assert nc3(H, labels, W, variant="self_duality") == pytest.approx(ref["nc3_self_duality_error"], rel=1e-10)
    assert nc4(H, labels, W, b) == pytest.approx(ref["nc4"], abs=1e-15)
    # CDNV options: Bessel-corrected variances and another distance exponent, by loops
    y = labels
    mu = np.array([H[y == c].mean(0) for c in range(5)])
    var1 = np.array([((H[y == c] - mu[c]) ** 2).sum() / ((y == c).sum() - 1) for c in range(5)])
    expect = np.mean([(var1[i] + var1[j]) / (2 * np.linalg.norm(mu[i] - mu[j])) for i in range(5) for j in range(i + 1, 5)])
    assert cdnv(H, labels, ddof=1, exponent=1.0) == pytest.approx(expect, rel=1e-10)
    # weighted global mean: M~ centred at the sample mean
    Mw = mu - H.mean(0)
    Sw = sum((H[y == c] - mu[c]).T @ (H[y == c] - mu[c]) for c in range(5)) / len(H)
    expect_w = np.trace(Sw @ np.linalg.pinv(Mw.T @ Mw / 5, rcond=1e-10, hermitian=True)) / 5
    assert nc1(H, labels, global_mean="weighted") == pytest.approx(expect_w, rel=1e-9)


def test_principal_angles_against_scipy():
    from scipy.linalg import subspace_angles

    H, labels, W, _ = random_problem(4, 9, 20, seed=9)
    mom = class_moments(H, labels)
    Mc = (mom.centred_means()).numpy()
    expected = np.sort(subspace_angles(W.T, Mc.T))
    got = principal_angles(H, labels, W).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert nc3(H, labels, W, variant="principal_angles") == pytest.approx(expected.max(), abs=1e-10)


@pytest.mark.parametrize("with_bias", [True, False])
def test_mse_decomposition_sums_to_the_loss(with_bias, reference):
    H, labels, W, b = random_problem(4, 6, [30, 12, 20, 25], seed=10)
    bias = b if with_bias else None
    wd = 0.05
    dec = mse_decomposition(H, labels, W, bias, weight_decay=wd)
    loss = reference.mse_loss(H, labels, W, bias, wd)
    assert dec.nc1 + dec.nc2_3 + dec.perp == pytest.approx(loss, rel=1e-12)
    assert dec.total == pytest.approx(loss, rel=1e-12)
    assert min(dec.nc1, dec.nc2_3, dec.perp) >= 0
    # at the ridge solution (numpy lstsq of the augmented system) L_perp vanishes
    N, d = H.shape
    A = np.hstack([H, np.ones((N, 1))]) if with_bias else H
    Y = np.eye(4)[labels]
    sol = np.linalg.solve(A.T @ A / N + wd * np.eye(A.shape[1]), A.T @ Y / N).T
    W_ls, b_ls = (sol[:, :d], sol[:, d]) if with_bias else (sol, None)
    at_ls = mse_decomposition(H, labels, W_ls, b_ls, weight_decay=wd)
    assert abs(at_ls.perp) < 1e-12
    assert at_ls.nc1 + at_ls.nc2_3 == pytest.approx(dec.nc1 + dec.nc2_3, rel=1e-10)


def test_margin_statistics():
    rng = np.random.default_rng(12)
    Z = rng.standard_normal((50, 4))
    y = rng.integers(0, 4, 50)
    ms = margin_statistics(Z, y, rho=2.0)
    mg = np.array([(Z[i, y[i]] - np.max(np.delete(Z[i], y[i]))) / 2.0 for i in range(50)])
    assert ms.mu == pytest.approx(mg.mean()) and ms.second_moment == pytest.approx((mg**2).mean())
    assert ms.sigma**2 == pytest.approx(ms.second_moment - ms.mu**2)
    assert ms.minimum == pytest.approx(mg.min())


def test_simplex_etf_report_of_weights_only_geometry():
    """NC2 of the classifier alone: an ETF classifier (not centred) is exact."""
    C = 6
    M = simplex_etf(C, 8, seed=1)
    H, labels, _, _ = random_problem(C, 8, 10, seed=13)
    rep = collapse_report(H, labels, 2.0 * M)
    assert rep.nc2_etf_error_weights < 1e-12 and rep.nc2_equiangular_weights < 1e-12


def test_centred_weights_option_and_weighted_global_mean_in_report(reference):
    H, labels, W, b = random_problem(5, 7, [8, 20, 12, 30, 10], seed=14)
    rep = collapse_report(H, labels, W + 3.0, b, center_weights=True)
    ref = reference.metrics(H, labels, W - W.mean(0), b)  # centring removes the common +3
    for k in ("nc2_equinorm_weights", "nc2_equiangular_weights", "nc2_etf_error_weights"):
        assert getattr(rep, k) == pytest.approx(ref[k], rel=1e-10), k
    assert rep.weights_centred and not collapse_report(H, labels, W).weights_centred
    weighted = collapse_report(H, labels, global_mean="weighted")
    assert weighted.nc1 == pytest.approx(nc1(H, labels, global_mean="weighted"), rel=1e-12)
    assert weighted.rank == 4  # sum_c N_c (mu_c - mu_G) = 0: still C - 1 directions


def test_the_measurement_layer_does_not_import_the_toy_layer():
    """Margin statistics are a measurement: ``collapselab.collapse`` holds them and imports
    nothing from ``collapselab.toy`` (which re-exports them); checked in a fresh interpreter."""
    import subprocess
    import sys

    code = "import sys, collapselab.collapse as c; c.margin_statistics([[1.0, 0.0]], [0]); print(sorted(m for m in sys.modules if m.startswith('collapselab.toy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    from collapselab import toy
    from collapselab.collapse import MarginStats, margin_stats, margins

    assert (toy.margins, toy.margin_stats, toy.MarginStats) == (margins, margin_stats, MarginStats)
