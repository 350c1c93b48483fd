"""``ulpm``: gradient descent on the unconstrained layer-peeled model converges towards neural collapse.

Seed 004 section 4 (Figure 2): K = 5 classes, n = 10 features each, d = 20, full-batch
gradient descent with lr 5 on the MEAN cross-entropy for 1e5 steps (spec
square_loss_and_ulpm.md: the printed summed loss diverges at this step; the run checks
that it is stopped with a DivergenceError). Claims, each against a theorem or closed form:
- the six Figure 2 curves decrease monotonically after a short transient, and their
  log-log(log t) slopes are negative (the spec asks for the sign, not an exponent);
- Lemma 3.1: ``q_min <= (|W|^2+|H|^2)/(2(K-1) sqrt n)`` along the run, the ratio growing;
  Lemma 3.3: ``beta -> 1`` (sign fixed) and the approximate-KKT ``(eps, delta)`` shrink;
- ``|W|^2 - |H|^2`` is conserved by the gradient flow (torchdiffeq) and drifts by
  ``lr^2 sum (|grad_W|^2 - |grad_H|^2)`` under descent;
- Theorem 3.3: the closed-form optimum on a sphere against L-BFGS from random starts;
- Example 3.1: closed-form loss and corrected gradient coefficient; plain (Riemannian)
  descent on the sphere stays at the KKT point, noisy descent escapes to Theorem 3.3's
  optimum; the escape family lowers the loss only beyond ``|beta| ~ e^{-2c^2}``.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..core.errors import DivergenceError  # noqa: E402
from ..toy.ulpm import (  # noqa: E402
    FIGURE_QUANTITIES,
    collapsed_point,
    example31_escape_gain,
    example31_escape_point,
    example31_escape_threshold,
    example31_gradient_coefficient,
    example31_loss,
    example31_point,
    log_spaced_steps,
    minimise_on_sphere,
    nc_margin,
    nc_margin_bound,
    sphere_descent,
    sphere_minimum,
    ulpm_descent,
    ulpm_flow,
    ulpm_gradients,
    ulpm_loss,
)
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "run", "EXPERIMENT"]

SOURCE = "seed 004 (Ji et al., ULPM); spec square_loss_and_ulpm.md"


class Config(ExperimentConfig):
    """The paper's run and the landscape checks."""

    num_classes: int = Field(5, ge=2, description="K")
    per_class: int = Field(10, ge=1, description="n, features per class")
    dim: int = Field(20, ge=1, description="d, feature dimension")
    lr: float = Field(5.0, gt=0, description="gradient-descent step on the mean cross-entropy")
    steps: int = Field(100_000, ge=100, description="descent steps")
    init_scale: float = Field(0.1, gt=0, description="std of the Gaussian initialisation of W and H")
    transient: int = Field(10, ge=0, description="steps after which the Figure 2 curves must decrease monotonically")
    records: int = Field(150, ge=10, description="about this many log-spaced steps are recorded")
    example_c: float = Field(1.0, gt=0, description="scale c of Example 3.1's point W = H = cA")
    sphere_steps: int = Field(3000, ge=10, description="Riemannian descent steps on the sphere (Example 3.1 escape)")
    sphere_noise: float = Field(1e-3, gt=0, description="gradient-noise std of the noisy sphere descent")
    sphere_starts: int = Field(4, ge=1, description="random starts of the L-BFGS check of Theorem 3.3")


def _slope(steps: np.ndarray, values: np.ndarray, start: int) -> float:
    """Least-squares slope of log(value) against log(log t) for ``t >= start``."""
    m = steps >= max(start, 3)
    return float(np.polyfit(np.log(np.log(steps[m])), np.log(values[m]), 1)[0])


