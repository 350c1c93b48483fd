"""Adapted gradient flow: exponential loss, straight output paths in t, rank loss, shared equilibria, NTK view.

Seed 003 (Chen & Muñoz Ewald 2024, arXiv:2408.01517) Lemma 2.2, Thm 2.3, Props 2.4-2.5,
§3.3, and Chen arXiv:2311.15487 (Thm C'24), as in spec/chen.md 5.1 (errata E8, E9);
cost ``C = (1/2N)|x - y|^2``.

Parts, and what each claim compares with (always an independent prediction):

1. Loss against flow time ``s`` for the homotopy ``V_alpha``, ``alpha`` in ``alphas``
   (``alpha = 0`` standard, ``alpha = 1`` adapted), on an overparametrised ReLU net by
   explicit Euler (a stable step per field). Figure ``loss``.
2. The exponential law ``x(s) = y + e^{-s/N}(x_0 - y)``, ``C(s) = e^{-2s/N} C(0)``, i.e. the
   straight line ``(1 - t) x_0 + t y`` in ``t = 1 - e^{-s/N}`` (Lemma 2.2, Prop 2.4), by
   DOP853: on a smooth (tanh) net of the same widths over the whole horizon, and on the
   ReLU net up to the first sliding event. Seed 003 assumes ``D`` Lipschitz; for ReLU nets
   the adapted field is discontinuous at activation boundaries and trajectories slide
   along them, where the law fails (the Euler curves of part 1 show the size of the
   effect; see ``collapselab.flows.integrate``). Figure ``paths``.
3. Rank loss (two copies of an input with different labels): the deviation from the
   straight line equals the corrected Prop 2.5 prediction (propagator generator
   ``P^perp/(1 - t)``, spec errata E8), integrated alongside the flow.
4. The equilibrium reached by the adapted flow under rank loss is a zero of every
   ``V_alpha`` although ``grad_x C != 0`` (Thm 2.3: the interpolation preserves zeros).
5. NTK view (§3.3): the adapted kernel ``D (D^T D)^+ D^T`` is the identity on the data
   (``K(x_i, x_j) = delta_ij 1_Q``, (3.17)), computed from a dense SVD pseudo-inverse.
   Figure ``kernels``.
6. The optimizer (:class:`~collapselab.flows.AdaptedFlow`, Euler steps ``ds = N`` of the
   adapted flow = minimum-norm Gauss-Newton) on the ReLU net, in full float64 and in mixed
   precision (float32 factorisation refined in float64): both reach ``C <= 1e-10``, and every
   mixed step leaves at most ``refine_rtol |r|`` of the linearised residual.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402
from torch import nn  # noqa: E402

from ..core.data import gaussian_clusters  # noqa: E402
from ..core.network import ReLUNet  # noqa: E402
from ..flows import AdaptedField, AdaptedFlow, HomotopyField, OutputMap, Status, Trajectory, evaluate_field, integrate  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run"]

SOURCE = "seed 003 (arXiv:2408.01517) Lemma 2.2, Thm 2.3, Props 2.4-2.5, §3.3; spec/chen.md 5.1, errata E8"


class Config(ExperimentConfig):
    widths: list[int] = Field([4, 128, 3], min_length=3, description="ReLU net widths [M, d_1, ..., Q] (overparametrised: K >= QN)")
    per_class: int = Field(4, ge=2, description="training points per class (N = Q * per_class)")
    spread: float = Field(0.5, gt=0, description="radius of each class cluster around its mean")
    horizon: float = Field(2.0, gt=0, description="flow time s_end = horizon * N")
    step: float = Field(0.01, gt=0, le=1, description="Euler step fraction h = ds/N for the adapted field (others: stable step)")
    alphas: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], min_length=1, description="homotopy parameters, 0 = standard, 1 = adapted")
    rtol: float = Field(1e-11, gt=0, description="DOP853 relative tolerance")
    log_points: int = Field(40, ge=2, description="metrics rows per curve")


def _tanh_twin(widths: list[int]) -> nn.Sequential:
    """A tanh MLP with the ReLU net's widths (Lipschitz D: the setting of seed 003)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers).double()


