"""
The square-loss toy model: normalisation, weight decay, rho and rho_eq
======================================================================

Rangamani et al. (2022) explain neural collapse under the square loss with a toy model. A
bias-free ReLU network is positively homogeneous, so it factors as ``f_W = rho f_V`` with
``V_k = W_k / |W_k|`` of unit norm and ``rho = prod_k |W_k|``. With *normalised* margins
``f_n = y_n f_V(x_n)``, their mean ``mu`` and second moment ``M``, the mean square loss with
weight decay is

``L(rho, V) = (1/N) sum_n (1 - rho f_n)^2 + lam rho^2 = 1 - 2 rho mu + rho^2 (M + lam)``,

a quadratic in ``rho`` whose minimum is ``rho_eq = mu / (M + lam)`` (eq. 11). The scale ``rho``
relaxes towards ``rho_eq`` while the margins move. This tutorial takes these statements one at
a time with :mod:`collapselab.toy`, each against something computed another way. The
conventions (mean and summed losses, PyTorch's ``weight_decay``) and the corrections to the
paper's Lemma 2 are on :doc:`/theory/square-loss`.
"""

# %%
# A small bias-free network
# -------------------------
# Eight unit-norm inputs in ``R^4`` with labels ``+-1`` and a network ``4 -> 6 -> 6 -> 1``
# without biases. Its last layer's sign is chosen so that the mean margin is positive
# (the "average separability" the toy model assumes; otherwise ``rho_eq < 0``).

import math

import matplotlib.pyplot as plt
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from collapselab.toy import (
    bias_free_forward,
    equal_growth,
    lambda_from_weight_decay,
    lemma2_equal_margins,
    lemma9_loss,
    recursion_factor,
    recursion_regime,
    rho,
    rho_eq,
    rho_recursion,
    toy_flow,
    toy_loss,
    unnormalised_flow,
)

g = torch.Generator().manual_seed(0)
N, dim = 8, 4
X = torch.randn(N, dim, dtype=torch.float64, generator=g)
X = X / X.norm(dim=1, keepdim=True)
y = torch.where(torch.arange(N) % 2 == 0, 1.0, -1.0).double()
widths = [dim, 6, 6, 1]
W = [torch.randn(o, i, dtype=torch.float64, generator=g) / math.sqrt(i) for i, o in zip(widths[:-1], widths[1:])]
if float((y * bias_free_forward(W, X)).mean()) < 0:
    W[-1] = -W[-1]

# %%
# Normalisation
# -------------
# :func:`~collapselab.toy.rho` reads ``rho`` from any ``nn.Module`` built of Linear/Conv (and
# BatchNorm) layers. Positive homogeneity says ``f_W(x) = rho f_V(x)`` exactly: the two sides,
# computed by two different forward passes, should agree to rounding (``1e-16`` relative).

model = nn.Sequential(*[m for w in W for m in (nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.float64), nn.ReLU())][:-1])
with torch.no_grad():
    for layer, w in zip(model[::2], W):
        layer.weight.copy_(w)
r = float(rho(model))
V = [w / w.norm() for w in W]
f_W = bias_free_forward(W, X)
f_V = bias_free_forward(V, X)
print(f"rho = {r:.6f} = prod |W_k| = {math.prod(float(w.norm()) for w in W):.6f}")
print(f"max |f_W - rho f_V| / max |f_W| = {float((f_W - r * f_V).abs().max() / f_W.abs().max()):.1e}")
margins_0 = y * f_V
mu0, M0 = float(margins_0.mean()), float(margins_0.square().mean())
print(f"normalised margins: mu = {mu0:.5f}, M = {M0:.6f}")