def _plot(ctx: RunContext, steps: np.ndarray, rec: dict[str, np.ndarray], xaxis: str) -> None:
    panels = (("feature_norm_variation", "classifier_norm_variation"), ("within_class_variation",), ("feature_cosine", "classifier_cosine"), ("self_duality",))
    titles = ("(a) norm variation", "(b) within-class variation", "(c) cosine to -1/(K-1)", "(d) self-duality")
    m = steps >= 3
    x = np.log(np.log(steps[m])) if xaxis == "loglog" else np.log(steps[m])
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, names, title in zip(axes, panels, titles):
        for name in names:
            ax.plot(x, rec[name][m], label=name)
        ax.set_yscale("log")
        ax.set_xlabel("log(log t)" if xaxis == "loglog" else "log t")
        ax.set_title(title)
        ax.legend(fontsize=7)
    ctx.save_figure(fig, f"figure2_{xaxis}")


def _claims_descent(ctx: RunContext, cfg: Config) -> None:
    K, n, d = cfg.num_classes, cfg.per_class, cfg.dim
    g = torch.Generator().manual_seed(cfg.seed)
    W0 = cfg.init_scale * torch.randn(K, d, dtype=torch.float64, generator=g).to(ctx.device)
    H0 = cfg.init_scale * torch.randn(d, n * K, dtype=torch.float64, generator=g).to(ctx.device)
    tr = ulpm_descent(W0, H0, lr=cfg.lr, steps=cfg.steps, reduction="mean", record=log_spaced_steps(cfg.steps, cfg.records))
    steps = tr.steps.numpy()
    rec = {k: v.numpy() for k, v in tr.records.items()}
    for i, s in enumerate(steps):
        ctx.log_metrics(step=int(s), **{k: float(v[i]) for k, v in rec.items()})
    _plot(ctx, steps, rec, "loglog")
    _plot(ctx, steps, rec, "log")
    after = steps >= cfg.transient
    for name in FIGURE_QUANTITIES:
        v = rec[name][after]
        worst = float(np.diff(v).max())
        ctx.claim_true(f"monotone-{name}", f"{name} decreases at every recorded step after step {cfg.transient}", SOURCE + ", Figure 2", passed=worst <= 0.0, measured=f"largest increase {worst:.3g}")
        ctx.claim_at_most(f"slope-{name}", f"log {name} falls against log(log t) (least-squares slope over t >= sqrt(steps))", SOURCE + ", Figure 2 (sign only, per spec)", measured=_slope(steps, rec[name], int(math.sqrt(cfg.steps))), bound=0.0)
    ctx.claim_at_most("loss-below-log2", "the mean cross-entropy falls below log 2 (the premise of Theorem 3.1 and Lemmas 3.2-3.3)", SOURCE + ", Theorem 3.1", measured=float(rec["loss"][-1]), bound=math.log(2.0))
    ratio = rec["q_min"] / rec["q_bound"]
    ctx.claim_at_most("lemma31-bound", "q_min <= (|W|^2+|H|^2)/(2(K-1)sqrt n) at every record (max of the ratio)", SOURCE + ", Lemma 3.1", measured=float(ratio.max()), bound=1.0 + 1e-12)
    sep = np.nonzero(rec["q_min"] > 0)[0]
    first = int(sep[0]) if sep.size else len(steps) - 1
    ctx.claim_true("nc-margin-ratio-grows", "q_min / bound grows after separation (towards 1, its value at collapse)", SOURCE + ", Lemma 3.1 / Theorem 3.2", passed=bool(ratio[-1] > ratio[first]), measured=[float(ratio[first]), float(ratio[-1])])
    ctx.claim_true("beta-to-one", "beta (cosine of (W, H) with -grad L, sign fixed) grows towards 1 after separation", SOURCE + ", Lemma 3.3 (sign corrected)", passed=bool(rec["beta"][-1] > rec["beta"][first] and rec["beta"][-1] > 0.9), measured=[float(rec["beta"][first]), float(rec["beta"][-1])])
    ctx.claim_true("kkt-shrinks", "the approximate-KKT (eps, delta) of (W, H)/sqrt(q_min) both shrink after separation", SOURCE + ", Lemma 3.2", passed=bool(rec["kkt_eps"][-1] < rec["kkt_eps"][first] and rec["kkt_delta"][-1] < rec["kkt_delta"][first]), measured=[float(rec["kkt_eps"][-1]), float(rec["kkt_delta"][-1])])
    drift = float(rec["imbalance"][-1] - rec["imbalance"][0])
    ctx.claim_at_most("imbalance-drift", "|W|^2 - |H|^2 (conserved by the flow) drifts under lr-5 descent by less than 1% of |W|^2+|H|^2", SOURCE + ", conservation law", measured=abs(drift) / float(rec["R2"][-1]), bound=1e-2)
    # conservation under the flow and the exact one-step drift law
    Wt, Ht = ulpm_flow(W0, H0, torch.linspace(0.0, 20.0, 5, dtype=torch.float64, device=ctx.device))
    imb = (Wt.square().sum(dim=(1, 2)) - Ht.square().sum(dim=(1, 2))).cpu()
    ctx.claim_at_most("imbalance-flow", "|W|^2 - |H|^2 is constant along the gradient flow (dopri5, rtol 1e-10)", SOURCE + ", conservation law", measured=float((imb - imb[0]).abs().max()), bound=1e-7)
    _, gW, gH = ulpm_gradients(W0, H0)
    W1, H1 = W0 - cfg.lr * gW, H0 - cfg.lr * gH
    step_drift = float(W1.square().sum() - H1.square().sum() - (W0.square().sum() - H0.square().sum()))
    ctx.claim_close("imbalance-step", "one descent step changes |W|^2 - |H|^2 by exactly lr^2 (|grad_W|^2 - |grad_H|^2)", SOURCE + ", conservation law", measured=step_drift, expected=float(cfg.lr**2 * (gW.square().sum() - gH.square().sum())), tolerance=1e-9, relative=True)
    try:
        ulpm_descent(W0, H0, lr=cfg.lr, steps=1000, reduction="sum", record=[0])
        diverged, msg = False, "no error"
    except DivergenceError as exc:
        diverged, msg = True, str(exc)
    ctx.claim_true("summed-loss-diverges", "the summed loss (eq. 4 as printed) with lr 5 diverges and is stopped with a DivergenceError", SOURCE + ", conventions", passed=diverged, measured=msg)


