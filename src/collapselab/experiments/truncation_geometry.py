"""Experiment ``truncation-geometry``: the truncation-map identities on random networks.

Checks, on random ReLU networks and random points (float64):

* the composition identity ``x^(l) = W^(l) x^(tau,l) + b^(l)`` and
  ``x^(L+1) = W^(L+1) x^(tau,L) + b^(L+1)`` (CE23 Prop 2.2; CE24 Prop 3.2) against the
  plain forward pass, for square widths and for non-increasing widths with surjective layers;
* scaling invariance ``tau_{cW,cb} = tau_{W,b}`` (CE23 (2.66)) and alignment invariance
  ``tau_{DR,DR beta} = tau_{R,beta}`` for positive diagonal ``D`` (Chen 2025 Def 2.2);
* the polyhedral-cone form equals ``tau`` (Muñoz Ewald 2025 Lemma 2.1);
* ``tau`` fixes ``S_+`` and sends ``S_-`` to ``-beta`` (Chen 2025 (2.14), (2.15); the point is
  ``-beta``, not ``beta``), on points constructed in each sector as ``x = W^{-1}(u - b)``;
* layer weights recovered from cumulative ones (CE23 (2.43), (2.45) inverted).

Every layer is drawn with condition number at most ``KAPPA`` (:func:`random_matrix`), so
each identity holds to float64 round-off ``eps`` times a condition number: a cumulative
weight of ``l`` layers has ``cond <= KAPPA^l``. Each claim's bound is that model,
``10 eps (width) KAPPA^(layers) (scale of the points)``, stated in its reason.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from typing import Annotated

from pydantic import Field, model_validator

from ..core import geometry as geo
from ..core.network import hidden_layers
from ._base import Experiment, ExperimentConfig, RunContext

__all__ = ["EXPERIMENT", "Config"]

SRC_T1 = "CE23 Prop 2.2 / CE24 Prop 3.2"
KAPPA = 4.0
"""Condition number of every drawn layer (singular values in ``[KAPPA^{-1/2}, KAPPA^{1/2}]``)."""
_EPS = torch.finfo(torch.float64).eps


class Config(ExperimentConfig):
    trials: int = Field(50, ge=1, le=10_000, description="Random networks per identity (at most 1e4).")
    num_points: int = Field(200, ge=1, le=100_000, description="Random input points per network (at most 1e5).")
    square_widths: list[Annotated[int, Field(ge=1, le=512)]] = Field([3, 3, 3, 3, 3], min_length=3, max_length=12, description="Widths [M, d_1..d_L, Q] of the square case (at most 10 hidden layers of 512: the bound KAPPA^L eps must stay far below 1).")
    decreasing_widths: list[Annotated[int, Field(ge=1, le=512)]] = Field([6, 5, 4, 3, 3], min_length=3, max_length=12, description="Non-increasing widths [M, d_1..d_L, Q].")
    cone_shape: list[Annotated[int, Field(ge=1, le=512)]] = Field([2, 4], min_length=2, max_length=2, description="Shape (m, n) of the surjective W for the cone form (m <= n).")

    @model_validator(mode="after")
    def _shapes(self) -> "Config":
        if self.square_widths[1:-1] != [self.square_widths[0]] * (len(self.square_widths) - 2):
            raise ValueError(f"square_widths must have equal input and hidden widths, got {self.square_widths}")
        if any(a < b for a, b in zip(self.decreasing_widths, self.decreasing_widths[1:])):
            raise ValueError(f"decreasing_widths must not increase (surjective layers), got {self.decreasing_widths}")
        if self.cone_shape[0] > self.cone_shape[1]:
            raise ValueError(f"cone_shape (m, n) needs m <= n for a surjective W, got {self.cone_shape}")
        return self


def roundoff(width: int, layers: int, scale: float) -> float:
    """``10 eps (width) KAPPA^layers scale``: float64 error of an identity through ``layers`` layers of condition ``<= KAPPA``."""
    return 10 * _EPS * width * KAPPA**layers * max(1.0, scale)


def random_matrix(m: int, n: int, gen: torch.Generator, *, cond: float = KAPPA) -> torch.Tensor:
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
    keys = ("composition_square", "composition_decreasing", "scaling", "diagonal", "cone_form", "fixed_points", "collapse", "layer_weights")
    ratio = dict.fromkeys(keys, 0.0)  # max over trials of error / its round-off bound
    worst = dict.fromkeys(keys, 0.0)  # the error at that trial
    half = max(1, cfg.num_points // 2)
    for trial in ctx.progress(range(cfg.trials), desc="truncation-geometry"):
        row: dict[str, tuple[float, float]] = {}  # key -> (error, bound)
        for key, widths in (("composition_square", cfg.square_widths), ("composition_decreasing", cfg.decreasing_widths)):
            params = _random_net(widths, gen)
            X = torch.randn(cfg.num_points, widths[0], generator=gen, dtype=torch.float64)
            depth = len(widths) - 1
            row[key] = (composition_error(params, X), roundoff(max(widths), depth, 1.0))
            cum = geo.cumulative_weights(params[:-1])
            back = geo.layer_weights(cum)
            err = max(float((a - W).abs().max() + (c - b).abs().max()) for (a, c), (W, b) in zip(back, params[:-1]))
            pair = (err, roundoff(max(widths), depth, max(float(b.abs().max()) for _, b in cum)))
            if "layer_weights" not in row or pair[0] / pair[1] > row["layer_weights"][0] / row["layer_weights"][1]:
                row["layer_weights"] = pair
        n = cfg.square_widths[0]
        W = random_matrix(n, n, gen)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        X = 3 * torch.randn(cfg.num_points, n, generator=gen, dtype=torch.float64)
        tau = geo.truncation(X, W, b)
        c = float(torch.rand((), generator=gen, dtype=torch.float64)) * 10 + 0.1
        row["scaling"] = (float((geo.truncation(X, c * W, c * b) - tau).abs().max()), roundoff(n, 1, float(X.abs().max())))
        R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
        beta = torch.randn(n, generator=gen, dtype=torch.float64)
        D = torch.diag(torch.rand(n, generator=gen, dtype=torch.float64) * 2 + 0.5)  # cond(D) <= 5 ~ KAPPA
        row["diagonal"] = (float((geo.truncation(X, D @ R, D @ R @ beta) - geo.truncation(X, R, R @ beta)).abs().max()), roundoff(n, 2, float(X.abs().max())))
        # points constructed in the sectors: a(x) = W x + b = u with u > 0 (S_+) or u < 0 (S_-)
        u = torch.rand(2 * half, n, generator=gen, dtype=torch.float64) * 3 + 0.1
        u[half:] *= -1
        Xs = torch.linalg.solve(W, (u - b).T).T
        tau_s = geo.truncation(Xs, W, b)
        scale = float(Xs.abs().max())
        row["fixed_points"] = (float((tau_s[:half] - Xs[:half]).abs().max()), roundoff(n, 1, scale))
        minus_beta = -torch.linalg.solve(W, b)
        row["collapse"] = (float((tau_s[half:] - minus_beta).abs().max()), roundoff(n, 1, scale))
        m, k = cfg.cone_shape
        Wc = random_matrix(m, k, gen)
        bc = torch.randn(m, generator=gen, dtype=torch.float64)
        Xc = 3 * torch.randn(cfg.num_points, k, generator=gen, dtype=torch.float64)
        row["cone_form"] = (float((geo.cone_form_truncation(Xc, Wc, bc) - geo.truncation(Xc, Wc, bc)).abs().max()), roundoff(k, 1, float(Xc.abs().max())))
        ctx.log_metrics(trial=trial, **{key: err for key, (err, _) in row.items()})
        for key, (err, bound) in row.items():
            if err / bound >= ratio[key]:
                ratio[key], worst[key] = err / bound, err

    model = "float64 round-off: 10 eps (width) KAPPA^(layers) max(1, max|x|), KAPPA = 4 the condition number of every drawn layer (a cumulative weight of l layers has cond <= KAPPA^l)"

    def claim(id: str, key: str, text: str, source: str, reference: str) -> None:
        ctx.claim_at_most(id, f"{text} (max over trials of error / round-off bound; worst error {worst[key]:.2g})", source, measured=ratio[key], bound=1.0, reason=model, reference=reference)

    claim("composition-square", "composition_square", f"x^(l) = W^(l) tau(x) + b^(l), square widths {cfg.square_widths} (relative to max(1, |x^(l)|))", SRC_T1, "the plain forward pass x^(l) of the network (no truncation maps)")
    claim("composition-decreasing", "composition_decreasing", f"composition identity for non-increasing widths {cfg.decreasing_widths}", SRC_T1, "the plain forward pass x^(l) of the network (no truncation maps)")
    claim("scaling-invariance", "scaling", "tau_{cW,cb} = tau_{W,b} for c > 0", "CE23 (2.66)", "tau of the unscaled (W, b)")
    claim("alignment-invariance", "diagonal", "tau_{DR,DR beta} = tau_{R,beta} for positive diagonal D", "Chen 2025 Def 2.2", "tau of the aligned (R, R beta)")
    claim("cone-form", "cone_form", f"polyhedral-cone form equals tau for W in R^{cfg.cone_shape[0]}x{cfg.cone_shape[1]}", "Munoz Ewald 2025 Lemma 2.1", "the cone form p + sum_{a_i > 0} a_i v_i, computed by its own algebra")
    claim("fixed-sector", "fixed_points", "tau(x) = x on the sector S_+", "Chen 2025 (2.14)", "the points themselves, constructed in S_+ as x = W^{-1}(u - b), u > 0")
    claim("collapse-sector", "collapse", "tau(x) = -beta on the sector S_-", "Chen 2025 (2.15), corrected: -beta, not beta", "-beta = -W^{-1} b, for points constructed in S_- as x = W^{-1}(u - b), u < 0")
    claim("layer-weights", "layer_weights", "W_l = W^(l) (W^(l-1))^+, b_l = b^(l) - W_l b^(l-1) inverts the cumulative parameters", "CE23 (2.43), (2.45)", "the drawn layer weights (W_l, b_l)")
    ctx.save_figure(_picture(gen), "truncation_map", claims=["fixed-sector", "collapse-sector", "cone-form"], paper_figure="Chen 2025, (2.14)-(2.15); the seed talk's truncation pictures",
                    caption="A truncation map tau of one ReLU layer in R^2: points of the sector S_+ stay fixed, points of S_- collapse to -beta, the rest are projected onto the cone's faces.")


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
    summary="Composition identity, scaling/alignment invariance, sectors and the cone form of truncation maps hold to float64 round-off (eps x condition number).",
    source="CE23 Prop 2.2, CE24 Prop 3.2, Munoz Ewald 2025 Lemma 2.1, Chen 2025 (2.14)-(2.15)",
    question='Do truncation maps compose, scale and align as CE23, CE24 and Chen 2025 state, with the sector and cone forms holding to float64 round-off?',
    theory=('theory/minimizers.md', 'theory/effective-flow.md'),
    config=Config,
    run=run,
    quick={"trials": 10, "num_points": 50},
)
