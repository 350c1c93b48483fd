"""Standard loss with untruncated clustered data: the closed form of Chen 2025 Thm 9.1 (spec/chen.md 1.11).

Clusters in ``R^Q`` lie strictly inside every positive sector of an aligned network (checked with
:func:`collapselab.effective.check_untruncated`), so only the output weight moves. Claims: the
closed form (9.10) agrees with an ODE solver; ``W(s)`` converges to ``Y^ext X_0^+`` at rate
``lambda_min(A)``; the limiting cost equals CE23's barycentric formula
``1/2 ||Y |Delta_2|^{1/2} (1 + Delta_2)^{-1/2}||_F^2`` (spec 2.4), computed independently here.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from ..core.data import ClassificationData, gaussian_clusters  # noqa: E402
from ..effective import check_untruncated, clustered_closed_form, make_state  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "run", "EXPERIMENT"]

SOURCE = "Chen 2025 (arXiv:2501.07400) Thm 9.1 (9.10)-(9.12); CE23 §2.4; spec/chen.md 1.11"


class Config(ExperimentConfig):
    classes: int = Field(3, ge=1, description="Q = M: number of clusters and input dimension")
    per_class: int = Field(50, ge=2, description="points per cluster")
    delta: float = Field(0.2, gt=0, description="cluster radius")
    s_end: float = Field(20.0, gt=0, description="length of the flow")
    points: int = Field(41, ge=2, description="output times")


def _barycentric_cost(data: ClassificationData) -> float:
    """``1/2 ||Y |Delta_2|^{1/2} (1 + Delta_2)^{-1/2}||_F^2`` with ``Delta_1 = (T^red)^{-1} Delta T`` (CE23 (2.53)-(2.56))."""
    X = data.X.cpu().numpy()
    lab = data.labels.cpu().numpy()
    means = data.class_means.cpu().numpy()
    counts = data.class_counts.cpu().numpy()
    D1 = np.linalg.solve(means.T, (X - means[lab]).T)  # (Q, N)
    D2 = (D1 / counts[lab]) @ D1.T
    ev, V = np.linalg.eigh(D2)
    F = V @ np.diag(np.sqrt(np.abs(ev) / (1 + ev))) @ V.T
    return 0.5 * float(np.linalg.norm(data.Y.cpu().numpy().T @ F) ** 2)


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    Q = cfg.classes
    data = gaussian_clusters(Q, cfg.per_class, delta=cfg.delta, seed=cfg.seed).to(ctx.device)
    eye = torch.eye(Q, dtype=torch.float64, device=ctx.device)
    # an aligned network that leaves every point untouched: beta large enough that all z > 0
    shift = float(-data.X.min()) + 1.0
    check_untruncated(make_state(torch.full((Q, Q), shift, dtype=torch.float64, device=ctx.device), eye.expand(Q, Q, Q)), data, "standard-loss-clustered")
    W0 = torch.as_tensor(0.1 * ctx.rng.standard_normal((Q, Q)), device=ctx.device)
    sol = clustered_closed_form(data, W0)
    times = np.linspace(0.0, cfg.s_end, cfg.points)
    ode = solve_ivp(lambda _, w: sol.field(torch.as_tensor(w, device=ctx.device).reshape(Q, Q)).cpu().numpy().ravel(),
                    (0.0, cfg.s_end), W0.cpu().numpy().ravel(), t_eval=times, method="DOP853", rtol=1e-12, atol=1e-14)
    Wode = torch.as_tensor(ode.y.T, device=ctx.device).reshape(-1, Q, Q)
    gaps, dist, env = [], [], []
    d0 = float(torch.linalg.matrix_norm(W0 - sol.limit, ord=2))
    for i in ctx.progress(range(len(times)), desc="closed form"):
        W = sol.W(float(times[i]))
        gaps.append(float((W - Wode[i]).abs().max()))
        dist.append(float(torch.linalg.matrix_norm(W - sol.limit, ord=2)))
        env.append(d0 * np.exp(-sol.rate * times[i]))
        ctx.log_metrics(s=float(times[i]), loss=float(sol.loss(W)), closed_form_vs_ode=gaps[-1], distance_to_limit=dist[-1], envelope=env[-1])
    ctx.claim_at_most("closed-form", "the closed form (9.10) equals the ODE solution (max entry gap)", SOURCE, measured=max(gaps), bound=1e-9)
    excess = max(d - e for d, e in zip(dist, env)) / max(d0, 1e-300)
    ctx.claim_at_most("rate", "|W(s) - W_inf| <= exp(-lambda_min(A) s) |W(0) - W_inf| (relative excess)", SOURCE, measured=excess, bound=1e-10)
    ctx.claim_close("limit-cost", "the limiting cost equals CE23's barycentric formula (spec 2.4)", SOURCE,
                    measured=float(sol.loss(sol.limit)), expected=_barycentric_cost(data), tolerance=1e-10, relative=True)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogy(times, dist, label="|W(s) - W_inf|")
    ax.semilogy(times, env, "--", label="exp(-lambda_min(A) s) |W(0) - W_inf|")
    ax.set_xlabel("s")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "clustered_closed_form")


EXPERIMENT = Experiment(
    name="standard-loss-clustered",
    summary="untruncated clusters under the standard loss: W(s) follows the closed form (9.10) to CE23's barycentric cost",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"per_class": 10, "points": 11},
)