def _exact_error(tr: Trajectory) -> float:
    """``max |x(s) - y - e^{-s/N}(x_0 - y)| / max |x_0 - y|`` over the recorded states."""
    exact = tr.y + torch.exp(-tr.s / tr.num_samples)[:, None].to(tr.y) * (tr.x0 - tr.y)
    return float((tr.outputs - exact).abs().max() / (tr.x0 - tr.y).abs().max())


def _log_curve(ctx: RunContext, part: str, alpha: float, tr: Trajectory, points: int) -> None:
    stride = max(1, len(tr.s) // points)
    pred = tr.predicted_cost()
    for i in list(range(0, len(tr.s), stride)) + ([len(tr.s) - 1] if (len(tr.s) - 1) % stride else []):
        ctx.log_metrics(part=part, alpha=alpha, s=float(tr.s[i]), t=float(tr.t[i]), cost=float(tr.cost[i]), exponential_law=float(pred[i]), rank=int(tr.rank[i]), deviation=float(tr.deviation[i]))


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    dev = ctx.device
    q = cfg.widths[-1]
    data = gaussian_clusters(q, cfg.per_class, dim=cfg.widths[0], delta=cfg.spread, seed=cfg.seed).to(dev)
    X, n = data.X, data.num_samples
    y = data.targets.reshape(-1)
    s_end = cfg.horizon * n
    torch.manual_seed(cfg.seed)
    relu = ReLUNet(cfg.widths, device=dev)
    omap, theta0 = OutputMap.from_module(relu, X)
    ctx.log.info("ReLU net %s: K=%d, QN=%d, N=%d", cfg.widths, theta0.numel(), y.numel(), n)

    # 1. loss against s for the homotopy, explicit Euler with a stable step per field
    lam_max = float(torch.linalg.eigvalsh(omap.gram(theta0))[-1])  # largest eigenvalue of the NTK Gram D D^T
    curves = {}
    for alpha in ctx.progress(cfg.alphas, desc="homotopy"):
        rate = alpha + (1.0 - alpha) * lam_max  # largest output contraction rate x N of V_alpha
        h = min(cfg.step, 0.5 / rate)
        tr = integrate(HomotopyField(alpha), omap, theta0, y, s_end, method="euler", ds=h * n, on_rank_loss="continue", record_outputs=alpha == 1.0)
        curves[alpha] = tr
        _log_curve(ctx, "homotopy_euler", alpha, tr, cfg.log_points)

    # 2. exponential law / straight lines: tanh twin (whole horizon) and ReLU (until sliding)
    torch.manual_seed(cfg.seed)
    smooth_map, smooth_theta = OutputMap.from_module(_tanh_twin(cfg.widths).to(dev), X)
    smooth = integrate(AdaptedField(), smooth_map, smooth_theta, y, s_end, rtol=cfg.rtol, atol=cfg.rtol * 1e-2)
    _log_curve(ctx, "tanh_dop853", 1.0, smooth, cfg.log_points)
    relu_exact = integrate(AdaptedField(), omap, theta0, y, s_end, rtol=cfg.rtol, atol=cfg.rtol * 1e-2, max_steps=2000)
    _log_curve(ctx, "relu_dop853", 1.0, relu_exact, cfg.log_points)
    ctx.claim_true("smooth-flow-completes", "the adapted flow of the tanh twin runs to s_end without rank loss or failure", SOURCE, passed=smooth.status.name == "END_TIME", measured=smooth.message)
    ctx.claim_close("smooth-straight-line", "tanh twin: outputs follow (1 - t) x_0 + t y, t = 1 - e^{-s/N} (max error / max|x_0 - y|)", SOURCE + " (Lemma 2.2, Prop 2.4)", measured=_exact_error(smooth), expected=0.0, tolerance=1e-8)
    cost_ratio = float((smooth.cost / smooth.predicted_cost() - 1).abs().max())
    ctx.claim_close("smooth-exponential-cost", "tanh twin: C(s) = e^{-2s/N} C(0) (max relative error)", "Chen arXiv:2311.15487 Thm C'24; spec/chen.md 5.1", measured=cost_ratio, expected=0.0, tolerance=1e-7)
    s_slide = float(relu_exact.s[-1])
    ctx.claim_close("relu-straight-line-until-sliding", f"ReLU net: x(s) = y + e^{{-s/N}}(x_0 - y) on [0, s*], s* = {s_slide:.4g} = {s_slide / n:.3g} N ({relu_exact.status.name})", SOURCE + " (Lemma 2.2)", measured=_exact_error(relu_exact), expected=0.0, tolerance=1e-7)
    euler_gap = float((curves[1.0].cost / curves[1.0].predicted_cost() - 1).abs().max()) if 1.0 in curves else math.nan
    ctx.log.info("ReLU adapted flow by Euler (h=%g): max |C/C_exp - 1| = %.3g over [0, %g N] (sliding at activation boundaries)", cfg.step, euler_gap, cfg.horizon)

    # 3. rank loss: two copies of one input with different labels (tanh twin: Lipschitz D)
    X_dup = X.clone()
    other = int(torch.nonzero(data.labels != data.labels[0])[0])
    X_dup[other] = X_dup[0]
    dup_map = OutputMap(smooth_map.f, X_dup)
    dup = integrate(AdaptedField(), dup_map, smooth_theta, y, s_end, rtol=cfg.rtol, atol=cfg.rtol * 1e-2, on_rank_loss="continue")
    _log_curve(ctx, "rank_loss", 1.0, dup, cfg.log_points)
    ctx.claim_close("rank-loss-rank", "duplicated input: rank D = QN - Q along the flow (min over the run)", SOURCE + " (Prop 2.5 setting)", measured=float(dup.rank.min()), expected=float(y.numel() - q), tolerance=0.0)
    ctx.claim_at_least("rank-loss-deviates", "under rank loss the outputs leave the straight line (max deviation / max|x_0 - y|)", SOURCE + " Prop 2.5", measured=float(dup.deviation.max()) / float((dup.x0 - dup.y).abs().max()), bound=1e-2)
    ctx.claim_close("rank-loss-corrected-prop-2.5", "the deviation equals the corrected Prop 2.5 (1 - t) R(t), dR/dt = P_t^perp (R + x_0 - y)/(1 - t) (max error)", SOURCE + " Prop 2.5 corrected, errata E8", measured=float(dup.deviation_error.max()), expected=0.0, tolerance=1e-7)

    # 4. equilibria: Gauss-Newton (Euler, ds = N) to the rank-loss equilibrium, then every V_alpha there
    eq = integrate(AdaptedField(), dup_map, smooth_theta, y, 40.0 * n, method="euler", ds=float(n), on_rank_loss="continue", record_outputs=False)
    ratios, defects = [], []
    for alpha in cfg.alphas:
        start = evaluate_field(HomotopyField(alpha), dup_map, smooth_theta, y)
        end = evaluate_field(HomotopyField(alpha), dup_map, eq.theta, y)
        ratios.append(float(torch.linalg.vector_norm(end.velocity) / torch.linalg.vector_norm(start.velocity)))
        defects.append(end.defect)
    ctx.claim_at_most("same-equilibria", f"at the adapted flow's equilibrium every V_alpha vanishes (max over alpha of |V_alpha(theta*)| / |V_alpha(theta_0)|; {eq.status.name})", SOURCE + " Thm 2.3", measured=max(ratios), bound=1e-8)
    ctx.claim_at_least("equilibrium-not-global", "... although grad_x C != 0 there: |P^perp grad_x C| (a rank-loss critical point)", "spec/chen.md 5.1 (Thm C'24, equilibria)", measured=min(defects), bound=1e-3)

    # 5. NTK view at theta_0 of the ReLU net
    D = omap.jacobian(theta0)
    ntk = D @ D.T
    adapted_kernel = D @ torch.linalg.pinv(D, rtol=1e-12)  # D (D^T D)^+ D^T = D D^+
    eye = torch.eye(y.numel(), dtype=D.dtype, device=D.device)
    ctx.claim_close("adapted-kernel-identity", "the adapted kernel D (D^T D)^+ D^T is the identity on the data (max entry error)", SOURCE + " §3.3 (3.17)", measured=float((adapted_kernel - eye).abs().max()), expected=0.0, tolerance=1e-10)

    # 6. the optimizer, full and mixed precision, from theta_0
    runs = {}
    for precision in ("full", "mixed"):
        torch.manual_seed(cfg.seed)
        opt = AdaptedFlow(ReLUNet(cfg.widths, device=dev), X, data.targets, tol=1e-10, precision=precision)
        runs[precision] = (opt.run(), opt)
        ctx.log.info("AdaptedFlow (%s precision): %s", precision, runs[precision][0].message)
    converged = {p: tr.status is Status.CONVERGED for p, (tr, _) in runs.items()}
    ctx.claim_true("optimizer-converges", "AdaptedFlow reaches C <= 1e-10 in full and in mixed precision (steps)", "issue 5; spec/chen.md 5.1", passed=all(converged.values()), measured={p: tr.steps for p, (tr, _) in runs.items()})
    mixed, opt = runs["mixed"]
    residual_norms = torch.sqrt(2 * n * mixed.cost[:-1])  # |r| before each step
    ctx.claim_at_most("optimizer-mixed-defect", "mixed precision: |r - D d| / |r| per step (max), against refine_rtol", "collapselab.flows.linalg.refined_pullback", measured=float((mixed.defect[1:] / residual_norms).max()), bound=opt.refine_rtol)

    _figures(ctx, cfg, curves, smooth, relu_exact, dup, ntk, adapted_kernel, n)


def _np(t: torch.Tensor):
    return t.detach().cpu().numpy()


def _figures(ctx: RunContext, cfg: Config, curves, smooth, relu_exact, dup, ntk, adapted_kernel, n: int) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for alpha, tr in curves.items():
        ax.semilogy(_np(tr.s) / n, _np(tr.cost), label=f"Euler, alpha={alpha:g}" + (" (adapted)" if alpha == 1 else " (standard)" if alpha == 0 else ""))
    ax.semilogy(_np(smooth.s) / n, _np(smooth.cost), "k:", label="tanh twin, adapted (DOP853)")
    first = next(iter(curves.values()))
    ax.semilogy(_np(first.s) / n, _np(first.cost[0] * torch.exp(-2 * first.s / n)), "k--", lw=1, label="C(0) e^{-2s/N}")
    ax.set_xlabel("s / N")
    ax.set_ylabel("C = |x - y|^2 / 2N")
    ax.set_title(f"ReLU net {cfg.widths}, N={n}")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "loss")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, tr, title in ((axes[0], smooth, "tanh twin (DOP853)"), (axes[1], curves.get(1.0, relu_exact), "ReLU net (Euler)")):
        if tr.outputs is None:
            continue
        for k in range(min(4, tr.outputs.shape[1])):
            ax.plot(_np(tr.t), _np(tr.outputs[:, k]), lw=1.5)
            ax.plot([0, 1], [float(tr.x0[k]), float(tr.y[k])], "k:", lw=0.8)
        ax.set_xlabel("t = 1 - exp(-s/N)")
        ax.set_title(title)
    axes[0].set_ylabel("outputs (dotted: straight lines)")
    ctx.save_figure(fig, "paths")

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    axes[0].imshow(_np(ntk), cmap="viridis")
    axes[0].set_title("NTK Gram D D^T")
    axes[1].imshow(_np(adapted_kernel), cmap="viridis")
    axes[1].set_title("adapted kernel (identity)")
    axes[2].plot(_np(dup.t), _np(dup.deviation), label="measured |x - line|")
    axes[2].plot(_np(dup.t), _np(dup.deviation_predicted), "--", label="corrected Prop 2.5")
    axes[2].set_xlabel("t")
    axes[2].set_title("rank loss: deviation")
    axes[2].legend(fontsize=7)
    ctx.save_figure(fig, "kernels")


EXPERIMENT = Experiment(
    name="adapted-flow",
    summary="adapted flow: C(s) = e^{-2s/N} C(0), straight output paths in t (tanh; ReLU until its first sliding mode); corrected Prop 2.5 under rank loss; shared equilibria; adapted kernel = identity",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"widths": [4, 64, 3], "per_class": 3, "step": 0.02, "log_points": 15},
)
