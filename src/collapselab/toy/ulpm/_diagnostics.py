"""Diagnostics of a ULPM point ``(W, H)``: neural-collapse quantities, NC margin, alignment, KKT.

Ji et al. 2022 sections 3.1 and 4; definitions as in docs/theory/neural-collapse.md ("ULPM quantities").
Layout as :mod:`collapselab.toy.ulpm._loss`: ``W (K, d)``, ``H (d, n K)`` class-major.
The figure quantities are computed here in one batched pass over the ``(K, n, d)``
features, cheap enough for every recorded step of a 1e5-step run; they follow the
canonical definitions of docs/theory/neural-collapse.md (std with Bessel correction, unweighted
global mean ``mu_G``, classifier rows not centred). ``collapselab.collapse.collapse_report``
computes the same numbers through its streaming statistics (a heavier, general path);
the tests check that the two agree to 1e-10.
"""

from __future__ import annotations

import math

import torch

from ...core.errors import AssumptionError
from .._common import check_reduction
from ._loss import check_ulpm, residual_gradients, scaled_residual, ulpm_targets

__all__ = [
    "FIGURE_QUANTITIES",
    "figure_quantities",
    "nc_margin",
    "nc_margin_bound",
    "alignment",
    "approximate_kkt",
    "ulpm_diagnostics",
]

FIGURE_QUANTITIES = (
    "feature_norm_variation",
    "classifier_norm_variation",
    "within_class_variation",
    "feature_cosine",
    "classifier_cosine",
    "self_duality",
)
"""Names of the six curves of Ji et al. 2022 Figure 2 (panels a: first two, b, c: next two, d)."""


def _pairwise_cosine_error(rows: torch.Tensor) -> torch.Tensor:
    """``mean_{c != c'} |cos(r_c, r_c') + 1/(K-1)|`` for rows ``(K, d)``."""
    K = rows.shape[0]
    u = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    off = ~torch.eye(K, dtype=torch.bool, device=rows.device)
    return ((u @ u.T)[off] + 1.0 / (K - 1)).abs().mean()


