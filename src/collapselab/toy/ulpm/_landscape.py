"""The ULPM landscape: Theorem 3.3's collapsed optimum on a sphere and Example 3.1 (Ji et al. 2022).

Theorem 3.3: on the sphere ``|W|_F^2 + |H|_F^2 = R^2`` the summed cross-entropy is minimal
exactly at neural collapse with ``|W|_F = |H|_F``: ``w_k = a e_k``, ``h_{k,i} = b e_k`` for a
simplex ETF ``e`` (unit rows, cosines ``-1/(K-1)``), ``K a^2 = n K b^2 = R^2/2``. Every logit
gap is then ``R^2 / (2 (K-1) sqrt n)``, so
``L* = n K log(1 + (K-1) exp(-R^2 / (2 (K-1) sqrt n)))`` (summed; divide by ``N = nK`` for the
mean), and the NC margin attains Lemma 3.1's bound.

Example 3.1: ``K = 4, n = 1, d = 4``, ``W = H = c A`` with
``A = blockdiag([[1,-1],[-1,1]], [[1,-1],[-1,1]])``. Since ``A^2 = 2A`` the logits of sample
1 are ``2c^2 (1, -1, 0, 0)``, the summed loss is ``8 log(1 + e^{-2c^2})`` and
``grad_W = grad_H = g(c) A`` with ``g(c) = -c (2 + 2e^{-2c^2}) / (2 + e^{-2c^2} + e^{2c^2})``
(summed loss; the paper's printed denominator ``2 + 2e^{-2c^2} + 2e^{2c^2}`` is wrong,
docs/theory/errata.md). The escape family ``W' = H' = c A(beta)`` (rows ``(1, alpha, beta, beta)`` etc.,
``alpha = -sqrt(1 - 2 beta^2)``, ``beta <= 0``) keeps the norms; to leading order it changes
the summed loss by ``16 c^2 e^{-4c^2} beta^2 (1 + e^{2c^2} beta) / (1 + e^{-2c^2})^2``, which is negative only for
``beta < -e^{-2c^2}`` approximately: small perturbations raise the loss, large ones lower it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...core.data import simplex_etf
from ...core.errors import AssumptionError
from .._common import check_count, check_reduction, check_scalar, single_thread
from ._loss import check_ulpm, ulpm_gradients

__all__ = [
    "sphere_minimum",
    "collapsed_point",
    "SphereSearch",
    "minimise_on_sphere",
    "sphere_descent",
    "example31_point",
    "example31_loss",
    "example31_gradient_coefficient",
    "example31_escape_point",
    "example31_escape_gain",
    "example31_escape_threshold",
]


def _sizes(num_classes: int, per_class: int, where: str) -> tuple[int, int]:
    return check_count("num_classes", num_classes, where, low=2), check_count("per_class", per_class, where)


def sphere_minimum(num_classes: int, per_class: int, radius_sq: float, *, reduction: str) -> float:
    """Theorem 3.3's optimal loss on ``|W|^2 + |H|^2 = radius_sq`` (module docstring)."""
    where = "sphere_minimum"
    K, n = _sizes(num_classes, per_class, where)
    check_reduction(reduction, where)
    r2 = check_scalar("radius_sq", radius_sq, where, low=0.0)
    per = math.log1p((K - 1) * math.exp(-r2 / (2 * (K - 1) * math.sqrt(n))))
    return per * (n * K if reduction == "sum" else 1.0)


