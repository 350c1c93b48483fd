"""Standard loss with untruncated clustered data: the closed form of Chen 2025 Thm 9.1.

Hypotheses of Thm 9.1, checked before the flow starts: (9.1)/(9.2) every point lies strictly
inside every positive sector of the aligned network (random ``R_l``, ``R_l beta^(l)`` large
enough; :func:`collapselab.effective.check_untruncated`), so ``tau = id`` on the data; (9.9)
``A = X_0 N^{-1} X_0^T`` is invertible (:func:`collapselab.effective.clustered_closed_form`);
``b^(Q+1) = 0``; for the CE23 comparison the class means (``T^red``) are invertible.

The flow is the gradient flow of the standard loss (2.22)
``C_N = 1/2 sum_j 1/N_j sum_i |x^(Q+1)_{j,i} - y_j|^2`` of the actual ReLU network (its layers
built from the cumulative parameters ``(beta^(l), R_l)`` and ``W = W^(Q+1)``), in those
cumulative coordinates, with the gradient computed by autograd and ``R_l`` moved along the
Riemannian gradient on ``O(Q)`` (Lemma 6.1); it is integrated by scipy's DOP853 in flat
coordinates (no re-orthogonalisation). Claims: the hidden parameters are stationary (9.6);
``W(s)`` follows the closed form (9.10); ``|W(s) - W_inf| <= e^{-lambda_min(A) s} |W(0) - W_inf|``
on that integrated flow; the limiting cost of (9.12) equals CE23's barycentric formula
``1/2 ||Y |Delta_2|^{1/2} (1 + Delta_2)^{-1/2}||_F^2`` (CE23 (2.53)-(2.56)), computed here independently.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

from ..core.cost import weighted_l2  # noqa: E402
from ..core.data import ClassificationData, gaussian_clusters  # noqa: E402
from ..core.errors import DivergenceError, SingularError  # noqa: E402
from ..core.network import forward  # noqa: E402
from ..effective import check_untruncated, clustered_closed_form, make_state  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "run", "EXPERIMENT"]

SOURCE = "Chen 2025 (arXiv:2501.07400) Thm 9.1 (9.6)-(9.12); CE23 (arXiv:2309.10639) §2.4"
RTOL, ATOL = 1e-12, 1e-14
"""DOP853 tolerances of the autograd flow."""
EPS = float(torch.finfo(torch.float64).eps)


class Config(ExperimentConfig):
    classes: int = Field(3, ge=2, le=8, description="Q = M: number of clusters, input dimension and hidden layers (autograd cost grows like Q^3 N)")
    per_class: int = Field(50, ge=2, le=10_000, description="points per cluster")
    delta: float = Field(0.2, gt=0, le=0.5, description="cluster radius (at most 0.5: the means e_j + 0.2 g_j stay apart)")
    s_end: float = Field(
        20.0, gt=0, le=500.0,
        description="length of the flow; at most 500: W(s) - W_inf decays like e^{-lambda_min(A) s}, so beyond s = 37/lambda_min(A) "
        "the closed form equals its limit to float64 precision (e^{-37} < eps); lambda_min(A) is about 0.5 for these clusters "
        "and was above 0.09 at each of 300 seeds (37/0.09 < 500)",
    )
    points: int = Field(41, ge=2, le=1000, description="output times")


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


def _layers(beta: torch.Tensor, R: torch.Tensor, W: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Layer weights of the aligned network with cumulative parameters ``(beta, R)`` and ``W^(Q+1) = W``, ``b^(Q+1) = 0``.

    ``W_1 = R_1``, ``b_1 = R_1 beta^(1)``; ``W_l = R_l R_{l-1}^T``, ``b_l = R_l (beta^(l) - beta^(l-1))``;
    ``W_{L+1} = W R_L^T``, ``b_{L+1} = -W beta^(L)`` (Chen 2025 (3.20)-(3.21)).
    """
    layers = [(R[0], R[0] @ beta[0])]
    for l in range(1, R.shape[0]):
        layers.append((R[l] @ R[l - 1].T, R[l] @ (beta[l] - beta[l - 1])))
    layers.append((W @ R[-1].T, -W @ beta[-1]))
    return layers


