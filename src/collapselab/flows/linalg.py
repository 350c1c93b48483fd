"""Solving with the NTK Gram ``G = D D^T``: rank, pseudo-inverse, projector onto ``ran G``.

Every field of :mod:`collapselab.flows.fields` is ``d theta / ds = D^T phi`` with ``phi``
built from ``G^+`` (Chen & Munoz Ewald 2024 (2.21)-(2.28), Thm 2.3; docs/theory/adapted-flow.md), so one
factorisation of ``G`` per evaluation serves them all.

* :class:`GramSolve` (spectral, ``torch.linalg.eigh``): the numerical rank, ``G^+ v`` (the
  minimum-norm solution of the DAE ``G psi = P v``), and the orthogonal projector
  ``P = G G^+`` onto ``ran(D D^T) = ran(D)``. Rank-revealing and exact; ``O((QN)^3)``
  with a large constant. What the flows and the tests use.
* :func:`cholesky_solve`: ``G^{-1} v`` by Cholesky (LAPACK through SciPy on the CPU), about
  15x cheaper than ``eigh``; reports failure instead of a rank.
* :func:`least_squares_solve`: a solution of ``G psi = P v`` and the rank from one
  Cholesky, or one pivoted Cholesky (LAPACK ``pstrf``) when ``G`` is singular; about
  15x cheaper than ``eigh`` on the CPU (``eigh`` elsewhere). The optimizer's solver.
* :class:`LowPrecisionCholesky` and :func:`refined_pullback`: mixed-precision iterative
  refinement. ``G`` (possibly shifted) factorised in float32 (twice as fast as float64 on a
  CPU, more on most GPUs), the residuals ``r - D D^T psi`` computed in float64 by two
  Jacobian products, so the step ``D^T psi`` is float64-accurate to a requested relative
  residual. The optimizer's default for float64 models.
* :func:`cg_solve`: conjugate gradients on ``G psi = v`` given only ``u -> G u`` (two
  Jacobian products), for problems where even the Gram does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve, get_blas_funcs, get_lapack_funcs, solve_triangular

from ..core.errors import ParameterError, ShapeError
from ..core.types import Matrix, Theta, Vector

__all__ = [
    "GramSolve",
    "LowPrecisionCholesky",
    "DEFAULT_SHIFT",
    "cholesky_solve",
    "least_squares_solve",
    "refined_pullback",
    "cg_solve",
    "default_rtol",
    "symmetric_matvec",
    "uses_lapack",
    "square_buffer",
]


def default_rtol(size: int, dtype: torch.dtype) -> float:
    """Relative eigenvalue cutoff ``size * eps(dtype)`` (numpy's ``matrix_rank`` rule)."""
    return size * torch.finfo(dtype).eps


@dataclass(frozen=True)
class GramSolve:
    """Spectral factorisation of a symmetric positive semi-definite Gram ``G = V diag(w) V^T``.

    Eigenvalues ``w_i <= rtol * max(w)`` count as zero; ``rank`` is the number of the
    others. ``eigenvalues``: ``(n,)`` ascending; ``eigenvectors``: ``(n, n)``.
    """

    eigenvalues: Vector
    eigenvectors: Matrix
    rank: int
    cutoff: float

    @classmethod
    def from_gram(cls, gram: Matrix, rtol: float | None = None) -> "GramSolve":
        """Factorise ``gram`` (``(n, n)``, symmetrised first)."""
        n = gram.shape[0]
        w, v = torch.linalg.eigh(0.5 * (gram + gram.T))
        tol = default_rtol(n, gram.dtype) if rtol is None else rtol
        cutoff = float(tol * w[-1].clamp_min(0.0)) if n else 0.0
        rank = int((w > cutoff).sum()) if n and float(w[-1]) > 0 else 0
        return cls(w, v, rank, cutoff)

    @property
    def size(self) -> int:
        """``n = QN``."""
        return int(self.eigenvalues.shape[0])

    @property
    def _kept(self) -> Matrix:
        return self.eigenvectors[:, self.size - self.rank :]

    def pinv(self, v: Vector) -> Vector:
        """``G^+ v``: the minimum-norm least-squares solution of ``G psi = v``."""
        kept = self._kept
        return kept @ ((kept.T @ v) / self.eigenvalues[self.size - self.rank :])

    def project(self, v: Vector) -> Vector:
        """``P v`` with ``P = G G^+`` the orthogonal projector onto ``ran G``."""
        kept = self._kept
        return kept @ (kept.T @ v)

    def projector(self) -> Matrix:
        """``P`` as an ``(n, n)`` matrix (Chen & Munoz Ewald 2024 (2.22), (A.8))."""
        kept = self._kept
        return kept @ kept.T

    def apply(self, v: Vector) -> Vector:
        """``G v`` from the factorisation (used to evaluate output velocities)."""
        return self.eigenvectors @ (self.eigenvalues * (self.eigenvectors.T @ v))


def uses_lapack(t: torch.Tensor) -> bool:
    """Whether ``t`` goes to SciPy's BLAS/LAPACK here (CPU, float32 or float64); other tensors
    use torch's own routines."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def square_buffer(given: Matrix | None, size: int, like: torch.Tensor, name: str, where: str) -> Matrix:
    """``given`` checked to be a contiguous ``(size, size)`` tensor of ``like``'s dtype and device,
    or a fresh one if None (for callers that reuse work space between calls)."""
    if given is None:
        return torch.empty(size, size, dtype=like.dtype, device=like.device)
    if given.shape != (size, size) or given.dtype != like.dtype or given.device != like.device or not given.is_contiguous():
        raise ShapeError(
            f"{where}: {name} must be a contiguous ({size}, {size}) tensor of {like.dtype} on {like.device}, "
            f"got {tuple(given.shape)} {given.dtype} on {given.device}"
        )
    return given


def symmetric_matvec(gram: Matrix, v: Vector) -> Vector:
    """``G v`` for a symmetric ``G`` given by its upper triangle (the strict lower triangle is not
    read on the CPU: BLAS ``symv``; elsewhere ``G @ v``, which needs all of ``G``). Pairs with
    :func:`~collapselab.flows.gram.relu_gram`'s ``upper_only``."""
    if not uses_lapack(gram):
        return gram @ v
    a = gram.detach().numpy()
    symv = get_blas_funcs("symv", (a,))
    return torch.from_numpy(symv(1.0, a.T, v.detach().numpy(), lower=1)).to(v.dtype)  # a.T's lower = a's upper


def cholesky_solve(gram: Matrix, v: Vector, rtol: float | None = None) -> Vector | None:
    """``G^{-1} v`` by Cholesky, or ``None`` if ``G`` is not numerically positive definite.

    Declines (returns ``None``) when the factorisation fails or when the smallest squared
    pivot of ``L`` is below ``rtol * max`` squared pivot (default ``n * eps``); the
    squared pivot ratio bounds ``1 / cond(G)`` from above, so an accepted ``G`` has
    condition number at least that large and a declined one may be singular.
    On the CPU the factorisation is LAPACK ``potrf``/``potrs`` through SciPy (OpenBLAS:
    measured 1.7x faster than ``torch.linalg.cholesky`` for ``n = 1024``, one thread), which
    reads only the upper triangle of ``G``; on other devices ``torch.linalg.cholesky_ex``.
    """
    tol = default_rtol(gram.shape[0], gram.dtype) if rtol is None else rtol
    if uses_lapack(gram):
        a = gram.detach().numpy()
        potrf, potrs = get_lapack_funcs(("potrf", "potrs"), (a,))
        factor, info = potrf(a.T, lower=True, clean=False)  # a.T: the same symmetric matrix, Fortran order
        if info != 0:
            return None
        piv = np.diagonal(factor) ** 2
        if not np.isfinite(piv).all() or piv.min() <= tol * piv.max():
            return None
        x, info = potrs(factor, v.detach().numpy(), lower=True)
        return torch.from_numpy(x).to(v.dtype) if info == 0 else None
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return None
    piv = torch.diagonal(chol).square()
    if not bool(torch.isfinite(piv).all()) or float(piv.min()) <= tol * float(piv.max()):
        return None
    return torch.cholesky_solve(v.unsqueeze(1), chol).squeeze(1)


def least_squares_solve(gram: Matrix, v: Vector, rtol: float | None = None, *, try_cholesky: bool = True) -> tuple[Vector, int]:
    """``(psi, rank G)`` with ``G psi = P v`` (a least-squares solution), ``G`` symmetric PSD ``(n, n)``.

    For ``G = D D^T`` every least-squares solution gives the same ``D^T psi = D^+ v``
    (they differ by ``ker G = ker D^T``), which is all the adapted step needs; the
    minimum-norm one is ``P psi`` (:class:`GramSolve` computes ``G^+ v`` directly).
    ``rtol``: relative cutoff (default ``n * eps``).

    First a plain :func:`cholesky_solve` (rank ``n``), unless ``try_cholesky=False``. If it
    declines, on the CPU: Cholesky with complete pivoting (LAPACK ``pstrf`` via scipy),
    stopping at the first pivot below ``rtol * max diag G``: ``G[pi][:, pi] = L L^T``
    with ``L = [L_11; L_21]`` (``L_11`` ``r x r`` lower triangular). With
    ``B = L_21 L_11^{-1}`` the least-squares problem ``min |L w - v|`` becomes
    ``(1 + B^T B) u = v_1 + B^T v_2``, ``u = L_11 w``, solved through the
    ``(n - r) x (n - r)`` matrix ``1 + B B^T`` (Woodbury); then ``psi = [L_11^{-T} w; 0]``
    solves ``L^T psi = w``. Cost: one pivoted Cholesky plus ``O((n - r) r^2)``.
    Other devices: :class:`GramSolve` (``eigh``). On the CPU only the upper triangle of ``G``
    is read.
    """
    n = gram.shape[0]
    tol = default_rtol(n, gram.dtype) if rtol is None else rtol
    if try_cholesky:
        psi = cholesky_solve(gram, v, tol)  # the common full-rank case: plain Cholesky is fastest
        if psi is not None:
            return psi, n
    if gram.device.type != "cpu":
        solve = GramSolve.from_gram(gram, tol)
        return solve.pinv(v), solve.rank
    a = gram.detach().numpy()
    (pstrf,) = get_lapack_funcs(("pstrf",), (a,))
    # a.T (Fortran order, no copy): its lower triangle is a's upper triangle, all that is read
    factor, piv, rank, _ = pstrf(a.T, tol=tol * float(np.max(np.diag(a))), lower=1)
    perm = piv - 1  # pi as an index array
    vp = v.detach().numpy()[perm]
    L11, L21 = np.tril(factor[:rank, :rank]), factor[rank:, :rank]
    B = solve_triangular(L11, L21.T, lower=True, trans="T").T  # B L_11 = L_21
    rhs = vp[:rank] + B.T @ vp[rank:]
    u = rhs - B.T @ cho_solve(cho_factor(np.eye(n - rank) + B @ B.T), B @ rhs) if rank < n else rhs
    w = solve_triangular(L11, u, lower=True)
    psi = np.zeros(n)
    psi[perm[:rank]] = solve_triangular(L11, w, lower=True, trans="T")
    return torch.from_numpy(psi).to(v.dtype), int(rank)


DEFAULT_SHIFT = 1e-6
"""Default relative shift ``sigma / max diag G`` of :class:`LowPrecisionCholesky`: about 16 float32
units of roundoff, above the backward error of a float32 Cholesky of a well-scaled Gram (so the
factorisation succeeds even for a singular ``G``, and the refinement contracts on every
eigendirection), and small enough that the refinement contracts by at least 1/2 per sweep on
eigenvalues ``>= sigma``. Measured on the adapted-flow benchmark (docs/benchmarks/performance.md): trying the unshifted Gram first
gave no fewer steps and cost a failed factorisation where it turns singular (sixth step,
``cond G ~ 1e8``): starting shifted was 5-10% faster."""


@dataclass(frozen=True)
class LowPrecisionCholesky:
    """Cholesky factor of ``G + sigma I`` in float32, for solving float64 systems by refinement.

    ``G`` symmetric PSD, given by its upper triangle (the strict lower triangle is not read).
    :meth:`of` factorises ``G + sigma I`` with ``sigma = shift * max diag G``, raising
    ``shift`` tenfold (up to ``max_shift``) while the float32 factorisation fails. On the CPU
    LAPACK ``potrf``/``potrs`` through SciPy, elsewhere ``torch.linalg.cholesky_ex``.
    :meth:`solve` maps a float64 ``v`` to ``(G + sigma I)^{-1} v`` (float32 accuracy) in float64;
    :func:`refined_pullback` turns that into a float64-accurate solve for ``G``.
    """

    factor: torch.Tensor | np.ndarray
    shift: float  # the relative shift used (0: G itself)
    sigma: float  # the absolute shift shift * max diag G

    @classmethod
    def of(cls, gram: Matrix, shift: float = DEFAULT_SHIFT, *, max_shift: float = 1e-2, work: Matrix | None = None) -> "LowPrecisionCholesky":
        """Factorise ``gram`` (any float dtype; cast to float32) with ``shift``, or ten, hundred, ...
        times more while the factorisation fails (``shift=0``: first try ``G`` itself).

        ``work``: a contiguous float32 ``(n, n)`` tensor on the CPU to factorise in (overwritten, and
        then held as the factor), saving a fresh ``n x n`` buffer per factorisation."""
        g32 = gram.detach().to(torch.float32)
        scale = float(torch.diagonal(g32).max()) if g32.shape[0] else 0.0
        if not np.isfinite(scale):
            raise ParameterError("LowPrecisionCholesky: the Gram matrix is not finite")
        while True:
            factor = cls._factorise(g32, shift * scale, work)
            if factor is not None:
                return cls(factor, shift, shift * scale)
            shift = max(DEFAULT_SHIFT, 10.0 * shift)
            if shift > max_shift:
                raise ParameterError(f"LowPrecisionCholesky: G + sigma I is not positive definite in float32 even at sigma = {max_shift:g} max diag G")

    @staticmethod
    def _factorise(g32: torch.Tensor, sigma: float, work: Matrix | None) -> torch.Tensor | np.ndarray | None:
        if uses_lapack(g32):
            work = square_buffer(work, g32.shape[0], g32, "work", "LowPrecisionCholesky")
            work.copy_(g32)
            a = work.numpy().T  # Fortran order: its lower triangle is G's upper triangle, all that is read
            a[np.diag_indices_from(a)] += sigma
            (potrf,) = get_lapack_funcs(("potrf",), (a,))
            factor, info = potrf(a, lower=True, clean=False, overwrite_a=True)
            return factor if info == 0 and np.isfinite(np.diagonal(factor)).all() else None
        a = torch.triu(g32) + torch.triu(g32, diagonal=1).T  # symmetric from the upper triangle
        chol, info = torch.linalg.cholesky_ex(a + sigma * torch.eye(a.shape[0], dtype=a.dtype, device=a.device))
        return chol if int(info) == 0 and bool(torch.isfinite(torch.diagonal(chol)).all()) else None

    def solve(self, v: Vector) -> Vector:
        """``(G + sigma I)^{-1} v`` computed in float32, returned in ``v``'s dtype."""
        if isinstance(self.factor, np.ndarray):
            (potrs,) = get_lapack_funcs(("potrs",), (self.factor,))
            x, _ = potrs(self.factor, v.detach().to(torch.float32).numpy(), lower=True)
            return torch.from_numpy(x).to(v.dtype)
        return torch.cholesky_solve(v.detach().to(torch.float32).unsqueeze(1), self.factor).squeeze(1).to(v.dtype)


def refined_pullback(
    solve: Callable[[Vector], Vector],
    pullback: Callable[[Vector], Theta],
    push: Callable[[Theta], Vector],
    r: Vector,
    *,
    rtol: float = 1e-3,
    max_refinements: int = 10,
) -> tuple[Theta, float, int]:
    """``d = D^T psi`` with ``D d = r`` to relative residual ``rtol``, by iterative refinement.

    Mixed-precision iterative refinement (Higham, *Accuracy and Stability of Numerical
    Algorithms*, 2nd ed., ch. 12) of ``G psi = r``, ``G = D D^T``: ``psi_0 = M r`` and
    ``psi_{k+1} = psi_k + M (r - D D^T psi_k)`` with ``M`` an approximate inverse of ``G``
    (``solve``: a float32 factor of ``G`` or ``G + sigma I``, :class:`LowPrecisionCholesky`)
    and the residual ``e_k = r - D d_k``, ``d_k = D^T psi_k``, computed in the working
    precision by ``pullback`` (``u -> D^T u``) and ``push`` (``v -> D v``). Every ``d_k`` lies in
    ``ran D^T``, so ``d_k`` is the minimum-norm solution of ``D d = r - e_k``: the exact
    adapted (Gauss-Newton) step for a target moved by ``e_k``. The error contracts by about
    ``sigma / (lambda + sigma) + cond(G) u_32`` per sweep on an eigendirection of ``G`` with
    eigenvalue ``lambda``; components of ``r`` outside ``ran G`` stay in ``e_k``.

    Stops when ``|e_k| <= rtol |r|``, when a correction changes the residual by at most
    ``|e_{k+1}| / 10`` (a contraction slower than about 0.9 per sweep: what is left lies
    mostly outside ``ran G``, or below the shift), when a correction does not decrease
    ``|e_k|`` (the factor is too inaccurate; the previous iterate is kept), or after
    ``max_refinements`` corrections. Returns ``(d, |e| / |r|, corrections)``.
    """
    rnorm = float(torch.linalg.vector_norm(r))
    if rnorm == 0.0:
        return pullback(torch.zeros_like(r)), 0.0, 0
    d = pullback(solve(r))
    e = r - push(d)
    enorm = float(torch.linalg.vector_norm(e))
    done = 0
    while enorm > rtol * rnorm and done < max_refinements:
        d_new = d + pullback(solve(e))
        e_new = r - push(d_new)
        new_norm = float(torch.linalg.vector_norm(e_new))
        done += 1
        if new_norm >= enorm:
            break
        change = float(torch.linalg.vector_norm(e_new - e))
        d, e, enorm = d_new, e_new, new_norm
        if change <= 0.1 * new_norm:
            break
    return d, enorm / rnorm, done


def cg_solve(matvec: Callable[[Vector], Vector], v: Vector, *, rtol: float = 1e-12, max_iter: int = 1000) -> tuple[Vector, int, float]:
    """Conjugate gradients for ``G psi = v`` with ``G`` symmetric PSD given as ``u -> G u``.

    Started at ``0``, the iterates stay in ``ran G`` (Krylov space of ``v``), so for
    consistent ``v`` the limit is the minimum-norm solution ``G^+ v``. Stops when
    ``|v - G psi| <= rtol |v|`` or after ``max_iter`` products.
    Returns ``(psi, iterations, relative residual)``.
    """
    x = torch.zeros_like(v)
    r = v.clone()
    p = r.clone()
    rr = torch.dot(r, r)
    stop = (rtol * torch.linalg.vector_norm(v)) ** 2
    it = 0
    while it < max_iter and float(rr) > float(stop):
        gp = matvec(p)
        curvature = torch.dot(p, gp)
        if float(curvature) <= 0.0:  # p in ker G: no further progress in ran G
            break
        a = rr / curvature
        x += a * p
        r -= a * gp
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
    vnorm = float(torch.linalg.vector_norm(v))
    return x, it, (float(rr.sqrt()) / vnorm if vnorm > 0 else 0.0)
