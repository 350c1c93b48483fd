"""Gradient descent and gradient flow of the ULPM cross-entropy (Ji et al. 2022, section 2.2).

Closed-form gradients (:mod:`._loss`), float64, on the device of ``W``. One descent step is
``W <- W - lr (grad_W + sigma xi_W)``, ``H <- H - lr (grad_H + sigma xi_H)`` with standard
normal ``xi`` when ``noise = sigma > 0`` (an SGD-like perturbation of the gradient);
``noise = 0`` is plain full-batch gradient descent.

Under gradient flow ``|W|_F^2 - |H|_F^2`` is conserved (``<W, grad_W> = <H, grad_H> =
s tr(W^T G H^T)``); one descent step changes it by exactly
``lr^2 (|grad_W|^2 - |grad_H|^2)`` (over a time ``t = lr * steps`` the drift is ``O(lr t)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ...core.errors import DivergenceError
from .._common import check_count, check_reduction, check_scalar, check_times, loss_scale, single_thread
from ._diagnostics import ulpm_diagnostics
from ._loss import check_ulpm, residual_gradients, scaled_residual, ulpm_targets

__all__ = ["ULPMTrajectory", "log_spaced_steps", "ulpm_step", "ulpm_descent", "ulpm_flow"]


@dataclass(frozen=True)
class ULPMTrajectory:
    """A ULPM descent run.

    steps: ``(T,)`` int64 step indices at which ``records`` were taken (before that step's
    update; the last one is the final state); records: name -> ``(T,)`` float64 tensor
    (the keys of :func:`~collapselab.toy.ulpm_diagnostics`); W, H: the final parameters;
    imbalance_law: ``(T,)`` float64, ``lr^2 sum_{s < step} (|g_W(s)|^2 - |g_H(s)|^2)`` over the
    steps taken before each record (``g`` the applied gradient): with ``noise = 0`` this is
    the exact change of ``|W|^2 - |H|^2`` (module docstring), an independent prediction of
    ``records["imbalance"] - records["imbalance"][0]``.
    """

    steps: torch.Tensor
    records: dict[str, torch.Tensor]
    W: torch.Tensor
    H: torch.Tensor
    imbalance_law: torch.Tensor


def log_spaced_steps(steps: int, num: int = 100) -> list[int]:
    """About ``num`` distinct integers ``0 = s_0 < ... < s_m = steps``, log-spaced after 1."""
    steps = check_count("steps", steps, "log_spaced_steps")
    grid = np.unique(np.round(np.logspace(0, math.log10(steps), max(check_count("num", num, "log_spaced_steps"), 2))).astype(np.int64))
    return [0, *[int(s) for s in grid if 0 < s <= steps]]


def _gradients(W: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, scale: float, noise: float, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The applied gradients ``(grad_W + noise xi_W, grad_H + noise xi_H)`` of one step."""
    G, _ = scaled_residual(W, H, Y, scale)
    gW, gH = residual_gradients(W, H, G)
    if noise > 0:
        gW = gW + noise * torch.randn(gW.shape, dtype=gW.dtype, device=gW.device, generator=gen)
        gH = gH + noise * torch.randn(gH.shape, dtype=gH.dtype, device=gH.device, generator=gen)
    return gW, gH


