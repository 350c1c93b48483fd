"""Experiment ``explicit-minimizers``: CE23's constructed zero-loss minimum against gradient descent.

On clustered data in ``R^2`` (``Q = 2``) and ``R^3`` (``Q = 3``):

* the explicit network of CE23 Thm 2.3 (:func:`collapselab.construct.construct_clustered`)
  has zero cost (the module is evaluated by plain PyTorch), maps every cluster to
  ``x̄_j - mu_j f_j`` (computed here from the means), has a Jacobian of rank ``Q^2``
  (the rank loss that makes underparametrised zero loss possible) and
  classifies fresh points of ``B_delta(x̄_j)`` by the metric rule (2.61);
* plain gradient descent and Adam, on the same architecture and data from random
  initialisations, are run for the cost curves of one figure: an illustration of the
  non-approximability discussion (Chen & Munoz Ewald, arXiv:2311.07065; Chen 2025, slides),
  not a verdict. That paper states non-approximability qualitatively (generic data, the
  gradient-descent flow) and bounds no cost that GD or Adam reach with a finite budget, so no
  claim is made on the curves: a threshold on their final cost would be chosen from what was
  seen, and "GD has not reached zero after a few hundred steps" cannot fail. The check that
  does come from the theory is the rank: the constructed minimum has rank ``Q^2`` (the rank
  loss that makes underparametrised zero loss possible).
* figures: the data moving layer by layer with the cones and collapse points (2-D and
  3-D), and the GD/Adam cost curves against the constructed cost (the illustration above).

metrics.csv: one row per (problem, method, init, step) with the CE23 cost (a norm, (2.35)).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from pydantic import Field

from ..construct import ConstructedNetwork, ce23_cost, construct_clustered
from ..core.cost import weighted_l2
from ..core.data import ClassificationData, gaussian_clusters
from ..core.geometry import truncation_sequence
from ..core.network import ReLUNet, flatten_params, stacked_outputs
from ._base import Experiment, ExperimentConfig, RunContext

__all__ = ["EXPERIMENT", "Config"]

SRC_CE23 = "CE23 Thm 2.3 (2.57)-(2.59)"
_EPS = torch.finfo(torch.float64).eps
_FLOOR = 1e-300  # keeps exact zeros visible on log axes


class Config(ExperimentConfig):
    per_class: int = Field(40, ge=2, le=2000, description="Points per cluster; at most 2000, since the rank check forms the dense (QN x K) Jacobian.")
    delta: float = Field(0.05, gt=0, le=0.2, description="Cluster radius (every point within delta of its generating mean); at most 0.2, so that the clusters around the means e_j + 0.2 g_j (about sqrt 2 apart) stay separated as CE23 Thm 2.3 requires.")
    steps: int = Field(3000, ge=1, le=100_000, description="Gradient steps of GD and Adam per initialisation (at most 1e5: the curves are an illustration).")
    inits: int = Field(3, ge=1, le=20, description="Random initialisations per optimiser (at most 20).")
    lr_gd: float = Field(0.05, gt=0, le=10, description="Step size of plain gradient descent.")
    lr_adam: float = Field(0.01, gt=0, le=10, description="Step size of Adam.")
    log_every: int = Field(50, ge=1, le=100_000, description="Log the GD/Adam cost every this many steps.")


def _logged_steps(steps: int, log_every: int) -> list[int]:
    """The steps at which :func:`_train` logs: every ``log_every``-th and the last (``steps``)."""
    return list(range(0, steps, log_every)) + [steps]


def _train(data: ClassificationData, widths: list[int], method: str, lr: float, steps: int, seed: int, ctx: RunContext, name: str, init: int, log_every: int) -> list[float]:
    """Plain GD or Adam on the squared CE23 cost from PyTorch's default random initialisation;
    the CE23 cost at :func:`_logged_steps`."""
    torch.manual_seed(seed)
    net = ReLUNet(widths, device=data.X.device)
    opt = torch.optim.SGD(net.parameters(), lr=lr) if method == "gd" else torch.optim.Adam(net.parameters(), lr=lr)
    curve: list[float] = []
    logged = set(_logged_steps(steps, log_every))
    for step in range(steps + 1):
        opt.zero_grad()
        loss = weighted_l2(net(data.X), data.labels, data.Y)  # the squared CE23 cost
        if step in logged:
            c = math.sqrt(float(loss.detach()))
            curve.append(c)
            ctx.log_metrics(problem=name, method=method, init=init, step=step, cost=c)
        if step < steps:
            loss.backward()
            opt.step()
    return curve


def _fresh_points(data: ClassificationData, delta: float, per_class: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Points uniform in ``B_delta(x̄_j)`` around the sample means."""
    q, m = data.num_classes, data.dim
    g = rng.standard_normal((q * per_class, m))
    g *= (delta * rng.random(len(g)) ** (1 / m) / np.linalg.norm(g, axis=1))[:, None]
    labels = np.repeat(np.arange(q), per_class)
    X = data.class_means.cpu().numpy()[labels] + g
    return torch.as_tensor(X, device=data.X.device), torch.as_tensor(labels, device=data.X.device)