def collapsed_point(num_classes: int, per_class: int, dim: int, radius_sq: float, *, seed: int | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The collapsed optimum ``(W (K, d), H (d, n K))`` of Theorem 3.3 with ``|W| = |H|``.

    Needs ``dim >= K - 1`` (else :class:`AssumptionError`); ``seed`` rotates the simplex.
    """
    where = "collapsed_point"
    K, n = _sizes(num_classes, per_class, where)
    dim = check_count("dim", dim, where)
    if dim < K - 1:
        raise AssumptionError(f"{where}: a simplex of K={K} classes needs dim >= {K - 1}, got dim={dim}")
    r2 = check_scalar("radius_sq", radius_sq, where, low=0.0)
    E = simplex_etf(K, dim, seed=seed, dtype=dtype, device=device)
    W = math.sqrt(r2 / (2 * K)) * E
    H = math.sqrt(r2 / (2 * n * K)) * E.repeat_interleave(n, dim=0).T
    return W, H


@dataclass(frozen=True)
class SphereSearch:
    """Local minimisation of the ULPM loss over a sphere from random starts.

    values: ``(starts,)`` final losses; W, H: the best point found; converged: per start,
    whether the optimiser reported success.
    """

    values: torch.Tensor
    W: torch.Tensor
    H: torch.Tensor
    converged: tuple[bool, ...]


def minimise_on_sphere(num_classes: int, per_class: int, dim: int, radius_sq: float, *, starts: int = 5, seed: int = 0, reduction: str, max_iter: int = 20000) -> SphereSearch:
    """Minimise ``L(R x/|x|)`` over ``x`` by L-BFGS (scipy) from ``starts`` Gaussian starts.

    An independent check of Theorem 3.3: the gradient is the closed-form ULPM gradient
    projected on the sphere's tangent space, ``(R/|x|)(I - x x^T/|x|^2) grad L``. CPU, float64.
    """
    from scipy import optimize  # imported on use: scipy.optimize costs ~0.3 s at import, for every user of collapselab.toy

    where = "minimise_on_sphere"
    K, n = _sizes(num_classes, per_class, where)
    check_reduction(reduction, where)
    R = math.sqrt(check_scalar("radius_sq", radius_sq, where, low=0.0, closed="neither"))
    d = check_count("dim", dim, where)
    starts = check_count("starts", starts, where)
    max_iter = check_count("max_iter", max_iter, where)
    sizes = (K * d, d * n * K)

    def split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[: sizes[0]].reshape(K, d), z[sizes[0] :].reshape(d, n * K)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.from_numpy(x)
        nx = float(torch.linalg.vector_norm(xt))
        W, H = split(R * xt / nx)
        loss, gW, gH = ulpm_gradients(W, H, reduction=reduction)
        g = torch.cat([gW.reshape(-1), gH.reshape(-1)])
        u = xt / nx
        return float(loss), ((R / nx) * (g - u * (u @ g))).numpy()

    rng = np.random.default_rng(seed)
    values, best, ok = [], None, []
    for _ in range(starts):
        res = optimize.minimize(objective, rng.standard_normal(sum(sizes)), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-13, "ftol": 1e-16, "maxcor": 30})
        values.append(float(res.fun))
        ok.append(bool(res.success))
        if best is None or res.fun < best.fun:
            best = res
    z = torch.from_numpy(best.x)
    W, H = split(R * z / torch.linalg.vector_norm(z))
    return SphereSearch(torch.tensor(values, dtype=torch.float64), W, H, tuple(ok))


def sphere_descent(W0: torch.Tensor, H0: torch.Tensor, *, lr: float, steps: int, noise: float = 0.0, seed: int = 0, reduction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Riemannian gradient descent of the ULPM loss on the sphere ``|W|^2 + |H|^2 = R^2`` of the start.

    Step: ``z <- R (z - lr P(grad L + noise xi)) / |...|`` with ``P`` the projection on the
    tangent space ``{<z, v> = 0}`` (Ji et al. 2022 Def. 3.2) and ``xi`` standard normal. At a KKT
    direction such as Example 3.1 the projected gradient vanishes, so plain descent stays
    put, while the tangent-space saddle (Theorem 3.4) lets noisy descent leave towards
    Theorem 3.3's optimum. Returns ``(W, H, losses (steps + 1,))``.
    """
    where = "sphere_descent"
    check_reduction(reduction, where)
    W, H, _ = check_ulpm(W0, H0, where)
    lr = check_scalar("lr", lr, where, low=0.0, closed="right")
    noise = check_scalar("noise", noise, where, low=0.0)
    steps = check_count("steps", steps, where)
    split = W.numel()
    z = torch.cat([W.reshape(-1), H.reshape(-1)])
    R = torch.linalg.vector_norm(z)
    gen = torch.Generator(device=z.device)
    gen.manual_seed(int(seed))
    losses = []
    with torch.no_grad(), single_thread():
        for _ in range(steps):
            loss, gW, gH = ulpm_gradients(z[:split].reshape(W.shape), z[split:].reshape(H.shape), reduction=reduction)
            losses.append(loss)
            g = torch.cat([gW.reshape(-1), gH.reshape(-1)])
            if noise > 0:
                g = g + noise * torch.randn(g.shape, dtype=g.dtype, device=g.device, generator=gen)
            u = z / torch.linalg.vector_norm(z)
            z = z - lr * (g - u * (u @ g))
            z = R * z / torch.linalg.vector_norm(z)
        Wf, Hf = z[:split].reshape(W.shape), z[split:].reshape(H.shape)
        losses.append(ulpm_gradients(Wf, Hf, reduction=reduction)[0])
    return Wf, Hf, torch.stack(losses)


_A = ((1.0, -1.0, 0.0, 0.0), (-1.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, -1.0), (0.0, 0.0, -1.0, 1.0))


def example31_point(c: float, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, H) = (c A, c A)`` of Example 3.1 (K = 4, n = 1, d = 4)."""
    c = check_scalar("c", c, "example31_point")
    A = torch.tensor(_A, dtype=dtype, device=device)
    return c * A, c * A.clone()


def example31_loss(c: float, *, reduction: str) -> float:
    """ULPM loss at Example 3.1's point: ``8 log(1 + e^{-2c^2})`` (summed), ``2 log(...)`` (mean)."""
    check_reduction(reduction, "example31_loss")
    c = check_scalar("c", c, "example31_loss")
    return (8.0 if reduction == "sum" else 2.0) * math.log1p(math.exp(-2.0 * c * c))


def example31_gradient_coefficient(c: float, *, reduction: str) -> float:
    """``g(c)`` with ``grad_W = grad_H = g(c) A`` (corrected; module docstring); ``/4`` for the mean loss."""
    check_reduction(reduction, "example31_gradient_coefficient")
    c = check_scalar("c", c, "example31_gradient_coefficient")
    x = math.exp(-2.0 * c * c)
    # divide numerator and denominator by e^{2c^2} to avoid overflow for large c
    g = -c * (2.0 + 2.0 * x) * x / (2.0 * x + x * x + 1.0)
    return g if reduction == "sum" else g / 4.0


def _check_beta(beta: float, where: str) -> tuple[float, float]:
    beta = check_scalar("beta", beta, where, low=-1.0 / math.sqrt(2.0), high=0.0)
    root = math.sqrt(max(0.0, 1.0 - 2.0 * beta * beta))
    return beta, -root


def example31_escape_point(c: float, beta: float, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``W' = H' = c [[1,a,b,b],[a,1,b,b],[b,b,1,a],[b,b,a,1]]`` with ``a = -sqrt(1 - 2 b^2)``, ``b = beta``.

    ``beta`` in ``[-1/sqrt 2, 0]``; ``beta = 0`` is :func:`example31_point`. Same norms as it.
    """
    where = "example31_escape_point"
    c = check_scalar("c", c, where)
    b, a = _check_beta(beta, where)
    M = torch.tensor(((1.0, a, b, b), (a, 1.0, b, b), (b, b, 1.0, a), (b, b, a, 1.0)), dtype=dtype, device=device)
    return c * M, c * M.clone()


def example31_escape_gain(c: float, beta: float, *, reduction: str) -> float:
    """``L(W', H') - L(W, H)`` along the escape family, evaluated without cancellation.

    Logits of sample 1 at ``c M(beta)``: ``c^2 (2, 2a + 2b^2, 2b(1+a), 2b(1+a))``; all four
    samples are alike, so the summed loss is ``4 log(1 + u(beta))`` with
    ``u = e^{2c^2(a + b^2 - 1)} + 2 e^{2c^2(b(1+a) - 1)}``; the difference uses ``log1p``/``expm1``
    and ``1 + a = 2b^2 / (1 + sqrt(1 - 2b^2))``.
    """
    where = "example31_escape_gain"
    check_reduction(reduction, where)
    c = check_scalar("c", c, where)
    b, a = _check_beta(beta, where)
    c2 = c * c
    one_plus_a = 2.0 * b * b / (1.0 + math.sqrt(max(0.0, 1.0 - 2.0 * b * b)))
    u0 = math.exp(-4.0 * c2) + 2.0 * math.exp(-2.0 * c2)
    du = math.exp(-4.0 * c2) * math.expm1(2.0 * c2 * (one_plus_a + b * b)) + 2.0 * math.exp(-2.0 * c2) * math.expm1(2.0 * c2 * b * one_plus_a)
    gain = 4.0 * math.log1p(du / (1.0 + u0))
    return gain if reduction == "sum" else gain / 4.0


def example31_escape_threshold(c: float) -> float | None:
    """The ``beta* < 0`` where the escape family starts to lower the loss (``None`` if it never does).

    The gain is positive for ``beta* < beta < 0`` and negative just below ``beta*``; the
    estimate of docs/theory/ulpm.md is ``beta* ~ -e^{-2c^2}`` (their ratio tends to 1 as ``c`` grows). Found by
    scanning a log grid of ``beta`` and refining the first sign change with Brent's method.
    """
    from scipy import optimize  # imported on use (see minimise_on_sphere)

    c = check_scalar("c", c, "example31_escape_threshold", low=0.0, closed="neither")
    grid = -np.logspace(-150, math.log10(1.0 / math.sqrt(2.0)) - 1e-12, 3001)
    gains = np.array([example31_escape_gain(c, float(b), reduction="sum") for b in grid])
    neg = np.nonzero(gains < 0)[0]
    if neg.size == 0:
        return None
    i = int(neg[0])
    if i == 0:
        return float(grid[0])
    return float(optimize.brentq(lambda b: example31_escape_gain(c, b, reduction="sum"), grid[i], grid[i - 1], xtol=1e-300, rtol=1e-14))
