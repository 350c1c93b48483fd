"""Neural-collapse formulas on class-level statistics (Papyan, Han & Donoho 2020 = PHD, NC1-NC4;
Galanti et al. 2022, CDNV; Ji et al. 2022, ULPM quantities; docs/theory/neural-collapse.md).
The pairwise (C x C) metrics live in ``_pairwise.py`` (computed in row tiles) and are
re-exported here. Pure functions of tensors: no data passes, no checks (the public functions in
``_functions.py`` and the streaming accumulator validate).

Notation: ``C`` classes, features in ``R^d``; ``Mc`` (C, d) centred class means
``mu_c - mu_G``; ``W`` (C, d) classifier rows ``w_c``; ``mom`` the class moments.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._moments import ClassMoments
from ._pairwise import cdnv_pairs, equiangularity, etf_error, self_duality_error

__all__ = [
    "default_rtol",
    "row_basis",
    "nc1_span",
    "nc1_trace_ratio",
    "cdnv_pairs",
    "equinorm",
    "equiangularity",
    "etf_error",
    "nc3_distance",
    "self_duality_error",
    "row_space_angles",
    "bias_collapse_norm",
    "ulpm_self_duality",
    "nc_margin_bound",
    "MSEDecomposition",
    "mse_decomposition_terms",
]


def default_rtol(num_classes: int, dim: int) -> float:
    """Relative singular-value cut for the rank of ``M~``: ``max(C, d) * eps`` (numpy's
    ``matrix_rank`` convention). A direction with ``s_k <= rtol * s_max`` is not separated
    by the class means at working precision."""
    return max(num_classes, dim) * torch.finfo(torch.float64).eps


def row_basis(X: torch.Tensor, rtol: float, *, null: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin SVD of ``X`` (C, d) cut at ``s_k > rtol * s_1``: returns ``(s (r,), V (d, r))``,
    an orthonormal basis of the row space and its singular values (r = 0 for ``X = 0``).

    ``null`` (C,) declares an exact left null vector, ``null^T X = 0`` (class means centred at
    their unweighted mean: ones; at the sample mean: the counts). A Householder reflection
    ``Q`` with ``Q null ~ e_1`` then maps ``X`` to ``Q X`` whose first row is 0, and the SVD
    runs on the other ``C - 1`` rows (same singular values and right vectors): LAPACK's
    divide-and-conquer SVD can take ~100x longer on a matrix with a singular value at rounding
    level, which the exact null direction creates. The SVD runs on the tall orientation
    (faster on CPU)."""
    if null is not None and X.shape[0] > 1:
        v = (null / null.norm()).to(X).unsqueeze(1)
        v[0] -= 1.0
        vv = float((v * v).sum())
        if vv > 0.0:
            X = (X - (2.0 / vv) * v @ (v.T @ X))[1:]
    if X.shape[0] < X.shape[1]:
        u, s, _ = torch.linalg.svd(X.T, full_matrices=False)
        vh = u.T
    else:
        _, s, vh = torch.linalg.svd(X, full_matrices=False)
    keep = s > rtol * s[0] if s.numel() and float(s[0]) > 0.0 else torch.zeros_like(s, dtype=torch.bool)
    return s[keep], vh[keep].T


def nc1_span(mom: ClassMoments, s: torch.Tensor, v: torch.Tensor) -> float:
    """``NC1 = Tr(Sigma_W Sigma_B^+) / C`` in the span of ``M~`` (PHD 2020, Fig. 6; docs/theory/neural-collapse.md).

    With ``M~ = U S V^T`` cut at rank ``r`` (:func:`row_basis`), ``Sigma_B = M~^T M~ / C`` gives
    ``Sigma_B^+ = C V S^-2 V^T`` and ``NC1 = sum_k v_k^T Sigma_W v_k / s_k^2``: ``r x r``
    algebra, no ``d x d`` pseudo-inverse, and ``Sigma_W`` is needed only on ``span M~``
    (:meth:`ClassMoments.within_quadratic`). ``inf`` when all class means coincide (r = 0).
    s: (r,), v: (d, r).
    """
    if s.numel() == 0:
        return math.inf
    return float((mom.within_quadratic(v) / s**2).sum())


def nc1_trace_ratio(mom: ClassMoments, centred: torch.Tensor) -> float:
    """``Tr Sigma_W / Tr Sigma_B`` with ``Tr Sigma_B = |M~|_F^2 / C`` (``nc1_variant="trace_ratio"``;
    docs/theory/neural-collapse.md)."""
    tb = (centred * centred).sum() / centred.shape[0]
    return float(mom.within_trace() / tb) if float(tb) > 0 else math.inf


def equinorm(rows: torch.Tensor) -> float:
    """NC2 equinorm: ``std/mean`` of the row norms, std with Bessel correction (torch.std)."""
    norms = rows.norm(dim=1)
    return float(norms.std() / norms.mean())


def nc3_distance(W: torch.Tensor, centred: torch.Tensor) -> float:
    """``NC3 = || W/|W|_F - M~/|M~|_F ||_F^2`` (PHD 2020, squared)."""
    return float((W / W.norm() - centred / centred.norm()).pow(2).sum())