class _AutogradFlow:
    """Gradient flow of the standard loss of the network in the cumulative coordinates ``u = (beta, R, W)`` (flat, float64 numpy).

    ``d beta/ds = -grad_beta C``, ``dR_l/ds = -Pi_A(grad_R C R^T)_l R_l`` (Lemma 6.1), ``dW/ds = -grad_W C``.
    """

    def __init__(self, data: ClassificationData, Q: int) -> None:
        self.data, self.Q = data, Q
        self.sizes = (Q * Q, Q * Q * Q, Q * Q)

    def split(self, u: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        Q = self.Q
        b, R, W = torch.split(torch.as_tensor(u, device=self.data.X.device), self.sizes)
        return b.reshape(Q, Q), R.reshape(Q, Q, Q), W.reshape(Q, Q)

    def gradients(self, u: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad_beta C, Omega = Pi_A(grad_R C R^T), grad_W C)`` by autograd through the network's forward pass."""
        beta, R, W = (t.clone().requires_grad_(True) for t in self.split(u))
        loss = 0.5 * weighted_l2(forward(_layers(beta, R, W), self.data.X), self.data.labels, self.data.Y)
        gb, gR, gW = torch.autograd.grad(loss, (beta, R, W))
        G = gR @ R.detach().transpose(1, 2)
        return gb, 0.5 * (G - G.transpose(1, 2)), gW

    def __call__(self, _: float, u: np.ndarray) -> np.ndarray:
        gb, omega, gW = self.gradients(u)
        R = self.split(u)[1]
        return -torch.cat([gb.reshape(-1), (omega @ R).reshape(-1), gW.reshape(-1)]).cpu().numpy()


def _aligned_untruncated(data: ClassificationData, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(beta (Q, Q), R (Q, Q, Q))``: Haar-random ``R_l`` and ``R_l beta^(l) = (max_i |x_i| + 1) 1``, so every ``z_l >= 1 > 0`` (9.1)/(9.2)."""
    Q, dev = data.dim, data.X.device
    Qm, Rm = np.linalg.qr(rng.standard_normal((Q, Q, Q)))
    R = torch.as_tensor(Qm * np.sign(np.diagonal(Rm, axis1=1, axis2=2))[:, None, :], device=dev)
    m = float(data.X.norm(dim=1).max()) + 1.0
    beta = (R.transpose(1, 2) @ torch.full((Q, Q, 1), m, dtype=R.dtype, device=dev)).squeeze(2)
    check_untruncated(make_state(beta, R), data, "standard-loss-clustered")
    return beta, R


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    Q = cfg.classes
    data = gaussian_clusters(Q, cfg.per_class, delta=cfg.delta, seed=cfg.seed).to(ctx.device)
    cond_means = float(torch.linalg.cond(data.class_means))
    if cond_means > 1e8:
        raise SingularError(f"standard-loss-clustered: the class means are nearly dependent (cond {cond_means:.3g}); CE23's formula needs T^red invertible, change the seed")
    beta0, R0 = _aligned_untruncated(data, ctx.rng)
    W0 = torch.as_tensor(0.1 * ctx.rng.standard_normal((Q, Q)), device=ctx.device)
    sol = clustered_closed_form(data, W0)
    flow = _AutogradFlow(data, Q)
    times = np.linspace(0.0, cfg.s_end, cfg.points)
    u0 = torch.cat([beta0.reshape(-1), R0.reshape(-1), W0.reshape(-1)]).cpu().numpy()
    ode = solve_ivp(flow, (0.0, cfg.s_end), u0, t_eval=times, method="DOP853", rtol=RTOL, atol=ATOL)
    if not ode.success:
        raise DivergenceError(f"standard-loss-clustered: DOP853 stopped early: {ode.message}")
    # global error of a contractive flow <= sum of the local errors (<= atol + rtol |u| per accepted step; 12 evaluations a step)
    steps = math.ceil(ode.nfev / 12)
    tol_ode = steps * (ATOL + RTOL * float(np.abs(ode.y).max()))
    d0 = float(torch.linalg.matrix_norm(W0 - sol.limit, ord=2))
    gaps, dist, env, hidden_grad, hidden_move, scale = [], [], [], [], [], []
    for i in ctx.progress(range(len(times)), desc="autograd flow"):
        u = ode.y[:, i]
        beta, R, W = flow.split(u)
        gb, omega, _ = flow.gradients(u)
        hidden_grad.append(max(float(gb.abs().max()), float(omega.abs().max())))
        hidden_move.append(max(float((beta - beta0).abs().max()), float((R - R0).abs().max())))
        out = forward(_layers(beta, R, W), data.X)
        scale.append(float(out.abs().max() + data.Y.abs().max()) * float(W.norm()) * float(data.X.norm(dim=1).max() + beta.norm(dim=1).max()))
        gaps.append(float((sol.W(float(times[i])) - W).abs().max()))
        dist.append(float(torch.linalg.matrix_norm(W - sol.limit, ord=2)))
        env.append(d0 * math.exp(-sol.rate * times[i]))
        ctx.log_metrics(s=float(times[i]), loss=float(sol.loss(W)), closed_form_vs_autograd_flow=gaps[-1], distance_to_limit=dist[-1], envelope=env[-1], hidden_gradient=hidden_grad[-1])
    tol_grad = 8 * (3 * Q + math.log2(data.num_samples) + 4) * EPS * max(scale)
    ctx.claim_true(
        "hidden-stationary", "the hidden-layer parameters (beta^(l), R_l) are stationary (9.6): zero gradient and no motion along the flow", SOURCE,
        passed=max(hidden_grad) <= tol_grad and max(hidden_move) <= cfg.s_end * tol_grad,
        measured={"max_hidden_gradient": max(hidden_grad), "max_hidden_motion": max(hidden_move)},
        expected={"max_hidden_gradient_at_most": tol_grad, "max_hidden_motion_at_most": cfg.s_end * tol_grad},
        reason="the exact gradient vanishes (tau = id on the data); rounding of a backward pass through 2Q + 1 layers of sums of N terms "
        "of size S = |output| |W| |z|: 8 (3Q + log2 N + 4) eps S; motion at most s_end times that",
        reference="autograd of the standard loss (2.22) through the ReLU network's layers",
    )
    ctx.claim_at_most(
        "closed-form", "the closed form (9.10) equals the gradient flow of the network's loss integrated by DOP853 (max entry gap of W)", SOURCE,
        measured=max(gaps), bound=tol_ode,
        reason=f"the flow of W is contractive (e^(-sA), A >= 0), so the global error is at most the sum of DOP853's local errors: "
        f"{steps} steps x (atol {ATOL:g} + rtol {RTOL:g} max|u|)",
        reference="autograd gradient flow of the standard loss (not the matrices A, B of the closed form), DOP853 in flat coordinates",
    )
    excess = max(d - e for d, e in zip(dist, env))
    ctx.claim_at_most(
        "rate", "|W(s) - W_inf|_2 <= exp(-lambda_min(A) s) |W(0) - W_inf|_2 along the integrated flow (Thm 9.1); measured: largest excess", SOURCE,
        measured=excess, bound=math.sqrt(Q) * tol_ode,
        reason="DOP853 global error of W (entrywise, see closed-form) times sqrt(Q) for the spectral norm",
        reference="Thm 9.1 envelope with W_inf = Y^ext X_0^+ (9.12) and lambda_min(A) (9.9)",
    )
    cond_A = float(torch.linalg.cond(sol.A))
    c_inf = float(sol.loss(sol.limit))
    tol_cost = 100 * Q * EPS * cond_A * (1 + float(data.Y.abs().max()) ** 2 / c_inf)
    ctx.claim_close(
        "limit-cost", "the limiting cost C_N(W_inf) equals CE23's barycentric formula", SOURCE,
        measured=c_inf, expected=_barycentric_cost(data), tolerance=tol_cost, relative=True,
        reason=f"both solve a linear system with the class-mean structure (cond(A) = {cond_A:.3g}); the cost is a small residual of entries of size |Y|, "
        "so relative error 100 Q eps cond(A) (1 + |Y|^2 / C)",
        reference="CE23 (2.53)-(2.56) barycentric formula 1/2 ||Y |Delta_2|^(1/2) (1 + Delta_2)^(-1/2)||_F^2 (no least-squares solve)",
    )
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogy(times, dist, label="|W(s) - W_inf| (autograd flow)")
    ax.semilogy(times, env, "--", label="exp(-lambda_min(A) s) |W(0) - W_inf|")
    ax.set_xlabel("s")
    ax.legend()
    ctx.save_figure(fig, "clustered_closed_form", claims=["closed-form", "rate", "limit-cost"], paper_figure="Chen 2025, Thm 9.1 (no figure)",
                    caption="Distance of the network's gradient flow to its limit against s (log scale), with the closed form (9.10) and its envelope exp(-lambda_min(A) s) (dashed).")


EXPERIMENT = Experiment(
    name="standard-loss-clustered",
    summary="untruncated clusters under the standard loss: the network's gradient flow follows the closed form (9.10) to CE23's barycentric cost",
    source=SOURCE,
    question="For untruncated clusters under the standard loss, does the network's gradient flow follow the closed form (9.10) to CE23's barycentric cost?",
    theory=('theory/effective-flow.md', 'theory/minimizers.md'),
    config=Config,
    run=run,
    quick={"per_class": 10, "points": 11},
)
