"""Experiment ``truncation-geometry``: the truncation-map identities on random networks.

Checks, on random ReLU networks and random points (float64):

* the composition identity ``x^(l) = W^(l) x^(tau,l) + b^(l)`` and
  ``x^(L+1) = W^(L+1) x^(tau,L) + b^(L+1)`` (CE23 Prop 2.2; CE24 Prop 3.2; spec/chen.md 0.3, test T1)
  for square widths and for non-increasing widths with surjective layers;
* scaling invariance ``tau_{cW,cb} = tau_{W,b}`` (CE23 (2.66)) and alignment invariance
  ``tau_{DR,DR beta} = tau_{R,beta}`` for positive diagonal ``D`` (Chen 2025 1.4; T2);
* the polyhedral-cone form equals ``tau`` (Muñoz Ewald 2025 Lemma 2.1; T3);
* ``tau`` fixes ``S_+`` and sends ``S_-`` to ``-beta`` (Chen 2025 (2.14), (2.15));
* layer weights recovered from cumulative ones (spec 0.3).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from pydantic import Field

from ..core import geometry as geo
from ..core.network import hidden_layers
from ._base import Experiment, ExperimentConfig, RunContext

__all__ = ["EXPERIMENT", "Config"]

SRC_T1 = "CE23 Prop 2.2 / CE24 Prop 3.2; spec/chen.md 0.3, T1"


class Config(ExperimentConfig):
    trials: int = Field(50, ge=1, description="Random networks per identity.")
    num_points: int = Field(200, ge=1, description="Random input points per network.")
    square_widths: list[int] = Field([3, 3, 3, 3, 3], min_length=3, description="Widths [M, d_1..d_L, Q] of the square case.")
    decreasing_widths: list[int] = Field([6, 5, 4, 3, 3], min_length=3, description="Non-increasing widths [M, d_1..d_L, Q].")
    cone_shape: list[int] = Field([2, 4], min_length=2, max_length=2, description="Shape (m, n) of the surjective W for the cone form.")


def random_matrix(m: int, n: int, gen: torch.Generator, *, cond: float = 4.0) -> torch.Tensor:
    """``U diag(s) V^T`` with Haar-random orthonormal ``U, V`` and singular values in ``[1/sqrt(cond), sqrt(cond)]``.

    A plain Gaussian matrix has an unbounded condition number, and every identity below
    holds only up to ``cond(W) * eps``; fixing the conditioning makes the tolerances honest.
    """
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))[0]
    s = torch.exp(torch.empty(k, dtype=torch.float64).uniform_(-0.5, 0.5, generator=gen) * torch.log(torch.tensor(cond, dtype=torch.float64)))
    return (U * s) @ V.T


def _random_net(widths: list[int], gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(random_matrix(o, i, gen), torch.randn(o, generator=gen, dtype=torch.float64)) for i, o in zip(widths[:-1], widths[1:])]


def composition_error(params: list[tuple[torch.Tensor, torch.Tensor]], X: torch.Tensor) -> float:
    """max over layers of ``|x^(l) - (W^(l) x^(tau,l) + b^(l))|`` relative to ``max |x^(l)|``."""
    xs = hidden_layers(params, X)
    cum = geo.cumulative_weights(params)
    taus = geo.truncation_sequence(X, cum[:-1])
    err = 0.0
    for l, (W, b) in enumerate(cum, start=1):
        t = taus[min(l, len(taus)) - 1]
        pred = t @ W.T + b
        scale = max(1.0, float(xs[l].abs().max()))
        err = max(err, float((xs[l] - pred).abs().max()) / scale)
    return err


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    gen = torch.Generator().manual_seed(cfg.seed)
    errs = {"composition_square": 0.0, "composition_decreasing": 0.0, "scaling": 0.0, "diagonal": 0.0, "cone_form": 0.0, "fixed_points": 0.0, "collapse": 0.0, "layer_weights": 0.0}
    for trial in ctx.progress(range(cfg.trials), desc="truncation-geometry"):
        row = {}
        for key, widths in (("composition_square", cfg.square_widths), ("composition_decreasing", cfg.decreasing_widths)):
            params = _random_net(widths, gen)
            X = torch.randn(cfg.num_points, widths[0], generator=gen, dtype=torch.float64)
            row[key] = composition_error(params, X)
            cum = geo.cumulative_weights(params[:-1])
            back = geo.layer_weights(cum)
            row["layer_weights"] = max(row.get("layer_weights", 0.0), max(float((a - W).abs().max() + (c - b).abs().max()) for (a, c), (W, b) in zip(back, params[:-1])))
        n = cfg.square_widths[0]
        W = random_matrix(n, n, gen)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        X = 3 * torch.randn(cfg.num_points, n, generator=gen, dtype=torch.float64)
        tau = geo.truncation(X, W, b)
        c = float(torch.rand((), generator=gen, dtype=torch.float64)) * 10 + 0.1
        row["scaling"] = float((geo.truncation(X, c * W, c * b) - tau).abs().max())
        R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
        beta = torch.randn(n, generator=gen, dtype=torch.float64)
        D = torch.diag(torch.rand(n, generator=gen, dtype=torch.float64) * 2 + 0.5)
        row["diagonal"] = float((geo.truncation(X, D @ R, D @ R @ beta) - geo.truncation(X, R, R @ beta)).abs().max())
        state = geo.truncation_state(X, W, b)
        beta_w = geo.cumulative_beta(W, b)
        plus, minus = state == geo.TruncationState.UNTRUNCATED, state == geo.TruncationState.FULLY_TRUNCATED
        row["fixed_points"] = float((tau[plus] - X[plus]).abs().max()) if bool(plus.any()) else 0.0
        row["collapse"] = float((tau[minus] + beta_w).abs().max()) if bool(minus.any()) else 0.0
        m, k = cfg.cone_shape
        Wc = random_matrix(m, k, gen)
        bc = torch.randn(m, generator=gen, dtype=torch.float64)
        Xc = 3 * torch.randn(cfg.num_points, k, generator=gen, dtype=torch.float64)
        row["cone_form"] = float((geo.cone_form_truncation(Xc, Wc, bc) - geo.truncation(Xc, Wc, bc)).abs().max())
        ctx.log_metrics(trial=trial, **row)
        for key, v in row.items():
            errs[key] = max(errs[key], v)

    ctx.claim_at_most("composition-square", f"x^(l) = W^(l) tau(x) + b^(l), square widths {cfg.square_widths} (max relative error)", SRC_T1, measured=errs["composition_square"], bound=1e-12)
    ctx.claim_at_most("composition-decreasing", f"composition identity for non-increasing widths {cfg.decreasing_widths}", SRC_T1, measured=errs["composition_decreasing"], bound=1e-12)
    ctx.claim_at_most("scaling-invariance", "tau_{cW,cb} = tau_{W,b} for c > 0", "CE23 (2.66); spec/chen.md T2", measured=errs["scaling"], bound=1e-13)
    ctx.claim_at_most("alignment-invariance", "tau_{DR,DR beta} = tau_{R,beta} for positive diagonal D", "Chen 2025 Def 2.2; spec/chen.md 1.4, T2", measured=errs["diagonal"], bound=1e-13)
    ctx.claim_at_most("cone-form", f"polyhedral-cone form equals tau for W in R^{cfg.cone_shape[0]}x{cfg.cone_shape[1]}", "Munoz Ewald 2025 Lemma 2.1; spec/chen.md 3.4, T3", measured=errs["cone_form"], bound=1e-13)
    ctx.claim_at_most("fixed-sector", "tau(x) = x on the sector S_+", "Chen 2025 (2.14)", measured=errs["fixed_points"], bound=1e-13)
    ctx.claim_at_most("collapse-sector", "tau(x) = -beta on the sector S_-", "Chen 2025 (2.15); spec erratum E9", measured=errs["collapse"], bound=1e-12)
    ctx.claim_at_most("layer-weights", "W_l = W^(l) (W^(l-1))^+, b_l = b^(l) - W_l b^(l-1) inverts the cumulative parameters", "spec/chen.md 0.3", measured=errs["layer_weights"], bound=1e-10)
    ctx.save_figure(_picture(gen), "truncation_map")


def _picture(gen: torch.Generator) -> plt.Figure:
    """Points of the plane coloured by truncation state (left) and their images under tau (right)."""
    W = torch.tensor([[1.0, 0.4], [-0.3, 1.0]], dtype=torch.float64)
    b = torch.tensor([0.3, -0.2], dtype=torch.float64)
    X = 2 * torch.rand(600, 2, generator=gen, dtype=torch.float64) - 1
    tau = geo.truncation(X, W, b)
    state = geo.truncation_state(X, W, b)
    p = -geo.cumulative_beta(W, b)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), sharex=True, sharey=True)
    colours = {0: "tab:green", 1: "tab:orange", 2: "tab:red"}
    for ax, pts, title in ((axes[0], X, "points x, by truncation state"), (axes[1], tau, "images tau_{W,b}(x)")):
        for s_, col in colours.items():
            sel = state == s_
            ax.scatter(pts[sel, 0], pts[sel, 1], s=7, color=col, alpha=0.6, label=geo.TruncationState(s_).name.lower().replace("_", " "))
        ax.plot(*p, "b*", ms=13, label="-beta: where S_- collapses")
        ax.set_aspect("equal")
        ax.set_title(title)
    axes[0].legend(fontsize=8, loc="lower right")
    return fig


EXPERIMENT = Experiment(
    name="truncation-geometry",
    summary="Composition identity, scaling/alignment invariance and the cone form of truncation maps hold to 1e-12.",
    source="CE23 Prop 2.2, CE24 Prop 3.2, Munoz Ewald 2025 Lemma 2.1; spec/chen.md 0.3, T1-T3",
    config=Config,
    run=run,
    quick={"trials": 10, "num_points": 50},
)
