"""Dynamical truncation of a cluster by the effective flow (Chen 2025 Prop 4.2 and §4.3; spec/chen.md 1.7, 1.8).

A cluster in ``R^2`` and one in ``R^3``, each with its own aligned layer ``(beta, R)``, lie
"below" their pulled-back label (``R (x_i - ỹ)`` in the open negative orthant) and start
partially truncated. The cluster-separated effective flow (Thm 3.2 with the corrected Omega)
truncates more and more points, the cluster becomes fully truncated at a finite ``s_1``
(located by step-and-bisect), after which ``Omega = 0`` exactly, ``R`` is frozen and
``|beta + ỹ|`` decays at rate exactly 1: the cluster is collapsed onto ``-beta(s) -> ỹ``.
The same data at frozen ``R`` are compared with the exact piecewise-exponential bias flow (1.8).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..core.data import ClassificationData, check_data  # noqa: E402
from ..effective import EffectiveState, EventKind, SeparatedFlow, exact_bias_flow, forward_pass, integrate, make_state  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "run", "EXPERIMENT"]

SOURCE = "Chen 2025 (arXiv:2501.07400) Prop 4.2, §4.3; spec/chen.md 1.7, 1.8 (Omega corrected, E1)"


class Config(ExperimentConfig):
    points: int = Field(40, ge=2, description="points in each cluster")
    s_end: float = Field(4.0, gt=0, description="length of the flow in s")
    step: float = Field(0.01, gt=0, description="RKMK4 step size")
    spread: float = Field(0.25, gt=0, lt=0.5, description="half-width of the cluster box around its centre")


def _cluster(Q: int, n: int, spread: float, rng: np.random.Generator, device: torch.device) -> tuple[ClassificationData, EffectiveState]:
    """One cluster around ``ỹ - 0.6`` with ``R`` a small rotation and ``eta(0)`` between 0.55 and 0.75."""
    y = np.full((1, Q), 0.5)
    X = y - 0.6 + spread * (2 * rng.random((n, Q)) - 1)
    data = check_data(X, np.zeros(n, dtype=np.int64), Y=y, device=device)
    A = rng.standard_normal((Q, Q))
    R = torch.linalg.matrix_exp(torch.as_tensor(0.15 * (A - A.T) / 2, device=device))
    eta0 = torch.linspace(0.55, 0.75, Q, dtype=torch.float64, device=device)
    return data, make_state((R.T @ eta0 - data.Y[0]).unsqueeze(0), R.unsqueeze(0))


def _truncated_directions(state: EffectiveState, data: ClassificationData) -> torch.Tensor:
    """``(N, Q)`` bool: ``z_a <= 0`` (point truncated in direction ``a``, ``h(0) = 0``) at the only layer."""
    return forward_pass(state, data.X).zs[0] <= 0


def _picture(ax: plt.Axes, data: ClassificationData, state: EffectiveState, title: str) -> None:
    tau = forward_pass(state, data.X).ys[-1].cpu().numpy()
    X, y = data.X.cpu().numpy(), data.Y[0].cpu().numpy()
    trunc = _truncated_directions(state, data).cpu().numpy()
    some, full = trunc.any(1), trunc.all(1)
    coords = (lambda a: (a[:, 0], a[:, 1], a[:, 2])) if X.shape[1] == 3 else (lambda a: (a[:, 0], a[:, 1]))
    ax.scatter(*coords(X), s=6, c="0.75", label="x")
    ax.scatter(*coords(tau[~some]), s=10, c="tab:blue", label="untruncated")
    ax.scatter(*coords(tau[some & ~full]), s=10, c="tab:orange", label="partially")
    ax.scatter(*coords(tau[full]), s=18, c="tab:red", label="fully truncated")
    ax.scatter(*coords(y[None]), marker="*", s=120, c="k", label="ỹ")
    ax.set_title(title, fontsize=9)


def _scenario(ctx: RunContext, Q: int) -> None:
    cfg = ctx.config
    data, state = _cluster(Q, cfg.points, cfg.spread, ctx.rng, ctx.device)
    flow = SeparatedFlow(data)
    tr = integrate(flow, state, cfg.s_end, step=cfg.step, events=[EventKind.FULL_TRUNCATION, EventKind.STATE_CHANGE], locate_kinks=True)
    yt = data.Y[0]
    N = data.num_samples
    eta = (tr.R[:, 0] @ (tr.beta[:, 0] + yt).unsqueeze(2)).squeeze(2).norm(dim=1)  # |eta(s)| = |R (beta + ỹ)|
    k_any, k_full, rate = [], [], []
    for i in ctx.progress(range(len(tr.s)), desc=f"metrics R^{Q}"):
        trunc = _truncated_directions(tr.state(i), data)
        jperp = float(trunc.to(torch.float64).mean())  # tr(J0perp)/Q
        k_any.append(int(trunc.any(1).sum()))
        k_full.append(int(trunc.all(1).sum()))
        rate.append(jperp)
        ctx.log_metrics(
            scenario=f"R{Q}", s=float(tr.s[i]), loss=float(tr.loss[i]), eta_norm=float(eta[i]),
            truncated_points=k_any[-1], fully_truncated_points=k_full[-1], rate_k_over_N=k_full[-1] / N, mean_J0perp=jperp,
        )
    full_events = tr.events_of(EventKind.FULL_TRUNCATION, layer=0, cluster=0)
    s1 = full_events[0].s if full_events else math.inf
    tag = f"R{Q}"
    ctx.claim_true(f"{tag}-finite-s1", f"the cluster in R^{Q} becomes fully truncated at a finite s_1", SOURCE, passed=math.isfinite(s1) and s1 < cfg.s_end, measured=s1)
    rise = float((tr.loss[1:] - tr.loss[:-1]).max())
    ctx.claim_at_most(f"{tag}-loss-monotone", "the input-space loss is non-increasing (dissipation (3.27))", SOURCE, measured=rise, bound=1e-13 * float(tr.loss[0]))
    rise_eta = float((eta[1:] - eta[:-1]).max())
    ctx.claim_at_most(f"{tag}-eta-monotone", "|eta| = |R(beta + ỹ)| is non-increasing ((4.23))", SOURCE, measured=rise_eta, bound=1e-13)
    if not math.isfinite(s1):
        return
    after = tr.s > s1 + 1e-9
    i1 = int(torch.nonzero(after)[0])
    omega_after = max(float(flow.field(tr.state(i)).omega.abs().max()) for i in torch.nonzero(after).flatten().tolist())
    ctx.claim_close(f"{tag}-omega-zero", "after s_1, Omega = 0 exactly (Prop 4.1/4.2)", SOURCE, measured=omega_after, expected=0.0, tolerance=0.0)
    drift = float((tr.R[after] - tr.R[i1]).abs().max())
    ctx.claim_at_most(f"{tag}-R-frozen", "after s_1, R is constant", SOURCE, measured=drift, bound=1e-14)
    fit = -np.polyfit(tr.s[after].cpu().numpy(), np.log(eta[after].cpu().numpy()), 1)[0]
    ctx.claim_close(f"{tag}-rate-one", "after s_1, |beta + ỹ| decays at rate exactly 1 ((4.36),(4.37))", SOURCE, measured=fit, expected=1.0, tolerance=1e-8)
    ctx.claim_at_most(f"{tag}-orthogonal", "R stays orthogonal (exponential map + Newton-Schulz)", SOURCE, measured=tr.state(-1).orthogonality_error(), bound=1e-14)
    # §4.3: at frozen R the exact piecewise-exponential solution predicts every switching time
    frozen = integrate(SeparatedFlow(data, frozen_rotation=True), state, cfg.s_end, step=cfg.step, events=[EventKind.SECTOR_CROSSING], locate_kinks=True)
    exact = exact_bias_flow(data.X, state.R[0], state.beta[0], yt)
    sw = exact.switching_times
    sw = sw[sw <= cfg.s_end]
    seen = torch.tensor([e.s for e in frozen.events], dtype=sw.dtype, device=sw.device)
    gap = float((seen - sw).abs().max()) if seen.shape == sw.shape and sw.numel() else math.inf
    ctx.claim_close(f"{tag}-exact-bias-flow", "at frozen R the integrated switching times equal the exact ones of (4.45)-(4.49)", SOURCE, measured=gap, expected=0.0, tolerance=1e-9)
    beta_gap = float((exact.beta(frozen.s) - frozen.beta[:, 0]).abs().max())
    ctx.claim_close(f"{tag}-exact-bias-values", "at frozen R, beta(s) equals the exact piecewise-exponential solution", SOURCE, measured=beta_gap, expected=0.0, tolerance=1e-9)
    # pictures at s = 0, before s_1, at s_1, after s_1 (as on the seed slides)
    times = [0.0, 0.5 * s1, s1, min(s1 + 1.5, cfg.s_end)]
    titles = ["s = 0", f"s = {times[1]:.3f} < s_1", f"s_1 = {s1:.3f}", f"s = {times[3]:.3f} > s_1"]
    fig = plt.figure(figsize=(13, 3.4))
    for j, (s, title) in enumerate(zip(times, titles)):
        ax = fig.add_subplot(1, 4, j + 1, projection="3d" if Q == 3 else None)
        _picture(ax, data, tr.state_at(s), title)
    fig.axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(f"truncated cluster tau(x) in R^{Q} under the effective flow")
    ctx.save_figure(fig, f"truncation_R{Q}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    s_np = tr.s.cpu().numpy()
    a1.plot(s_np, np.array(k_full) / N, label="fully truncated k/N")
    a1.plot(s_np, rate, label="mean of J0perp (rate of the bias flow)")
    a1.axvline(s1, ls="--", c="k", lw=0.8)
    a1.set_xlabel("s")
    a1.legend(fontsize=7)
    a2.semilogy(s_np, tr.loss.cpu().numpy())
    a2.axvline(s1, ls="--", c="k", lw=0.8)
    a2.set_xlabel("s")
    a2.set_ylabel("input-space loss")
    ctx.save_figure(fig, f"rate_and_loss_R{Q}")


def run(ctx: RunContext) -> None:
    for Q in (2, 3):
        _scenario(ctx, Q)


EXPERIMENT = Experiment(
    name="effective-dynamics",
    summary="clusters in R^2, R^3 are truncated by the effective flow, fully at a finite s_1, then collapse at rate 1",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"points": 16, "s_end": 3.0, "step": 0.02},
)