# %%
# Weight decay, mean and summed losses
# ------------------------------------
# PyTorch's ``weight_decay=wd`` adds ``wd W`` to the gradient, the gradient of
# ``(wd/2)|W|^2``: the paper's ``lam`` is ``wd/2``
# (:func:`~collapselab.toy.lambda_from_weight_decay`). A summed loss with ``lam`` is ``N``
# times a mean loss with ``lam/N``, so ``rho_eq`` computed either way must coincide; every
# function of :mod:`collapselab.toy` takes an explicit ``reduction=``.

lam = lambda_from_weight_decay(0.1)
print(f"weight_decay = 0.1 -> lam = {lam}")
print(f"rho_eq (mean loss, lam) = {rho_eq(mu0, M0, lam, reduction='mean'):.6f}; "
      f"rho_eq (summed loss, N lam) = {rho_eq(mu0, M0, N * lam, reduction='sum', num_samples=N):.6f}")

# %%
# Gradient descent on ``rho`` with frozen margins
# -----------------------------------------------
# With the margins held fixed, gradient descent on ``rho`` is a linear recursion with the exact
# solution ``rho_k = rho_eq + q^k (rho_0 - rho_eq)``, ``q = 1 - 2 lr (M + lam)``
# (:func:`~collapselab.toy.rho_recursion`). We compare it with plain gradient descent by
# autograd on :func:`~collapselab.toy.toy_loss` for three step sizes, one per regime
# (monotone for ``lr <= 1/(2(M + lam))``, a damped oscillation up to ``1/(M + lam)``, divergent
# beyond): the two computations should agree to rounding, relative to the size of the iterates.

for lr in (5.0, 15.0, 21.0):
    q = recursion_factor(lr, M0, lam)
    closed = rho_recursion(0.5, mu0, M0, lam, lr, 20)
    r_t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    iterates = [0.5]
    for _ in range(20):
        (grad,) = torch.autograd.grad(toy_loss(r_t, margins_0, lam, reduction="mean"), r_t)
        r_t = (r_t - lr * grad).detach().requires_grad_(True)
        iterates.append(r_t.item())
    gap = float((closed - torch.tensor(iterates, dtype=torch.float64)).abs().max())
    print(f"lr = {lr}: q = {q:+.3f} ({recursion_regime(q)}), rho_20 = {float(closed[-1]):+.4f}, "
          f"closed form vs autograd descent: {gap / float(closed.abs().max()):.1e} (relative)")

# %%
# The normalised flow
# -------------------
# :func:`~collapselab.toy.toy_flow` integrates the Lagrange-normalised gradient flow
# (seed eqs. 6-7): ``rho`` follows ``rho' = 2 (mu - rho (M + lam))``, i.e. it relaxes towards
# ``rho_eq(t) = mu(t) / (M(t) + lam)`` at rate ``2 (M + lam)``, while the unit-norm ``V_k`` move
# the margins. From a small and from a large ``rho_0`` we should see ``rho`` rise and fall to
# meet ``rho_eq(t)`` (dashed), which itself moves as the margins grow. The flow's field jumps
# where a ReLU unit crosses its kink, so fixed-step RK4 is only first-order accurate there;
# ``toy_flow`` also runs at twice the step and reports the discrepancy as ``error_estimate``
# (relative), refusing a step whose estimate exceeds ``rtol = 1e-2``: at step 0.2 this run is
# refused (estimate 0.06), at 0.05 too (0.017), at 0.02 it is accepted.

t = torch.linspace(0.0, 40.0, 41, dtype=torch.float64)
runs = {rho0: toy_flow(V, rho0, X, y, t, lam=lam, reduction="mean", step_size=0.02) for rho0 in (0.05, 1 / math.sqrt(lam))}
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for rho0, tr in runs.items():
    eq = tr.mu / (tr.second_moment + lam)
    (line,) = ax.plot(tr.t, tr.rho, label=f"rho, rho_0 = {rho0:.2f}")
    ax.plot(tr.t, eq, "--", c=line.get_color(), lw=1)
    print(f"rho_0 = {rho0:.3f}: rho(40) = {float(tr.rho[-1]):.4f}, rho_eq(40) = {float(eq[-1]):.4f}, mu: {float(tr.mu[0]):.4f} -> {float(tr.mu[-1]):.4f}, "
          f"error estimate {tr.error_estimate:.1e}")
