"""Theorem 3 of Rangamani et al. 2021 at the last layer, and the global optimum of the MSE unconstrained-features model.

Convention (Rangamani et al. 2021 Theorem 3 proof, kept here): the SUMMED half-square loss with half
weight decay, ``(1/2) sum_n |W h_n + b - y_n|^2 + (lam/2) |W|_F^2`` over ``C`` balanced classes
of ``N`` samples each (``CN`` samples, one-hot ``y_n``); the bias ``b`` is NOT penalised.
(PyTorch ``weight_decay=wd`` on this summed loss is ``lam = wd``.)

Theorem 3 (symmetric quasi-interpolation ``f^c(x_c) = 1 - eps``, ``f^{c'}(x_c) = eps/(C-1)`` on
collapsed features ``h = mu_c``) predicts ``W^c = C N eps / (lam (C-1)) (mu_c - mu_G)``,
``|W^c|^2 = (N/lam)(eps - C eps^2/(C-1))``, ``cos(W^c, W^c') = -1/(C-1)`` and (eq. 35)
``<W^c, mu_G> + b_c = 1/C``. Erratum E-3 (docs/theory/square-loss.md): this needs the
unpenalised bias; without it ``sum_c W^c = 0`` contradicts outputs summing to 1, and the
bias-free least-squares solution does not quasi-interpolate symmetrically
(:func:`theorem3_check` then fails, as it must).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.data import simplex_etf
from ..core.errors import AssumptionError, ShapeError
from ..core.validation import check_matrix
from ._common import check_count, check_scalar

__all__ = [
    "collapsed_ridge",
    "Theorem3Check",
    "theorem3_check",
    "UFMOptimum",
    "ufm_mse_optimum",
    "ufm_mse_loss",
    "ufm_mse_point",
]


def collapsed_ridge(means: torch.Tensor, num_per_class: int, lam: float, *, bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer minimiser of the Theorem 3 loss on collapsed features (``h_n = mu_{y_n}``).

    means: ``(C, d)`` class means; every class has ``N = num_per_class`` samples. Returns
    ``(W (C, d), b (C,))``. With ``bias=True`` the bias is unpenalised:
    ``W = N (N Mc Mc^T + lam I)^{-1} Mc`` with ``Mc = means - mu_G`` and ``b = 1/C - W mu_G``
    (normal equations of the centred problem, C x C solve by the push-through identity).
    With ``bias=False`` (``b = 0``): ``W = N (N M M^T + lam I)^{-1} M``.
    """
    where = "collapsed_ridge"
    M = check_matrix(means, "means", where)
    N = check_count("num_per_class", num_per_class, where)
    lam = check_scalar("lam", lam, where, low=0.0, closed="neither")
    C = M.shape[0]
    eye = torch.eye(C, dtype=M.dtype, device=M.device)
    mu_G = M.mean(dim=0)
    A = M - mu_G if bias else M
    W = N * torch.linalg.solve(N * A @ A.T + lam * eye, A)
    b = (1.0 / C - W @ mu_G) if bias else torch.zeros(C, dtype=M.dtype, device=M.device)
    return W, b


@dataclass(frozen=True)
class Theorem3Check:
    """Residuals of Theorem 3's conclusions for a last layer ``(W, b)`` on collapsed features.

    eps: the gap ``1 - mean_c f^c(mu_c)``; quasi_interpolation: max deviation of the
    outputs from the symmetric pattern ``(1 - eps, eps/(C-1))``; proportionality:
    ``|W - k (means - mu_G)|_F / |W|_F`` with ``k = C N eps / (lam (C-1))`` (eq. 33);
    norm: max relative deviation of ``|W^c|^2`` from ``(N/lam)(eps - C eps^2/(C-1))`` (eq. 34);
    cosine: max ``|cos(W^c, W^c') + 1/(C-1)|`` (eq. 36); eq35: max ``|<W^c, mu_G> + b_c - 1/C|``;
    sum: ``|sum_c W^c| / |W|_F``.
    """

    eps: float
    quasi_interpolation: float
    proportionality: float
    norm: float
    cosine: float
    eq35: float
    sum: float

    def max_residual(self) -> float:
        """The largest residual (every one is 0 when Theorem 3's conclusions hold)."""
        return max(self.quasi_interpolation, self.proportionality, self.norm, self.cosine, self.eq35, self.sum)


def theorem3_check(W: torch.Tensor, b: torch.Tensor, means: torch.Tensor, num_per_class: int, lam: float) -> Theorem3Check:
    """Evaluate Theorem 3 (Rangamani et al. 2021 sec. 6, eqs. 33-36) on a last layer and collapsed means.

    W: ``(C, d)``; b: ``(C,)`` (zeros for a bias-free layer); means: ``(C, d)``. Returns the
    residuals of each conclusion (:class:`Theorem3Check`); with the bias of
    :func:`collapsed_ridge` on ETF-shaped means all vanish to rounding, without it they
    do not (erratum E-3).
    """
    where = "theorem3_check"
    means = check_matrix(means, "means", where)
    C, d = means.shape
    if C < 2:
        raise ShapeError(f"{where}: need at least 2 classes, got {C}")
    W = check_matrix(W, "W", where, shape=(C, d), device=means.device)
    b = torch.as_tensor(b, dtype=torch.float64, device=means.device).reshape(-1)
    if b.shape != (C,):
        raise ShapeError(f"{where}: b must have shape ({C},), got {tuple(b.shape)}")
    N = check_count("num_per_class", num_per_class, where)
    lam = check_scalar("lam", lam, where, low=0.0, closed="neither")
    out = means @ W.T + b  # out[c, j] = f^j(mu_c)
    eps = 1.0 - float(out.diagonal().mean())
    eye = torch.eye(C, dtype=W.dtype, device=W.device)
    target = eye * (1.0 - eps) + (1 - eye) * (eps / (C - 1))
    mu_G = means.mean(dim=0)
    k = C * N * eps / (lam * (C - 1))
    wn = torch.linalg.vector_norm(W)
    row_sq = W.square().sum(dim=1)
    predicted_sq = (N / lam) * (eps - C * eps**2 / (C - 1))
    cos = (W @ W.T) / torch.outer(row_sq.sqrt(), row_sq.sqrt())
    off = ~torch.eye(C, dtype=torch.bool, device=W.device)
    return Theorem3Check(
        eps=eps,
        quasi_interpolation=float((out - target).abs().max()),
        proportionality=float(torch.linalg.vector_norm(W - k * (means - mu_G)) / wn),
        norm=float(((row_sq - predicted_sq) / row_sq).abs().max()),
        cosine=float((cos[off] + 1.0 / (C - 1)).abs().max()),
        eq35=float((W @ mu_G + b - 1.0 / C).abs().max()),
        sum=float(torch.linalg.vector_norm(W.sum(dim=0)) / wn),
    )


