"""Gram solvers against torch.linalg.pinv / solve."""

from __future__ import annotations

import torch

from collapselab.flows import GramSolve, cg_solve, cholesky_solve, least_squares_solve
from collapselab.flows.linalg import symmetric_matvec


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