ax.set_xlabel("t")
ax.set_ylabel("rho")
ax.set_ylim(0, None)
ax.legend(fontsize=8)
ax.set_title("rho relaxes to rho_eq = mu / (M + lam) (dashed)", fontsize=10)
fig.tight_layout()
plt.show()

# %%
# Lemma 9: along the flow, ``L = 1 - rho (mu + rho'/2)``. At the final state of each run we
# compute ``rho' = -dL/drho`` by autograd and compare the two sides
# (:func:`~collapselab.toy.lemma9_loss`): an identity, so they agree to rounding.

for rho0, tr in runs.items():
    f = y * bias_free_forward(list(tr.weights), X)
    r_t = torch.tensor(float(tr.rho[-1]), dtype=torch.float64, requires_grad=True)
    loss = toy_loss(r_t, f, lam, reduction="mean")
    (grad,) = torch.autograd.grad(loss, r_t)
    lemma9 = float(lemma9_loss(r_t.item(), f.mean().item(), -grad.item(), reduction="mean"))
    print(f"rho_0 = {rho0:.3f}: L = {loss.item():.12f}, Lemma 9 gives {lemma9:.12f}")

# %%
# Lemma 2, with the corrected gap
# -------------------------------
# If all ``N`` margins are held at ``1/rho_0`` (the interpolating value without weight decay),
# the summed loss ``N (1 - rho/rho_0)^2 + lam rho^2`` is minimal at
# ``rho = rho_0 / (1 + lam rho_0^2 / N)``, a gap ``1 - rho/rho_0 = lam rho_0^2 / (N + lam rho_0^2)``
# (the paper prints ``lam rho_0``). :func:`~collapselab.toy.lemma2_equal_margins` gives the
# closed form; a one-dimensional numerical minimisation should agree to its tolerance.

rho0, lam_sum = 3.0, 0.4
case = lemma2_equal_margins(rho0, lam_sum, N, reduction="sum")
numeric = minimize_scalar(lambda r: N * (1 - r / rho0) ** 2 + lam_sum * r**2, bounds=(0, rho0), method="bounded", options={"xatol": 1e-12})
print(f"Lemma 2: rho = {case.rho:.10f} (numerical {numeric.x:.10f}), gap = {case.gap:.6f}, paper's lam rho_0 = {lam_sum * rho0:.6f}")

# %%
# Lemma 10: equal growth of the layers
# ------------------------------------
# Without normalisation, gradient flow changes every ``|W_k|^2`` by the same data term, so the
# differences ``|W_k|^2 - |W_1|^2`` only feel the weight decay and shrink like
# ``e^{-2 lam t}`` (:func:`~collapselab.toy.equal_growth`). We integrate the unnormalised flow
# with :func:`~collapselab.toy.unnormalised_flow` and compare. The agreement is limited by the
# integrator, not by the law: its error is of order ``h^4`` on smooth stretches and of order
# ``h`` times the jump of the field where a ReLU unit switches.

tu = unnormalised_flow(W, X, y, torch.linspace(0.0, 5.0, 11, dtype=torch.float64), lam=lam, reduction="mean", step_size=0.02)
sq = tu.rho_k.square()
gaps = sq[:, 1:] - sq[:, :1]
predicted = equal_growth(gaps[0], lam, tu.t[:, None])
print(f"|W_k|^2 - |W_1|^2 at t = 0: {gaps[0].tolist()}, at t = 5: {gaps[-1].tolist()}")
print(f"predicted e^(-2 lam t) law at t = 5: {predicted[-1].tolist()}; largest deviation along the run: {float((gaps - predicted).abs().max()):.1e}")
