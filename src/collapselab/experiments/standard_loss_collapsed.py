"""Standard loss with fully collapsed initial data (Chen 2025 §8; spec/chen.md 1.10).

Every cluster ``j`` is collapsed to a point ``p_j`` (``= -beta^(j)``); the standard loss is then
``C = 1/2 ||W X - Y||_F^2`` with ``X = [p_1 ... p_Q]`` and the flow of ``(W, X)`` is integrated by
scipy's RK45. Claims: the balancedness matrix ``Lambda = W^T W - X X^T`` is conserved (Prop 8.3),
``C(s) <= e^{-2 lambda s} C(0)`` with ``lambda`` the spectral gap of ``Lambda(0)`` (Thm 8.4), and
``W(s) X(s) -> Y`` (the limits exist and reach zero loss).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..effective import balancedness, integrate_collapsed, spectral_gap  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "run", "EXPERIMENT"]

SOURCE = "Chen 2025 (arXiv:2501.07400) Prop 8.3, Thm 8.4; spec/chen.md 1.10"


class Config(ExperimentConfig):
    classes: int = Field(4, ge=1, description="Q: number of clusters (and width)")
    s_end: float = Field(6.0, gt=0, description="length of the flow")
    points: int = Field(61, ge=2, description="output times")
    w_scale: float = Field(1.5, gt=0, description="W(0) = w_scale 1 + noise: Lambda(0) positive definite")
    p_scale: float = Field(0.3, gt=0, description="size of the collapse points p_j")
    rtol: float = Field(1e-11, gt=0, description="RK45 relative tolerance")


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    Q = cfg.classes
    gen = torch.Generator().manual_seed(cfg.seed)
    P0 = cfg.p_scale * torch.randn(Q, Q, generator=gen, dtype=torch.float64)
    W0 = cfg.w_scale * torch.eye(Q, dtype=torch.float64) + 0.1 * torch.randn(Q, Q, generator=gen, dtype=torch.float64)
    P0, W0 = P0.to(ctx.device), W0.to(ctx.device)
    Y = torch.eye(Q, dtype=torch.float64, device=ctx.device)
    lam = spectral_gap(W0, P0)
    sol = integrate_collapsed(W0, P0, Y, np.linspace(0.0, cfg.s_end, cfg.points), rtol=cfg.rtol, atol=1e-3 * cfg.rtol)
    L0 = balancedness(W0, P0)
    drift = torch.stack([(balancedness(W, P) - L0).abs().max() for W, P in zip(sol.W, sol.P)])
    bound = torch.exp(-2 * lam * sol.s) * sol.loss[0]
    for i in ctx.progress(range(len(sol.s)), desc="metrics"):
        ctx.log_metrics(s=float(sol.s[i]), loss=float(sol.loss[i]), bound=float(bound[i]), balancedness_drift=float(drift[i]))
    ctx.claim_at_least("spectral-gap", "Lambda(0) is definite, so Thm 8.4 gives a rate", SOURCE, measured=lam, bound=1e-3)
    ctx.claim_at_most("conserved", "Lambda = W^T W - X X^T is conserved (max drift)", SOURCE, measured=float(drift.max()), bound=1e-9)
    excess = float(((sol.loss - bound) / sol.loss[0]).max())
    ctx.claim_at_most("rate-bound", "C(s) <= exp(-2 lambda s) C(0) at every output time (relative excess)", SOURCE, measured=excess, bound=1e-8)
    gap = float((sol.W[-1] @ sol.P[-1].T - Y.T).abs().max())
    predicted = float(torch.sqrt(2 * bound[-1]))  # |E| <= sqrt(2 C) <= sqrt(2 bound)
    ctx.claim_at_most("limit", "W(s) X(s) -> Y: the final max |W X - Y| is within the Thm 8.4 envelope", SOURCE, measured=gap, bound=predicted)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    s = sol.s.cpu().numpy()
    a1.semilogy(s, sol.loss.cpu().numpy(), label="C(s)")
    a1.semilogy(s, bound.cpu().numpy(), "--", label="exp(-2 lambda s) C(0)")
    a1.set_xlabel("s")
    a1.legend(fontsize=7)
    a2.semilogy(s, np.maximum(drift.cpu().numpy(), 1e-17))
    a2.set_title("max |Lambda(s) - Lambda(0)|", fontsize=9)
    a2.set_xlabel("s")
    ctx.save_figure(fig, "collapsed_standard_loss")


EXPERIMENT = Experiment(
    name="standard-loss-collapsed",
    summary="collapsed clusters under the standard loss: W^T W - X X^T is conserved and C decays at least at rate 2 lambda",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"classes": 3, "s_end": 4.0, "points": 21},
)