def _stages(result: ConstructedNetwork, X: torch.Tensor) -> list[torch.Tensor]:
    """``[X, tau_1(X), tau_2(tau_1(X)), ...]``: the data moving through the hidden layers (input coordinates)."""
    return [X, *truncation_sequence(X, result.cumulative[: len(result.layers)])]


def _figure_2d(result: ConstructedNetwork, data: ClassificationData) -> plt.Figure:
    stages = _stages(result, data.X)
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 4.2), sharex=True, sharey=True)
    colours = plt.cm.tab10.colors
    lab = data.labels.cpu().numpy()
    for k, (ax, pts) in enumerate(zip(axes, stages)):
        P = pts.cpu().numpy()
        for j in range(data.num_classes):
            ax.scatter(P[lab == j, 0], P[lab == j, 1], s=10, color=colours[j], label=f"class {j}")
        if k < len(result.layers):  # the cone of the next layer
            layer = result.layers[k]
            apex, axis, half = layer.collapse_point.cpu().numpy(), layer.cone_axis.cpu().numpy(), layer.cone_angle / 2
            for sgn, style in ((1, "-"), (-1, "--")):
                for s in (-1, 1):
                    c, si = math.cos(s * half), math.sin(s * half)
                    d = sgn * np.array([c * axis[0] - si * axis[1], si * axis[0] + c * axis[1]])
                    ax.plot([apex[0], apex[0] + 1.5 * d[0]], [apex[1], apex[1] + 1.5 * d[1]], style, color="grey", lw=0.8)
            ax.plot(*apex, "k*", ms=12, label=f"p_{k + 1} (apex)")
        ax.set_title("input" if k == 0 else f"after hidden layer {k}")
        ax.set_aspect("equal")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("CE23 construction in R^2: forward cones (solid), backward cones (dashed), collapse points")
    return fig


def _figure_3d(result: ConstructedNetwork, data: ClassificationData) -> plt.Figure:
    stages = _stages(result, data.X)
    fig = plt.figure(figsize=(4.2 * len(stages), 4.4))
    colours = plt.cm.tab10.colors
    lab = data.labels.cpu().numpy()
    for k, pts in enumerate(stages):
        ax = fig.add_subplot(1, len(stages), k + 1, projection="3d")
        P = pts.cpu().numpy()
        for j in range(data.num_classes):
            ax.scatter(P[lab == j, 0], P[lab == j, 1], P[lab == j, 2], s=6, color=colours[j])
        if k < len(result.layers):
            layer = result.layers[k]
            apex, axis, half = layer.collapse_point.cpu().numpy(), layer.cone_axis.cpu().numpy(), layer.cone_angle / 2
            e1 = np.cross(axis, [1.0, 0, 0] if abs(axis[0]) < 0.9 else [0, 1.0, 0])
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(axis, e1)
            t, r = np.meshgrid(np.linspace(0, 2 * np.pi, 24), np.linspace(0, 0.8, 6))
            surf = apex[:, None, None] + r * (math.cos(half) * axis[:, None, None] + math.sin(half) * (np.cos(t) * e1[:, None, None] + np.sin(t) * e2[:, None, None]))
            ax.plot_wireframe(surf[0], surf[1], surf[2], color="grey", lw=0.4)
            ax.scatter(*apex, marker="*", s=120, color="k")
        ax.set_title("input" if k == 0 else f"after hidden layer {k}")
    fig.suptitle("CE23 construction in R^3: each layer collapses one cluster to the apex of its cone")
    return fig


