"""Gram solvers against torch.linalg.pinv / solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collapselab.core.errors import ParameterError, ShapeError
from collapselab.flows import GramSolve, cg_solve, cholesky_solve, least_squares_solve
from collapselab.flows.linalg import DEFAULT_SHIFT, LowPrecisionCholesky, refined_pullback, symmetric_matvec

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _psd(n: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, rank, generator=g, dtype=torch.float64)
    return A @ A.T


def test_full_rank_solvers_agree():
    G = _psd(30, 50)
    v = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = torch.linalg.solve(G, v)
    assert torch.allclose(cholesky_solve(G, v), exact, rtol=1e-10, atol=1e-12)
    psi, rank = least_squares_solve(G, v)
    assert rank == 30 and torch.allclose(psi, exact, rtol=1e-10, atol=1e-12)
    psi, rank = least_squares_solve(G, v, try_cholesky=False)  # pivoted Cholesky, full rank
    assert rank == 30 and torch.allclose(psi, exact, rtol=1e-9, atol=1e-12)
    solve = GramSolve.from_gram(G)
    assert solve.rank == 30 and torch.allclose(solve.pinv(v), exact, rtol=1e-9, atol=1e-12)
    assert torch.allclose(solve.apply(v), G @ v, atol=1e-10)
    psi, iters, rel = cg_solve(lambda u: G @ u, v, rtol=1e-12)
    assert rel <= 1e-12 and torch.allclose(psi, exact, rtol=1e-7, atol=1e-9)


def test_rank_deficient_solvers_give_the_minimum_norm_solution():
    G = _psd(30, 12)
    v = torch.randn(30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pinv = torch.linalg.pinv(G, hermitian=True, rtol=1e-10)
    assert cholesky_solve(G, v) is None  # declines instead of returning garbage
    solve = GramSolve.from_gram(G)
    for psi, rank in (least_squares_solve(G, v), least_squares_solve(G, v, try_cholesky=False)):  # pivoted Cholesky
        assert rank == 12
        assert torch.allclose(G @ psi, G @ (pinv @ v), atol=1e-9)  # G psi = P v
        assert torch.allclose(solve.project(psi), pinv @ v, rtol=1e-7, atol=1e-9)  # P psi is the minimum-norm one
    assert solve.rank == 12
    assert torch.allclose(solve.pinv(v), pinv @ v, rtol=1e-7, atol=1e-9)
    P = G @ pinv
    assert torch.allclose(solve.projector(), P, atol=1e-9)
    assert torch.allclose(solve.project(v), P @ v, atol=1e-9)
    consistent = G @ v  # in ran G: CG from 0 converges to the minimum-norm solution
    psi, _, rel = cg_solve(lambda u: G @ u, consistent, rtol=1e-13, max_iter=200)
    assert rel < 1e-10 and torch.allclose(psi, pinv @ consistent, rtol=1e-6, atol=1e-8)


def test_zero_gram_has_rank_zero():
    solve = GramSolve.from_gram(torch.zeros(4, 4, dtype=torch.float64))
    assert solve.rank == 0
    assert torch.equal(solve.pinv(torch.ones(4, dtype=torch.float64)), torch.zeros(4, dtype=torch.float64))


def test_cpu_solvers_read_only_the_upper_triangle():
    # relu_gram(upper_only=True) leaves the strict lower triangle undefined: poison it
    v = torch.randn(30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for G, rank in ((_psd(30, 50), 30), (_psd(30, 12), 12)):
        upper = G.clone()
        upper[tuple(torch.tril_indices(30, 30, -1))] = float("nan")
        torch.testing.assert_close(symmetric_matvec(upper, v), G @ v, rtol=1e-13, atol=1e-12)
        for try_cholesky in (True, False):
            psi, r = least_squares_solve(upper, v, try_cholesky=try_cholesky)
            ref, _ = least_squares_solve(G, v, try_cholesky=try_cholesky)
            assert r == rank and torch.allclose(psi, ref, rtol=1e-12, atol=1e-12)
        if rank == 30:
            assert torch.allclose(cholesky_solve(upper, v), torch.linalg.solve(G, v), rtol=1e-10, atol=1e-12)


def test_low_precision_cholesky_solves_the_shifted_system_and_escalates():
    v = torch.randn(30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    G = _psd(30, 50)
    chol = LowPrecisionCholesky.of(G, 0.0)  # well conditioned: G itself
    assert chol.shift == 0.0 and chol.sigma == 0.0
    torch.testing.assert_close(chol.solve(v), torch.linalg.solve(G, v), rtol=1e-3, atol=1e-5)  # float32 accuracy
    chol = LowPrecisionCholesky.of(G)  # default shift, relative to max diag G
    assert chol.shift == DEFAULT_SHIFT and chol.sigma == pytest.approx(DEFAULT_SHIFT * float(G.diagonal().max()))
    torch.testing.assert_close(chol.solve(v), torch.linalg.solve(G + chol.sigma * torch.eye(30, dtype=G.dtype), v), rtol=1e-3, atol=1e-5)
    singular = _psd(30, 12)
    upper = singular.clone()
    upper[tuple(torch.tril_indices(30, 30, -1))] = float("nan")  # only the upper triangle is read
    work = torch.empty(30, 30, dtype=torch.float32)
    chol = LowPrecisionCholesky.of(upper, 0.0, work=work)  # fails unshifted, succeeds at DEFAULT_SHIFT or above
    assert chol.shift >= DEFAULT_SHIFT and np.shares_memory(chol.factor, work.numpy())
    shifted = singular + chol.sigma * torch.eye(30, dtype=G.dtype)  # cond ~ 1e6: check the backward error
    x = chol.solve(v)
    backward = torch.linalg.vector_norm(shifted @ x - v) / (torch.linalg.matrix_norm(shifted, 2) * torch.linalg.vector_norm(x))
    assert float(backward) < 30 * torch.finfo(torch.float32).eps
    indefinite = G - 2.0 * float(torch.linalg.eigvalsh(G)[-1]) * torch.eye(30, dtype=G.dtype)
    with pytest.raises(ParameterError, match="not positive definite in float32 even at sigma = 0.01 max diag G"):
        LowPrecisionCholesky.of(indefinite)
    with pytest.raises(ParameterError, match="not finite"):
        LowPrecisionCholesky.of(torch.full((3, 3), float("inf"), dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"work must be a contiguous \(30, 30\) tensor of torch.float32"):
        LowPrecisionCholesky.of(G, work=torch.empty(30, 30, dtype=torch.float64))


def test_refinement_reaches_float64_accuracy_from_a_float32_factor():
    g = torch.Generator().manual_seed(5)
    D = torch.randn(20, 50, generator=g, dtype=torch.float64)
    D[:, :5] *= 1e3  # cond(D D^T) ~ 1e6: one float32 solve is good to ~1e-1 only
    r = torch.randn(20, generator=g, dtype=torch.float64)
    chol = LowPrecisionCholesky.of(D @ D.T)
    exact = torch.linalg.pinv(D) @ r  # the minimum-norm solution of D d = r

    def run(**kw):
        return refined_pullback(chol.solve, lambda u: D.T @ u, lambda x: D @ x, r, **kw)

    _, rel0, done = run(max_refinements=0)
    assert done == 0 and rel0 > 1e-6  # the float32 solve alone
    d, rel, done = run(rtol=1e-11, max_refinements=100)
    assert rel <= 1e-11 and done >= 2
    assert float(torch.linalg.vector_norm(d - exact) / torch.linalg.vector_norm(exact)) < 1e-10
    d, rel, _ = run(rtol=1e-3)  # stops as soon as the residual is below rtol |r|
    assert rel <= 1e-3 and torch.allclose(D @ d, r, atol=1e-3 * float(torch.linalg.vector_norm(r)))


def test_refinement_of_an_inconsistent_system_stops_at_the_part_outside_the_range():
    # r far from ran G: psi grows by (P^perp r) / sigma per sweep in ker G, and the float32 rounding
    # of that swamps the part in the range (to ~ |P^perp r| / |r| * max diag G / sigma * u_32, 5% here):
    # the refinement stops, what is left is at least P^perp r, and the optimizer switches to full
    # precision for such targets (test_flows_optimizer: the stalled run)
    g = torch.Generator().manual_seed(6)
    D = torch.randn(20, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 50, generator=g, dtype=torch.float64)  # rank 8
    r = torch.randn(20, generator=g, dtype=torch.float64)
    chol = LowPrecisionCholesky.of(D @ D.T)
    d, rel, done = refined_pullback(chol.solve, lambda u: D.T @ u, lambda x: D @ x, r, rtol=1e-6, max_refinements=50)
    P = D @ torch.linalg.pinv(D)  # projector onto ran D
    outside = float(torch.linalg.vector_norm(r - P @ r) / torch.linalg.vector_norm(r))
    assert outside > 0.5 and outside * (1 - 1e-12) <= rel <= outside + 1e-3
    assert done < 50  # stopped by stagnation, not by the cap
    assert float(torch.linalg.vector_norm(D @ d - P @ r) / torch.linalg.vector_norm(P @ r)) < 0.1