def _norm_variation(rows: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(rows, dim=1)
    return n.std() / n.mean()


def figure_quantities(W: torch.Tensor, H: torch.Tensor) -> dict[str, float]:
    """The four quantities of Ji et al. 2022 Figure 2 (six curves, names in :data:`FIGURE_QUANTITIES`).

    (1) ``Std/Avg |mu_c - mu_G|`` and ``Std/Avg |w_c|``; (2) ``Avg |h_{c,i} - mu_c| /
    Avg |h_{c,i} - mu_G|``; (3) ``Avg_{c != c'} |cos + 1/(K-1)|`` of the centred means and of
    the ``w_c``; (4) ``Avg_c |(mu_c - mu_G)/|mu_c - mu_G| - w_c/|w_c||``. All vanish at
    neural collapse.
    """
    W, H, n = check_ulpm(W, H, "figure_quantities")
    K, d = W.shape
    feats = H.T.reshape(K, n, d)
    means = feats.mean(dim=1)
    mu_G = means.mean(dim=0)
    centred = means - mu_G
    within = torch.linalg.vector_norm(feats - means[:, None, :], dim=2).mean()
    total = torch.linalg.vector_norm(feats - mu_G, dim=2).mean()
    unit_m = centred / torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    unit_w = W / torch.linalg.vector_norm(W, dim=1, keepdim=True)
    values = (
        _norm_variation(centred),
        _norm_variation(W),
        within / total,
        _pairwise_cosine_error(centred),
        _pairwise_cosine_error(W),
        torch.linalg.vector_norm(unit_m - unit_w, dim=1).mean(),
    )
    return {name: float(v) for name, v in zip(FIGURE_QUANTITIES, values)}


def _margins(W: torch.Tensor, H: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Z, own logits (N,), q_{k,i} (N,))`` with ``q = w_k^T h_{k,i} - max_{j != k} w_j^T h_{k,i}``."""
    Z = W @ H
    lab = torch.arange(W.shape[0], device=W.device).repeat_interleave(n)
    own = Z.gather(0, lab[None, :]).squeeze(0)
    others = Z.scatter(0, lab[None, :], float("-inf")).amax(dim=0)
    return Z, own, own - others


def nc_margin(W: torch.Tensor, H: torch.Tensor) -> float:
    """Neural-collapse margin ``q_min = min_{k,i} (w_k^T h_{k,i} - max_{j != k} w_j^T h_{k,i})`` (Ji et al. 2022 Def. 3.1)."""
    W, H, n = check_ulpm(W, H, "nc_margin")
    return float(_margins(W, H, n)[2].min())


def nc_margin_bound(W: torch.Tensor, H: torch.Tensor) -> float:
    """Lemma 3.1 (Ji et al. 2022): ``q_min <= (|W|_F^2 + |H|_F^2) / (2 (K-1) sqrt(n))``, equality iff collapse."""
    W, H, n = check_ulpm(W, H, "nc_margin_bound")
    return float((W.square().sum() + H.square().sum()) / (2 * (W.shape[0] - 1) * math.sqrt(n)))


def alignment(W: torch.Tensor, H: torch.Tensor) -> float:
    """``beta = <(W, H), -grad L> / (|(W, H)| |grad L|)``, the cosine with the descent direction.

    Ji et al. 2022 Lemma 3.2 prints it without the minus sign, which would make ``beta -> -1``;
    with the sign fixed (docs/theory/errata.md) ``beta -> 1`` along gradient flow (Lemma 3.3). The same for the
    summed and the mean loss (they differ by the positive factor ``N``), so it takes no ``reduction``.
    """
    W, H, n = check_ulpm(W, H, "alignment")
    G, _ = scaled_residual(W, H, ulpm_targets(W.shape[0], n, dtype=W.dtype, device=W.device), 1.0)
    gW, gH = residual_gradients(W, H, G)
    inner = -((W * gW).sum() + (H * gH).sum())
    norms = torch.sqrt(W.square().sum() + H.square().sum()) * torch.sqrt(gW.square().sum() + gH.square().sum())
    return float(inner / norms)


def approximate_kkt(W: torch.Tensor, H: torch.Tensor) -> tuple[float, float]:
    """``(eps, delta)`` of ``(W, H)/sqrt(q_min)`` as an approximate KKT point of problem (5).

    Problem (5) of Ji et al. 2022: ``min (|W|^2 + |H|^2)/2`` s.t. ``s_{kij} = (w_k - w_j)^T h_{k,i} >= 1``.
    A point ``z`` is ``(eps, delta)``-KKT (Dutta et al. 2013, as used by Ji et al. 2022 Lemma 3.2) if
    multipliers ``lam >= 0`` exist with ``|z - sum lam grad s| <= eps`` and
    ``sum lam (s - 1) <= delta``. The multipliers used are the softmax probabilities
    ``p_{j,(k,i)}`` (``j != k``) scaled by ``a = |z|/|grad L_sum|`` (so ``-grad L_sum = sum p grad s``
    and the combination has the norm of ``z~``). Then ``eps = |z~| sqrt(2 (1 - beta))`` exactly,
    the printed ``sqrt(2(1-beta)/C)`` with ``1/C = |z~|^2``, and ``delta -> 0`` as ``q_min`` grows.
    Raises :class:`AssumptionError` if ``q_min <= 0`` (the data are not separated).
    """
    where = "approximate_kkt"
    W, H, n = check_ulpm(W, H, where)
    Z, own, q = _margins(W, H, n)
    q_min = float(q.min())
    if q_min <= 0:
        raise AssumptionError(f"{where}: the NC margin q_min={q_min:.3g} is not positive, so (W, H)/sqrt(q_min) is not feasible for problem (5); run descent until every point is separated")
    Y = ulpm_targets(W.shape[0], n, dtype=W.dtype, device=W.device)
    G, _ = scaled_residual(W, H, Y, 1.0)
    gW, gH = residual_gradients(W, H, G)
    P = G + Y  # softmax probabilities
    weights = P * (1.0 - Y)  # p_{j,(k,i)} for j != k
    z_norm = torch.sqrt(W.square().sum() + H.square().sum())
    g_norm = torch.sqrt(gW.square().sum() + gH.square().sum())
    a = z_norm / g_norm
    scale = 1.0 / math.sqrt(q_min)
    # residual z~ - a/sqrt(q) (-grad L): both terms scale like 1/sqrt(q)
    eps = scale * torch.sqrt((W + a * gW).square().sum() + (H + a * gH).square().sum())
    s = own[None, :] - Z  # s_{kij} for every j (own class gives 0, weighted by 0)
    delta = a * (weights * (s / q_min - 1.0)).sum()
    return float(eps), float(delta)


def ulpm_diagnostics(W: torch.Tensor, H: torch.Tensor, *, reduction: str) -> dict[str, float]:
    """Everything tracked along a ULPM trajectory, as floats.

    ``loss``; the six :data:`FIGURE_QUANTITIES`; ``q_min`` and ``q_bound`` (Lemma 3.1);
    ``beta`` (:func:`alignment`); ``R2 = |W|^2 + |H|^2``; ``imbalance = |W|^2 - |H|^2``
    (conserved by gradient flow); ``kkt_eps``, ``kkt_delta`` (:func:`approximate_kkt`, NaN
    while ``q_min <= 0``).
    """
    where = "ulpm_diagnostics"
    check_reduction(reduction, where)
    W, H, n = check_ulpm(W, H, where)
    Y = ulpm_targets(W.shape[0], n, dtype=W.dtype, device=W.device)
    _, per = scaled_residual(W, H, Y, 1.0)
    out = {"loss": float(per.mean() if reduction == "mean" else per.sum())}
    out.update(figure_quantities(W, H))
    q_min = nc_margin(W, H)
    wn, hn = float(W.square().sum()), float(H.square().sum())
    out.update(q_min=q_min, q_bound=nc_margin_bound(W, H), beta=alignment(W, H), R2=wn + hn, imbalance=wn - hn)
    eps, delta = approximate_kkt(W, H) if q_min > 0 else (math.nan, math.nan)
    out.update(kkt_eps=eps, kkt_delta=delta)
    return out
