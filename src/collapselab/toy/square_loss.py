"""Closed forms of the square-loss toy model (Rangamani et al. 2021, sections 3-5 and appendices E-G).

Conventions (docs/theory/square-loss.md, "Conventions"), used by every function here:

- margins ``f_n = y_n f_V(x_n)`` of the normalised network; ``mu = mean f_n``,
  ``M = mean f_n^2`` (the second moment, :class:`~collapselab.collapse.MarginStats`).
- ``reduction="mean"`` (paper eq. 1): ``L = (1/N) sum_n (1 - rho f_n)^2 + lam rho^2``;
  ``reduction="sum"`` (Lemma 2, appendix F): ``L = sum_n (1 - rho f_n)^2 + lam rho^2``.
  The summed loss with ``lam`` is ``N`` times the mean loss with ``lam / N``.
- The unnormalised network carries weight decay ``(lam/2) sum_k |W_k|^2`` (Lemma 10, as
  corrected in docs/theory/errata.md); PyTorch ``weight_decay=wd`` on a mean loss is ``lam = wd/2`` for a
  penalty ``lam |W|^2`` (:func:`~collapselab.toy.lambda_from_weight_decay`).

Functions take plain floats (or float64 tensors for vectorised time grids) and return
floats or float64 tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import ParameterError
from ._common import check_count, check_reduction, check_scalar, loss_scale

__all__ = [
    "mean_lambda",
    "rho_eq",
    "toy_loss",
    "lemma9_loss",
    "rho_flow_solution",
    "recursion_factor",
    "recursion_regime",
    "rho_recursion",
    "Lemma2Case",
    "lemma2_equal_margins",
    "lemma2_stuck_points",
    "unnormalised_rho_rate",
    "equal_growth",
]


def _time_scale(reduction: str, num_samples: int | None, where: str) -> float:
    """``s`` with ``L = s * (mean-loss with lam / s)``: 1 for mean, ``N`` for sum."""
    check_reduction(reduction, where)
    if reduction == "mean":
        return 1.0
    if num_samples is None:
        raise ParameterError(f"{where}: reduction='sum' needs num_samples, the number N of training points (an int >= 1), got None")
    return float(check_count("num_samples", num_samples, where))


def mean_lambda(lam: float, *, reduction: str = "mean", num_samples: int | None = None) -> float:
    """The mean-loss ``lam`` equivalent to ``lam`` under ``reduction`` (``lam / N`` for sum)."""
    lam = check_scalar("lam", lam, "mean_lambda", low=0.0)
    return lam / _time_scale(reduction, num_samples, "mean_lambda")


def rho_eq(mu: float, M: float, lam: float = 0.0, *, reduction: str = "mean", num_samples: int | None = None) -> float:
    """Critical point of the rho flow: ``rho_eq = mu / (M + lam)`` (Rangamani et al. 2021 eq. 11, mean loss).

    For the summed loss ``lam`` is replaced by ``lam / N``. ``rho_0`` is its value at
    ``lam = 0``. Raises :class:`ParameterError` if ``M + lam <= 0``.
    """
    where = "rho_eq"
    lam_m = mean_lambda(lam, reduction=reduction, num_samples=num_samples)
    M = check_scalar("M", M, where, low=0.0)
    mu = check_scalar("mu", mu, where)
    if M + lam_m <= 0:
        raise ParameterError(f"{where}: M + lam must be > 0 (all margins zero and no weight decay has no equilibrium), got M={M}, lam={lam}")
    return mu / (M + lam_m)


def toy_loss(rho: float | torch.Tensor, margin: torch.Tensor, lam: float = 0.0, *, reduction: str = "mean") -> torch.Tensor:
    """``s sum_n (1 - rho f_n)^2 + lam rho^2`` with ``s = 1/N`` (mean) or 1 (sum); Rangamani et al. 2021 eq. 1.

    margin: ``(N,)`` margins ``f_n``; rho: scalar (float or tensor; differentiable).
    """
    check_reduction(reduction, "toy_loss")
    f = torch.as_tensor(margin, dtype=torch.float64)
    data = (1.0 - rho * f).square()
    data = data.mean() if reduction == "mean" else data.sum()
    return data + lam * torch.as_tensor(rho, dtype=torch.float64) ** 2


def lemma9_loss(rho: float | torch.Tensor, mu: float | torch.Tensor, rho_dot: float | torch.Tensor, *, reduction: str = "mean", num_samples: int | None = None) -> float | torch.Tensor:
    """Lemma 9 (Rangamani et al. 2021 appendix E): ``L = 1 - rho (mu + rho_dot / 2)`` along the toy flow.

    Mean loss; with the summed loss (``rho_dot`` of the summed flow)
    ``L = N (1 - rho mu) - rho rho_dot / 2``. Holds for normalised networks
    (``|V_k| = 1``) whatever ``lam``, since ``rho_dot = 2 s (mu - rho (M + lam/s))``.
    """
    s = _time_scale(reduction, num_samples, "lemma9_loss")
    return s * (1.0 - rho * mu) - rho * rho_dot / 2.0


def rho_flow_solution(t: float | torch.Tensor, rho0: float, mu: float, M: float, lam: float = 0.0, *, reduction: str = "mean", num_samples: int | None = None) -> float | torch.Tensor:
    """Exact ``rho(t)`` of eq. 8 with frozen margins: ``rho_eq + (rho0 - rho_eq) e^{-2 s (M + lam/s) t}``.

    Rangamani et al. 2021 eq. 8, ``rho_dot = 2 (mu - rho (M + lam))`` (mean loss, ``s = 1``); the summed
    loss has ``s = N``. ``t`` may be a float or a float64 tensor of times.
    """
    s = _time_scale(reduction, num_samples, "rho_flow_solution")
    eq = rho_eq(mu, M, lam, reduction=reduction, num_samples=num_samples)
    rate = 2.0 * s * (M + lam / s)
    decay = torch.exp(-rate * t) if isinstance(t, torch.Tensor) else math.exp(-rate * t)
    return eq + (rho0 - eq) * decay


def recursion_factor(lr: float, M: float, lam: float = 0.0, *, reduction: str = "mean", num_samples: int | None = None) -> float:
    """Contraction factor ``q = 1 - 2 eta s (M + lam/s)`` of the exact gradient-descent recursion.

    ``rho_{k+1} = rho_k + 2 eta (mu - rho_k (M + lam))`` (mean loss; docs/theory/square-loss.md
    replaces the heuristic second-order ODE of Rangamani et al. 2021 sec. 5 by
    this exact scalar recursion), so ``rho_{k+1} - rho_eq = q (rho_k - rho_eq)``.
    """
    where = "recursion_factor"
    lr = check_scalar("lr", lr, where, low=0.0, closed="right")
    s = _time_scale(reduction, num_samples, where)
    return 1.0 - 2.0 * lr * s * (check_scalar("M", M, where, low=0.0) + check_scalar("lam", lam, where, low=0.0) / s)


def recursion_regime(q: float) -> str:
    """``"monotone"`` (``0 <= q < 1``), ``"oscillating"`` (damped, ``-1 < q < 0``) or
    ``"divergent"`` (``|q| >= 1``: no convergence; ``q = -1`` is an undamped 2-cycle).

    In terms of the step: monotone iff ``eta <= 1/(2 s (M+lam))``, damped oscillation iff
    ``eta < 1/(s (M+lam))``.
    """
    q = check_scalar("q", q, "recursion_regime")
    if abs(q) >= 1.0:
        return "divergent"
    return "monotone" if q >= 0.0 else "oscillating"


def rho_recursion(rho0: float, mu: float, M: float, lam: float, lr: float, steps: int, *, reduction: str = "mean", num_samples: int | None = None) -> torch.Tensor:
    """Closed-form iterates ``rho_k = rho_eq + q^k (rho0 - rho_eq)``, ``k = 0..steps`` (float64).

    The exact solution of gradient descent with step ``lr`` on the toy loss with frozen
    margins (see :func:`recursion_factor`).
    """
    where = "rho_recursion"
    steps = check_count("steps", steps, where, low=0)
    q = recursion_factor(lr, M, lam, reduction=reduction, num_samples=num_samples)
    eq = rho_eq(mu, M, lam, reduction=reduction, num_samples=num_samples)
    k = torch.arange(steps + 1, dtype=torch.float64)
    return eq + torch.tensor(q, dtype=torch.float64) ** k * (rho0 - eq)


@dataclass(frozen=True)
class Lemma2Case:
    """A critical configuration of Lemma 2 (Rangamani et al. 2021, corrected: docs/theory/errata.md).

    rho: the minimising norm; loss: the minimal loss (in the requested reduction);
    gap: ``1 - rho / rho_0``, the interpolation gap of the points held at margin ``1/rho_0``;
    margin_difference: margin of the interpolating points minus ``1/rho_0`` (0 if none).
    """

    rho: float
    loss: float
    gap: float
    margin_difference: float


def _lemma2(rho0: float, lam: float, num_samples: int, num_stuck: int, reduction: str, where: str) -> Lemma2Case:
    rho0 = check_scalar("rho0", rho0, where, low=0.0, closed="right")
    lam_sum = check_scalar("lam", lam, where, low=0.0) * (num_samples if check_reduction(reduction, where) == "mean" else 1)
    a = lam_sum * rho0**2
    m = float(num_stuck)
    rho = rho0 / (1.0 + a / m)
    loss = a / (1.0 + a / m)
    diff = lam_sum * rho0 / m if num_stuck < num_samples else 0.0
    return Lemma2Case(rho, loss * loss_scale(reduction, num_samples), a / (m + a), diff)


def lemma2_equal_margins(rho0: float, lam: float, num_samples: int, *, reduction: str) -> Lemma2Case:
    """Lemma 2, first case: all ``N`` margins stay at ``1/rho_0``.

    ``rho_lam = rho_0 / (1 + lam rho_0^2 / N)``, loss ``lam rho_0^2 / (1 + lam rho_0^2 / N)``
    (appendix F eq. 42), gap ``eps = 1 - rho_lam / rho_0 = lam rho_0^2 / (N + lam rho_0^2)``.
    Correction (docs/theory/errata.md): the paper prints ``eps = lam rho_0``. ``reduction`` is a
    required keyword (no default: the paper states Lemma 2 for the sum, the other functions here
    default to the mean, and the two losses differ by ``N``): ``"sum"`` is the
    paper's ``sum_n (1 - rho f_n)^2 + lam rho^2``; ``"mean"`` reads ``lam`` as a mean-loss ``lam``
    (summed ``N lam``) and returns the mean loss, the value :func:`toy_loss` gives at the same point.
    """
    where = "lemma2_equal_margins"
    n = check_count("num_samples", num_samples, where)
    return _lemma2(rho0, lam, n, n, reduction, where)


def lemma2_stuck_points(rho0: float, lam: float, num_samples: int, num_stuck: int, *, reduction: str) -> Lemma2Case:
    """Lemma 2, second case: ``m = num_stuck`` margins stay at ``1/rho_0``, the rest interpolate.

    Minimising ``m (1 - rho/rho_0)^2 + lam rho^2`` gives ``rho = rho_0 / (1 + lam rho_0^2/m)``,
    loss ``lam rho_0^2 / (1 + lam rho_0^2/m)`` (eq. 43) and interpolating margins
    ``1/rho = (1 + lam rho_0^2/m)/rho_0``: they exceed the stuck ones by
    ``lam rho_0 / m``, the margin DIFFERENCE (corrected, docs/theory/errata.md: not the gap ``eps``).
    Conventions as :func:`lemma2_equal_margins`.
    """
    where = "lemma2_stuck_points"
    n = check_count("num_samples", num_samples, where)
    m = check_count("num_stuck", num_stuck, where, high=n)
    return _lemma2(rho0, lam, n, m, reduction, where)


def unnormalised_rho_rate(rho_k: torch.Tensor, mu: float, M: float, lam: float = 0.0, *, reduction: str = "mean", num_samples: int | None = None) -> float:
    """``d rho / dt`` under plain gradient flow of an unnormalised bias-free ReLU network.

    With data loss ``s sum_n (1 - rho f_n)^2`` and weight decay ``(lam/2) sum_k |W_k|^2``, the
    structural lemma gives ``d rho_k/dt = 2 s' (rho/rho_k)(mu - rho M) - lam rho_k`` and so
    ``d rho/dt = 2 s' rho^2 (sum_k rho_k^{-2}) (mu - rho M) - L lam rho``
    (``s' = 1`` mean, ``N`` sum). With equal norms ``rho_k = rho^{1/L}`` and ``lam = 0``
    this is Rangamani et al. 2021 eq. 51, ``2 L rho^{(2L-2)/L} (mu - rho M)`` (mean loss). rho_k: ``(L,)``.
    """
    where = "unnormalised_rho_rate"
    s = _time_scale(reduction, num_samples, where)
    rk = torch.as_tensor(rho_k, dtype=torch.float64).reshape(-1)
    if rk.numel() == 0 or bool((rk <= 0).any()):
        raise ParameterError(f"{where}: rho_k must be a non-empty vector of positive layer norms, got {rk.tolist()}")
    r = float(rk.prod())
    return 2.0 * s * r**2 * float(rk.pow(-2).sum()) * (mu - r * M) - rk.numel() * check_scalar("lam", lam, where, low=0.0) * r


def equal_growth(gaps0: float | torch.Tensor, lam: float, t: float | torch.Tensor) -> float | torch.Tensor:
    """Lemma 10 (Rangamani et al. 2021 appendix G.1, corrected form): ``|W_k|^2 - |W_1|^2`` at time ``t``.

    Under gradient flow with weight decay ``(lam/2) sum_k |W_k|^2``,
    ``d|W_k|^2/dt = -2 <W_k, dL_data/dW_k> - 2 lam |W_k|^2`` and the first term is the
    same for every layer (structural lemma), so the differences decay as
    ``e^{-2 lam t}``; with ``lam = 0`` they are conserved. Reduction-independent.
    """
    lam = check_scalar("lam", lam, "equal_growth", low=0.0)
    decay = torch.exp(-2.0 * lam * t) if isinstance(t, torch.Tensor) else math.exp(-2.0 * lam * t)
    return gaps0 * decay