def row_space_angles(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between two subspaces of ``R^d`` given by
    orthonormal bases ``qa`` (d, ra), ``qb`` (d, rb) (:func:`row_basis`); ``min(ra, rb)`` of
    them. With ``qb`` the smaller, cosines are the singular values of ``qa^T qb`` and sines
    those of ``(I - qa qa^T) qb``; the angle is ``atan2(sin, cos)``, accurate for small angles
    where ``arccos`` alone loses half the digits (Knyazev and Argentati 2002)."""
    if qb.shape[1] > qa.shape[1]:
        qa, qb = qb, qa
    cos = torch.sort(torch.linalg.svdvals(qa.T @ qb), descending=True).values.clamp(0.0, 1.0)
    sin = torch.sort(torch.linalg.svdvals(qb - qa @ (qa.T @ qb))).values.clamp(0.0, 1.0)
    return torch.atan2(sin, cos)


def bias_collapse_norm(W: torch.Tensor, bias: torch.Tensor | None, global_mean: torch.Tensor) -> float:
    """``|W mu_G + b|`` (PHD 2020 "bias collapse"; ``b = 0`` when absent)."""
    v = W @ global_mean
    return float((v if bias is None else v + bias).norm())


def ulpm_self_duality(W: torch.Tensor, centred: torch.Tensor) -> float:
    """ULPM quantity (4): ``Avg_c | (mu_c - mu_G)/|mu_c - mu_G| - w_c/|w_c| |`` (Ji et al. 2022, Sec. 4)."""
    a = centred / centred.norm(dim=1, keepdim=True)
    b = W / W.norm(dim=1, keepdim=True)
    return float((a - b).norm(dim=1).mean())


def nc_margin_bound(W: torch.Tensor, feature_norm_sq: torch.Tensor, num_classes: int, num_samples: int) -> float:
    """Upper bound on the NC margin ``q_min``: ``(|W|_F^2 + |H|_F^2) / (2 (K-1) sqrt(n))``
    (Ji et al. 2022, Lemma 3.1; equality iff neural collapse with ``|w_c|^2 = n |h|^2``). The lemma
    assumes ``n`` samples per class; here ``n = N / K`` (exact for balanced data)."""
    n = num_samples / num_classes
    return float(((W * W).sum() + feature_norm_sq) / (2.0 * (num_classes - 1) * math.sqrt(n)))


class MSEDecomposition(NamedTuple):
    """HPD 2022 decomposition of the regularised MSE loss: ``total = nc1 + nc2_3 + perp``."""

    nc1: float
    nc2_3: float
    perp: float
    total: float


def mse_decomposition_terms(
    mom: ClassMoments, W: torch.Tensor, bias: torch.Tensor | None, weight_decay: float, targets: torch.Tensor
) -> MSEDecomposition:
    """Han, Papyan, Donoho (ICLR 2022), Sec. 3, for per-sample weighting (= HPD's class average
    on balanced data).

    Loss ``L(W, b) = (1/2N) sum_i |W h_i + b - y_{c_i}|^2 + (lam/2)(|W|_F^2 + |b|^2)`` with
    ``lam = weight_decay`` (torch's ``weight_decay`` on W and b, so ``lambda =
    weight_decay/2`` is the coefficient of ``|W|_F^2``). With ``(W_LS, b_LS)`` the ridge
    least-squares classifier of the features:

    * ``L_NC1 = (1/2) Tr(W_LS (Sigma_W + lam I) W_LS^T)``,
    * ``L_NC2/3 = (1/2N) sum_c N_c |W_LS mu_c + b_LS - y_c|^2 + (lam/2) |b_LS|^2``,
    * ``L_perp = (1/2) Tr(D (A + lam I) D^T)``, ``D = [W - W_LS, b - b_LS]``,
      ``A = (1/N) sum_i [h_i; 1][h_i; 1]^T``,

    Without a bias (``bias=None``) the classifier and ``(W_LS)`` have none and the ``b`` terms
    vanish. Each term is computed from its own formula (the sum equals ``L(W, b)`` exactly, which tests check
    against the loss evaluated on the raw features). targets: (C, P), row ``c`` is ``y_c``.
    """
    n = mom.counts.to(mom.means.dtype)
    p = n / n.sum()
    mu = mom.means
    d = mom.dim
    lam = float(weight_decay)
    fit_bias = bias is not None
    aug_mu = torch.cat([mu, torch.ones_like(mu[:, :1])], 1) if fit_bias else mu  # (C, d+1) or (C, d)
    k = aug_mu.shape[1]
    A = (aug_mu.T * p) @ aug_mu
    A[:d, :d] += mom.sigma_w
    R = A + lam * torch.eye(k, dtype=A.dtype, device=A.device)
    Bm = (targets.T * p) @ aug_mu  # (P, k) = (1/N) sum_i y_i [h_i; 1]^T
    Wt_ls = torch.linalg.solve(R, Bm.T).T  # R is symmetric
    W_ls = Wt_ls[:, :d]
    b_ls = Wt_ls[:, d] if fit_bias else torch.zeros_like(Wt_ls[:, 0])
    l_nc1 = 0.5 * torch.trace(W_ls @ (mom.sigma_w + lam * torch.eye(d, dtype=A.dtype, device=A.device)) @ W_ls.T)
    resid = mu @ W_ls.T + b_ls - targets
    l_nc23 = 0.5 * (p * (resid * resid).sum(1)).sum() + 0.5 * lam * (b_ls * b_ls).sum()
    D = torch.cat([W - W_ls, (bias - b_ls).unsqueeze(1)], 1) if fit_bias else W - W_ls
    l_perp = 0.5 * torch.trace(D @ R @ D.T)
    total = l_nc1 + l_nc23 + l_perp
    return MSEDecomposition(float(l_nc1), float(l_nc23), float(l_perp), float(total))