def ulpm_step(W: torch.Tensor, H: torch.Tensor, lr: float, *, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One plain gradient-descent step on the ULPM loss (the map iterated by :func:`ulpm_descent`)."""
    where = "ulpm_step"
    check_reduction(reduction, where)
    W, H, n = check_ulpm(W, H, where)
    lr = check_scalar("lr", lr, where, low=0.0, closed="right")
    Y = ulpm_targets(W.shape[0], n, dtype=W.dtype, device=W.device)
    gW, gH = _gradients(W, H, Y, loss_scale(reduction, H.shape[1]), 0.0, None)
    return W - lr * gW, H - lr * gH


def ulpm_descent(
    W0: torch.Tensor,
    H0: torch.Tensor,
    *,
    lr: float,
    steps: int,
    reduction: str,
    noise: float = 0.0,
    seed: int | None = None,
    record: Iterable[int] | None = None,
    max_sq_norm: float = 1e8,
    check_every: int = 10,
) -> ULPMTrajectory:
    """Run ``steps`` steps of (noisy) gradient descent on the ULPM from ``(W0, H0)``.

    W0: ``(K, d)``, H0: ``(d, n K)`` (class-major columns). ``record``: step indices at which
    :func:`~collapselab.toy.ulpm_diagnostics` is evaluated (default
    :func:`log_spaced_steps`, about 100 points; ``steps`` itself is always recorded).
    Every ``check_every`` steps, and at every record, the run stops with
    :class:`DivergenceError` if ``|W|^2 + |H|^2`` is NaN/Inf or exceeds ``max_sq_norm``
    (the summed loss with ``lr = 5`` does this within a few steps: its step is ``N`` times
    the mean loss's). ``noise``: gradient-noise standard deviation (module docstring),
    drawn from a generator seeded with ``seed``. For ``K = 5, n = 10, d = 20`` a step takes
    15-50 microseconds on one CPU thread (1e5 steps in 2-5 s, depending on load).
    """
    where = "ulpm_descent"
    check_reduction(reduction, where)
    W, H, n = check_ulpm(W0, H0, where)
    lr = check_scalar("lr", lr, where, low=0.0, closed="right")
    noise = check_scalar("noise", noise, where, low=0.0)
    max_sq_norm = check_scalar("max_sq_norm", max_sq_norm, where, low=0.0, closed="right")
    steps = check_count("steps", steps, where)
    check_every = check_count("check_every", check_every, where)
    marks = sorted({int(s) for s in (log_spaced_steps(steps) if record is None else record) if 0 <= int(s) <= steps} | {steps})
    Y = ulpm_targets(W.shape[0], n, dtype=W.dtype, device=W.device)
    scale = loss_scale(reduction, H.shape[1])
    gen = None
    if noise > 0:
        gen = torch.Generator(device=W.device)
        gen.manual_seed(0 if seed is None else int(seed))
    start_sq = float(W.square().sum() + H.square().sum())
    rows: list[dict[str, float]] = []
    law = torch.zeros((), dtype=W.dtype, device=W.device)
    laws = []

    def guard(step: int) -> None:
        sq = float(W.square().sum() + H.square().sum())
        if not math.isfinite(sq) or sq > max_sq_norm:
            hint = f"; the summed loss multiplies the step by N={H.shape[1]}: use reduction='mean' or lr <= {lr / H.shape[1]:.3g}" if reduction == "sum" else "; lower lr"
            raise DivergenceError(f"{where}: diverged by step {step}: |W|^2+|H|^2 = {sq:.3g} (started at {start_sq:.3g}, limit max_sq_norm={max_sq_norm:.3g}) with reduction={reduction!r}, lr={lr}{hint}")

    mark_iter = iter(marks)
    next_mark = next(mark_iter)
    with torch.no_grad(), single_thread():
        for step in range(steps + 1):
            if step == next_mark:
                guard(step)
                rows.append(ulpm_diagnostics(W, H, reduction=reduction))
                laws.append(float(law))
                next_mark = next(mark_iter, -1)
            if step == steps:
                break
            if step % check_every == 0:
                guard(step)
            gW, gH = _gradients(W, H, Y, scale, noise, gen)
            law = law + (lr * lr) * (torch.vdot(gW.reshape(-1), gW.reshape(-1)) - torch.vdot(gH.reshape(-1), gH.reshape(-1)))
            W, H = W - lr * gW, H - lr * gH
    records = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]}
    return ULPMTrajectory(torch.tensor(marks, dtype=torch.int64), records, W, H, torch.tensor(laws, dtype=torch.float64))


def ulpm_flow(W0: torch.Tensor, H0: torch.Tensor, t: torch.Tensor, *, reduction: str, method: str = "dopri5", rtol: float = 1e-10, atol: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient flow ``(W, H)' = -grad L`` of the ULPM, sampled at times ``t``.

    Returns ``W_t (T, K, d)`` and ``H_t (T, d, N)``. Integrated by torchdiffeq (``dopri5``)
    with the closed-form gradient; ``|W|^2 - |H|^2`` is conserved to the solver tolerance.
    """
    where = "ulpm_flow"
    check_reduction(reduction, where)
    W, H, n = check_ulpm(W0, H0, where)
    t = check_times(t, where, W.device)
    Y = ulpm_targets(W.shape[0], n, dtype=W.dtype, device=W.device)
    scale = loss_scale(reduction, H.shape[1])

    def field(_: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        Wt, Ht = state
        G, _ = scaled_residual(Wt, Ht, Y, scale)
        return -(G @ Ht.T), -(Wt.T @ G)

    from torchdiffeq import odeint  # imported here: it loads scipy.integrate (~0.3 s), which no other user of the package needs

    with torch.no_grad():
        Wt, Ht = odeint(field, (W, H), t, method=method, rtol=rtol, atol=atol)
    return Wt, Ht