def _figure_costs(curves: dict[tuple[str, str, int], list[float]], constructed: dict[str, float], steps: int, log_every: int) -> plt.Figure:
    names = sorted(constructed)
    x = _logged_steps(steps, log_every)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4))
    for ax, name in zip(np.atleast_1d(axes), names):
        for (prob, method, init), curve in curves.items():
            if prob == name:
                ax.semilogy(x, np.maximum(curve, _FLOOR), color="tab:blue" if method == "gd" else "tab:orange", alpha=0.8, label=f"{method} init {init}")
        ax.axhline(max(constructed[name], 1e-16), color="k", ls="--", label="constructed (clipped at 1e-16)")
        ax.set_xlabel("step")
        ax.set_ylabel("CE23 cost (2.35)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return fig


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    constructed: dict[str, float] = {}
    curves: dict[tuple[str, str, int], list[float]] = {}
    problems = [("clusters-2d", 2), ("clusters-3d", 3)]
    for name, q in problems:
        data = gaussian_clusters(q, cfg.per_class, delta=cfg.delta, seed=cfg.seed + q).to(ctx.device)
        result = construct_clustered(data.X, data.labels, data.Y)
        with torch.no_grad():
            cost = float(ce23_cost(result.module(data.X), data.labels, data.Y))  # plain PyTorch forward
        constructed[name] = cost
        ctx.log_metrics(problem=name, method="constructed", init=-1, step=0, cost=cost)
        # float64 round-off of a forward pass: eps x (depth) x (width) x prod |W_l| x max |x|
        weights = [layer.weight.detach() for layer in result.module.layers]
        scale = math.prod(float(torch.linalg.matrix_norm(W, ord=2)) for W in weights) * float(data.X.abs().max().clamp_min(1.0))
        roundoff = 10 * _EPS * len(weights) * max(result.module.widths) * scale
        roundoff_reason = f"float64 forward pass: 10 eps (layers) (width) prod_l |W_l|_2 max|x| = {roundoff:.2g}"
        ctx.claim_at_most(f"constructed-cost-{q}d", f"the explicit CE23 network has zero cost on {q} clusters in R^{q} (module evaluated by PyTorch)", SRC_CE23,
                          measured=cost, bound=roundoff, reason=roundoff_reason, reference="Thm 2.3: cost 0 (the module's plain PyTorch forward, not the construction's own bookkeeping)")
        means = data.class_means
        bary = means.mean(0)
        f = (bary - means) / (bary - means).norm(dim=1, keepdim=True)
        mu = torch.tensor([layer.mu for layer in result.layers], dtype=means.dtype, device=means.device)
        err = float((result.truncate(data.X) - (means - mu[:, None] * f)[data.labels]).abs().max())
        ctx.claim_at_most(f"collapse-points-{q}d", "every cluster is mapped to x̄_j - mu_j f_j (formula from the means)", "CE23 (2.59)/(2.60)",
                          measured=err, bound=roundoff, reason=roundoff_reason, reference="x̄_j - mu_j f_j computed here from the class means and the barycentre")
        theta = flatten_params(result.module).detach()
        D = torch.func.jacrev(stacked_outputs)(theta, result.module.widths, data.X)
        sv = torch.linalg.svdvals(D)
        rank = int((sv > 1e-10 * sv[0]).sum())
        gap = float(sv[q * q - 1] / sv[0]) if q * q <= len(sv) else 0.0
        ctx.claim_close(f"jacobian-rank-{q}d", f"rank of the output Jacobian at the constructed minimum is Q^2 = {q * q} (QN = {D.shape[0]}, K = {D.shape[1]})", "CE23 Thm 2.3; arXiv:2311.07065 (rank loss at underparametrised zero loss)",
                        measured=rank, expected=q * q, tolerance=0,
                        reason=f"an integer: singular values counted above 1e-10 sigma_max; collapsed clusters give exactly repeated rows (zero singular values up to eps |D|), the Q^2-th is {gap:.2g} sigma_max",
                        reference="Q^2: each of the Q collapse points moves only through the Q outputs (D by autograd)")
        fresh, fresh_labels = _fresh_points(data, cfg.delta, 50, ctx.rng)
        acc = float((result.classify(fresh) == fresh_labels).double().mean())
        ctx.claim_close(f"metric-rule-{q}d", "fresh points of B_delta(x̄_j) are classified as j by the metric rule", "CE23 (2.61)/(2.68)",
                        measured=acc, expected=1.0, tolerance=0,
                        reason="deterministic: the theorem classifies every point of the ball, so no sampling error is allowed (50 fresh points per class)",
                        reference="the class each fresh point was drawn around")
        ctx.save_figure((_figure_2d if q == 2 else _figure_3d)(result, data), f"layers_{q}d", claims=[f"constructed-cost-{q}d", f"collapse-points-{q}d"], paper_figure="Chen & Munoz Ewald 2023, Thm 2.3 (the seed talk's cone pictures)",
                        caption=f"The explicit zero-cost network in R^{q}, layer by layer: each hidden layer collapses one cluster to the apex of its cone, as the construction of Thm 2.3 prescribes.")
        runs = [(method, init) for method in ("gd", "adam") for init in range(cfg.inits)]
        for method, init in ctx.progress(runs, desc=f"{name}: GD/Adam"):
            lr = cfg.lr_gd if method == "gd" else cfg.lr_adam
            curves[(name, method, init)] = _train(data, result.module.widths, method, lr, cfg.steps, cfg.seed * 1000 + 17 * init + q, ctx, name, init, cfg.log_every)
    ctx.save_figure(_figure_costs(curves, constructed, cfg.steps, cfg.log_every), "costs", claims=(), paper_figure=None,
                    caption=(f"An illustration, not a verdict: the CE23 cost of plain gradient descent and Adam ({cfg.inits} random initialisation(s) each, {cfg.steps} steps) "
                             "against the step, beside the constructed minimum's cost. Chen & Munoz Ewald (arXiv:2311.07065) state non-approximability by gradient descent "
                             "qualitatively and bound no cost that a finite run reaches, so no claim is tested on these curves."))


EXPERIMENT = Experiment(
    name="explicit-minimizers",
    summary="CE23's explicit network has zero cost, collapses each cluster to its predicted point, has a rank-Q^2 Jacobian and classifies fresh points; GD/Adam cost curves as an illustration (no verdict).",
    source="CE23 Thm 2.3; arXiv:2311.07065",
    question='Does the explicit network of CE23 reach zero cost, collapse each cluster to its predicted point, have a rank-Q^2 Jacobian and classify fresh points?',
    theory=('theory/minimizers.md',),
    config=Config,
    run=run,
    quick={"per_class": 20, "steps": 400, "inits": 1, "log_every": 50},
)