@dataclass(frozen=True)
class UFMOptimum:
    """Global optimum of the MSE unconstrained-features model (see :func:`ufm_mse_optimum`).

    eps: interpolation gap; feature_norm_sq: ``|mu_c - mu_G|^2`` per class; classifier_norm_sq:
    ``|W^c|^2``; loss: the optimal value; collapsed: False when ``lam >= sqrt(N)`` (then
    ``W = H = 0`` and ``b = 1/C``).
    """

    eps: float
    feature_norm_sq: float
    classifier_norm_sq: float
    loss: float
    collapsed: bool


def ufm_mse_optimum(num_classes: int, num_per_class: int, lam: float) -> UFMOptimum:
    """Closed-form optimum of ``(1/2) sum_n |W h_n + b - y_n|^2 + (lam/2)(|W|^2 + |H|^2)``.

    docs/theory/square-loss.md: for ``lam < sqrt(N)`` the optimum is collapsed with
    ``eps* = lam (C-1) / (C sqrt N)``, ``W^c = sqrt(N) (mu_c - mu_G)``, ``mu_G = 0``,
    ``b = 1/C`` and ``<W^c, mu_c - mu_G> = p = (C-1)/C - eps*``; the loss is
    ``C^2 N eps*^2 / (2 (C-1)) + lam C sqrt(N) p``. (Derivation: per class the squared
    residual is ``C eps^2/(C-1)``; for fixed ``p = a b`` the penalty ``C a^2 + C N b^2`` is
    minimal, ``2 C sqrt(N) p``, at ``a = sqrt(N) b``.) For ``lam >= sqrt(N)`` the optimum is
    ``W = H = 0`` with loss ``N (C-1)/2``. Needs ``d >= C - 1`` for the simplex (not checked here).
    """
    where = "ufm_mse_optimum"
    C = check_count("num_classes", num_classes, where, low=2)
    N = check_count("num_per_class", num_per_class, where)
    lam = check_scalar("lam", lam, where, low=0.0, closed="neither")
    root = math.sqrt(N)
    if lam >= root:
        return UFMOptimum((C - 1) / C, 0.0, 0.0, N * (C - 1) / 2.0, False)
    eps = lam * (C - 1) / (C * root)
    p = (C - 1) / C - eps
    b_sq = p / root  # |mu_c - mu_G|^2, with a = sqrt(N) b and a b = p
    loss = C * C * N * eps**2 / (2.0 * (C - 1)) + lam * C * root * p
    return UFMOptimum(eps, b_sq, N * b_sq, loss, True)


def ufm_mse_loss(W: torch.Tensor, b: torch.Tensor, H: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1/2) sum_n |W h_n + b - y_n|^2 + (lam/2)(|W|_F^2 + |H|_F^2)`` (differentiable).

    W: ``(C, d)``; b: ``(C,)``; H: ``(n_total, d)`` one feature per row; labels: ``(n_total,)``.
    """
    Y = torch.nn.functional.one_hot(labels.long(), W.shape[0]).to(W.dtype)
    return 0.5 * (H @ W.T + b - Y).square().sum() + 0.5 * lam * (W.square().sum() + H.square().sum())


def ufm_mse_point(num_classes: int, num_per_class: int, dim: int, lam: float, *, seed: int | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The collapsed optimum of :func:`ufm_mse_optimum` as arrays ``(W, b, H, labels)``.

    Class means ``sqrt(feature_norm_sq) e_c`` on a simplex ETF ``e`` in ``R^dim`` (``dim >= C - 1``, else
    :class:`AssumptionError`), ``W^c = sqrt(N) mu_c``, ``b = 1/C``; H ``(C N, dim)`` class-major.
    """
    where = "ufm_mse_point"
    C = check_count("num_classes", num_classes, where, low=2)
    N = check_count("num_per_class", num_per_class, where)
    if check_count("dim", dim, where) < C - 1:
        raise AssumptionError(f"{where}: a simplex of {C} classes needs dim >= {C - 1}, got dim={dim}")
    opt = ufm_mse_optimum(C, N, lam)
    E = simplex_etf(C, dim, seed=seed, dtype=dtype, device=device)
    means = math.sqrt(opt.feature_norm_sq) * E
    labels = torch.arange(C, device=means.device).repeat_interleave(N)
    b = torch.full((C,), 1.0 / C, dtype=dtype, device=means.device)
    return math.sqrt(N) * means, b, means[labels], labels
