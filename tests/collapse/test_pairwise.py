"""The pairwise (C x C) metrics computed in row tiles: equal to an independent numpy computation
of the whole C x C matrices for any tile height, and never a C x C product.

Tolerances (error model of ``collapselab.collapse._pairwise``): every Gram entry is a length-d
dot product, rounded differently by numpy's and torch's kernels (``|dG_cc'| <= d eps |x_c||y_c'|``),
and the sums are reduced in another order (``log2(C^2) eps`` relative for positive terms, the
tile partials added exactly by ``math.fsum``): so ``K = 4 (d + log2 C^2) eps`` times the
condition of the terms in G, stated per metric below.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from collapselab.collapse import _pairwise as pw
from collapselab.collapse import collapse_report
from collapselab.collapse._moments import ClassMoments

EPS = np.finfo(np.float64).eps


def _bound(C: int, d: int) -> float:
    return 4 * (d + math.log2(C * C)) * EPS


def _etf_target(C: int) -> np.ndarray:
    return (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)


def _numpy_pairwise(M, var, W, ddof_var, exponent):
    """The whole C x C matrices in numpy: CDNV over c < c', equiangularity over c != c', ETF
    errors of M M^T, W W^T and W M^T, and the condition numbers of their terms."""
    C = M.shape[0]
    iu = np.triu_indices(C, 1)
    D2 = ((M[:, None, :] - M[None, :, :]) ** 2).sum(-1)  # differences first: an independent route
    sq = (M * M).sum(1)
    out = {"cdnv": np.mean((ddof_var[iu[0]] + ddof_var[iu[1]]) / (2 * D2[iu] ** (exponent / 2)))}
    out["kappa_cdnv"] = np.max((sq[iu[0]] + sq[iu[1]]) / D2[iu]) * max(1.0, exponent / 2)
    for name, R in (("means", M), ("weights", W)):
        u = R / np.linalg.norm(R, axis=1, keepdims=True)
        cos = u @ u.T
        out[f"equiangular_{name}"] = np.mean(np.abs(cos[~np.eye(C, dtype=bool)] + 1 / (C - 1)))
    for name, (A, B) in (("means", (M, M)), ("weights", (W, W)), ("duality", (W, M))):
        G = A @ B.T
        out[f"etf_{name}"] = np.linalg.norm(G / np.linalg.norm(G) - _etf_target(C))
        # |dG|_F / |G|_F <= d eps |A|_F |B|_F / |G|_F: the absolute error of the ETF error
        out[f"kappa_etf_{name}"] = np.linalg.norm(A) * np.linalg.norm(B) / np.linalg.norm(G)
    return out


def _moments(M: np.ndarray, var: np.ndarray, counts: np.ndarray) -> ClassMoments:
    C, d = M.shape
    t = torch.as_tensor
    return ClassMoments(t(counts), torch.zeros(d, dtype=torch.float64), t(M), t(M), torch.eye(d, dtype=torch.float64), t(var), torch.arange(C))


def _case(C: int, d: int, seed: int, collapse: float | None):
    """Random means and classifier, or (``collapse``) a simplex ETF with noise of that size
    (the regime where the ETF errors are small and cancellation would show)."""
    rng = np.random.default_rng(seed)
    if collapse is None:
        M, W = rng.standard_normal((C, d)), rng.standard_normal((C, d))
    else:
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        etf = np.hstack([np.eye(C) - 1 / C, np.zeros((C, d - C))]) @ q  # a rotated simplex ETF, d >= C
        M = etf + collapse * rng.standard_normal((C, d))
        W = 2.0 * etf + collapse * rng.standard_normal((C, d))
    M = M - M.mean(0)
    counts = rng.integers(2, 9, C)
    var = rng.uniform(0.1, 2.0, C)
    return M, W, counts, var


@pytest.mark.parametrize("C,d,collapse", [(7, 16, None), (50, 16, None), (300, 16, None), (40, 64, None), (7, 16, 1e-7), (16, 16, 1e-7), (40, 64, 1e-7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows", [1, 3, 17, None])
def test_tiled_pairwise_metrics_equal_the_whole_matrices(C, d, collapse, seed, rows):
    """rows: forced tile height (None: the default budget, one tile at these sizes);
    collapse: noise around a simplex ETF (in d >= C dimensions), where the errors are small."""
    M, W, counts, var = _case(C, d, seed, collapse)
    budget = None if rows is None else rows * pw.TEMPS * 8 * C
    if rows is not None:
        assert pw.tile_rows(C, budget) == min(rows, C)
    for ddof, exponent in ((0, 2.0), (1, 1.0)):
        ref = _numpy_pairwise(M, var, W, var * counts / (counts - ddof), exponent)
        got = pw.cdnv_pairs(_moments(M, var, counts), ddof=ddof, exponent=exponent, budget=budget)
        assert abs(got - ref["cdnv"]) <= _bound(C, d) * ref["kappa_cdnv"] * ref["cdnv"]
    K = _bound(C, d)
    Mt, Wt = torch.as_tensor(M), torch.as_tensor(W)
    # cosines are bounded by 1: absolute error K (and K again from the row normalisation)
    assert abs(pw.equiangularity(Mt, budget=budget) - ref["equiangular_means"]) <= 2 * K
    assert abs(pw.equiangularity(Wt, budget=budget) - ref["equiangular_weights"]) <= 2 * K
    for name, got in (("means", pw.etf_error(Mt, Mt, budget=budget)), ("weights", pw.etf_error(Wt, Wt, budget=budget)),
                      ("duality", pw.self_duality_error(Wt, Mt, budget=budget))):
        assert abs(got - ref[f"etf_{name}"]) <= 2 * K * ref[f"kappa_etf_{name}"], name


def test_collapse_report_is_unchanged_by_the_tile_height(monkeypatch):
    """Through the public API: a tiny budget (one class per tile) against the default (one tile)."""
    rng = np.random.default_rng(5)
    C, d, n = 60, 8, 4
    mu = 3.0 * rng.standard_normal((C, d))
    y = np.repeat(np.arange(C), n)
    H = mu[y] + rng.standard_normal((C * n, d))
    W = rng.standard_normal((C, d))
    whole = collapse_report(H, y, W)
    monkeypatch.setattr(pw, "PAIRWISE_BUDGET", pw.TEMPS * 8 * C)
    tiled = collapse_report(H, y, W)
    K = _bound(C, d) * 100  # x100: the condition of these random means (kappa <= ~10^2 here)
    for key in ("cdnv", "nc2_equiangular_means", "nc2_equiangular_weights", "nc2_etf_error_means", "nc2_etf_error_weights", "nc3_self_duality_error"):
        assert getattr(tiled, key) == pytest.approx(getattr(whole, key), rel=K, abs=K), key


def test_many_classes_never_form_a_c_by_c_product(monkeypatch):
    """C = 3000, d = 16: every C-wide product the pairwise metrics form goes through
    ``gram_tile`` (the only product in the module; the terms are formed in place or have the
    tile's shape), so recording its shapes bounds their memory. torch's CPU allocations are
    invisible to tracemalloc, hence this accounting instead of a measured peak."""
    C, d = 3000, 16
    M, W, counts, var = _case(C, d, 11, None)
    shapes = []
    real = pw.gram_tile

    def spy(X, Y, a, b, start):
        t = real(X, Y, a, b, start)
        shapes.append(tuple(t.shape))
        return t

    monkeypatch.setattr(pw, "gram_tile", spy)
    for budget in (None, 2**20):
        shapes.clear()
        Mt, Wt = torch.as_tensor(M), torch.as_tensor(W)
        got = {
            "cdnv": pw.cdnv_pairs(_moments(M, var, counts), budget=budget),
            "equiangular_means": pw.equiangularity(Mt, budget=budget),
            "etf_duality": pw.self_duality_error(Wt, Mt, budget=budget),
        }
        cap = pw.PAIRWISE_BUDGET if budget is None else budget
        assert shapes and all(r < C and r * c * 8 * pw.TEMPS <= cap for r, c in shapes), max(shapes)
        assert sum(r for r, c in shapes) == 4 * C  # every row once for CDNV and equiangularity, twice for the ETF error
        ref = _numpy_pairwise(M, var, W, var, 2.0)
        K = _bound(C, d)
        assert abs(got["cdnv"] - ref["cdnv"]) <= K * ref["kappa_cdnv"] * ref["cdnv"]
        assert abs(got["equiangular_means"] - ref["equiangular_means"]) <= 2 * K
        assert abs(got["etf_duality"] - ref["etf_duality"]) <= 2 * K * ref["kappa_etf_duality"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a measured peak needs the CUDA allocator's statistics")
def test_many_classes_peak_memory_on_cuda():
    """On CUDA the allocator measures every allocation: the pairwise metrics at C = 20,000,
    d = 16 stay far below one C x C float64 matrix (3.2 GB)."""
    C, d = 20_000, 16
    g = torch.Generator(device="cuda").manual_seed(0)
    M = torch.randn(C, d, dtype=torch.float64, device="cuda", generator=g)
    M -= M.mean(0)
    mom = ClassMoments(torch.full((C,), 3, device="cuda"), torch.zeros(d, dtype=torch.float64, device="cuda"), M, M,
                       torch.eye(d, dtype=torch.float64, device="cuda"), torch.ones(C, dtype=torch.float64, device="cuda"), torch.arange(C, device="cuda"))
    budget = 64 * 2**20
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    pw.cdnv_pairs(mom, budget=budget)
    pw.equiangularity(M, budget=budget)
    pw.etf_error(M, M, budget=budget)
    peak = torch.cuda.max_memory_allocated() - base
    assert peak <= budget + 8 * C * d * 4  # the tiles, plus a few O(C d) copies