def _claims_landscape(ctx: RunContext, cfg: Config) -> None:
    # Theorem 3.3 and Lemma 3.1's equality on a small sphere
    K, n, d, r2 = 3, 2, 4, 6.0
    W, H = collapsed_point(K, n, d, r2, seed=cfg.seed)
    best = sphere_minimum(K, n, r2)
    ctx.claim_close("theorem33-closed-form", "the collapsed point with |W| = |H| has loss nK log(1 + (K-1) exp(-R^2/(2(K-1)sqrt n)))", SOURCE + ", Theorem 3.3", measured=float(ulpm_loss(W, H, reduction="sum")), expected=best, tolerance=1e-10, relative=True)
    ctx.claim_close("lemma31-equality", "at the collapsed point q_min equals Lemma 3.1's bound", SOURCE + ", Lemma 3.1", measured=nc_margin(W, H), expected=nc_margin_bound(W, H), tolerance=1e-12, relative=True)
    search = minimise_on_sphere(K, n, d, r2, starts=cfg.sphere_starts, seed=cfg.seed)
    ctx.claim_close("theorem33-search", "L-BFGS on the sphere from random starts finds no loss below the closed form, and reaches it", SOURCE + ", Theorem 3.3", measured=float(search.values.min()), expected=best, tolerance=1e-10, relative=True)
    # Example 3.1
    c = cfg.example_c
    We, He = example31_point(c, device=ctx.device)
    loss, gW, gH = ulpm_gradients(We, He, reduction="sum")
    A = We / c
    ctx.claim_close("example31-loss", "Example 3.1's summed loss is 8 log(1 + e^{-2c^2})", SOURCE + ", Example 3.1", measured=float(loss), expected=example31_loss(c), tolerance=1e-12, relative=True)
    coeff = float((gW * A).sum() / A.square().sum())
    ctx.claim_close("example31-gradient", "grad_W = grad_H = g(c) A with g(c) = -c(2+2e^{-2c^2})/(2+e^{-2c^2}+e^{2c^2}) (corrected denominator)", SOURCE + ", Example 3.1 corrected", measured=coeff, expected=example31_gradient_coefficient(c), tolerance=1e-12, relative=True)
    ctx.claim_at_most("example31-parallel", "the gradient is parallel to (W, H): |grad_W - g A| + |grad_H - g A| = 0", SOURCE + ", Example 3.1", measured=float(torch.linalg.vector_norm(gW - coeff * A) + torch.linalg.vector_norm(gH - coeff * A)), bound=1e-12)
    thr = example31_escape_threshold(c)
    ctx.claim_close("escape-threshold", "the escape family lowers the loss only for beta below about -e^{-2c^2}", SOURCE + ", Example 3.1 (spec)", measured=float("nan") if thr is None else thr, expected=-math.exp(-2 * c * c), tolerance=0.1, relative=True)
    if thr is not None:
        Wp, Hp = example31_escape_point(c, 2 * thr)
        direct = float(ulpm_loss(Wp, Hp, reduction="sum")) - example31_loss(c)
        ctx.claim_close("escape-gain", "the closed-form loss change along the escape family matches direct evaluation (at beta = 2 beta*)", SOURCE + ", Example 3.1", measured=direct, expected=example31_escape_gain(c, 2 * thr), tolerance=1e-8, relative=True)
        ctx.claim_true("escape-sides", "small perturbations (beta = beta*/2) raise the loss, larger ones (beta = 2 beta*) lower it", SOURCE + ", Example 3.1 (spec)", passed=example31_escape_gain(c, thr / 2) > 0 > example31_escape_gain(c, 2 * thr), measured=[example31_escape_gain(c, thr / 2), example31_escape_gain(c, 2 * thr)])
    _, _, plain = sphere_descent(We, He, lr=0.5, steps=cfg.sphere_steps)
    _, _, noisy = sphere_descent(We, He, lr=0.5, steps=cfg.sphere_steps, noise=cfg.sphere_noise, seed=cfg.seed)
    target = sphere_minimum(4, 1, 16 * c * c)
    ctx.claim_close("plain-descent-stays", "plain descent on the sphere stays at Example 3.1's KKT point (loss unchanged)", SOURCE + ", Example 3.1", measured=float(plain[-1]), expected=example31_loss(c), tolerance=1e-12, relative=True)
    ctx.claim_close("noisy-descent-escapes", "noisy descent on the sphere leaves it and reaches Theorem 3.3's optimum (within 1e-3 relative)", SOURCE + ", Example 3.1 / Theorem 3.4", measured=float(noisy[-1]), expected=target, tolerance=1e-3, relative=True)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(plain.cpu(), label="plain descent")
    ax.plot(noisy.cpu(), label=f"noisy descent (std {cfg.sphere_noise:g})")
    ax.axhline(target, ls="--", c="k", label="Theorem 3.3 optimum")
    ax.set_xlabel("step")
    ax.set_ylabel("summed loss on the sphere")
    ax.legend(fontsize=7)
    ax.set_title(f"Example 3.1, c = {c:g}")
    ctx.save_figure(fig, "example31_escape")


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    for part in ctx.progress((_claims_descent, _claims_landscape), desc="ulpm"):
        part(ctx, cfg)


EXPERIMENT = Experiment(
    name="ulpm",
    summary="gradient descent on the ULPM (K=5, n=10, d=20, lr 5, mean CE) drives the four Figure 2 quantities down; Theorem 3.3, Lemma 3.1 and Example 3.1 against closed forms",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"steps": 3000, "records": 60, "sphere_steps": 1500, "sphere_starts": 2},
)
