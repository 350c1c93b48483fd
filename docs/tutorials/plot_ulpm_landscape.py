"""
The ULPM landscape and Example 3.1
==================================

The unconstrained layer-peeled model (ULPM) of Ji et al. (2022) treats the last-layer features
as free parameters: a classifier ``W`` (``K x d``) and features ``H`` (``d x nK``, ``n`` per
class, class-major columns), trained together on the cross-entropy of the logits ``W H``. It
has no weight decay and no constraint, yet gradient descent drifts to neural collapse. Three
facts explain it:

* **Theorem 3.3**: on every sphere ``|W|^2 + |H|^2 = R^2`` the loss is minimal exactly at
  collapse (a simplex ETF, ``|W| = |H|``), with a closed-form value;
* **Lemma 3.1**: the neural-collapse margin ``q_min`` is at most
  ``(|W|^2 + |H|^2) / (2 (K-1) sqrt n)``, with equality exactly at collapse;
* **Example 3.1** shows the landscape also has other critical directions: a point whose gradient
  is parallel to ``(W, H)`` (a KKT point of the sphere problem) that is *not* collapsed. Plain
  descent on the sphere stays there; the smallest noise lets it escape.

This tutorial checks each against a second computation with :mod:`collapselab.toy.ulpm`. The
paper prints a wrong gradient coefficient in Example 3.1; the corrected one is on
:doc:`/theory/ulpm` and in the ledger :doc:`/theory/errata`.

Every function takes ``reduction="sum"`` (the paper's loss, summed over the ``N = nK``
columns) or ``"mean"``; we always pass it explicitly.
"""

# %%
# Theorem 3.3 and Lemma 3.1 on a sphere
# -------------------------------------
# For ``K = 3`` classes, ``n = 2`` samples each, ``d = 4`` and ``R^2 = 6``:
# :func:`~collapselab.toy.ulpm.collapsed_point` builds the collapsed optimum,
# :func:`~collapselab.toy.ulpm.sphere_minimum` gives Theorem 3.3's value
# ``nK log(1 + (K-1) exp(-R^2 / (2 (K-1) sqrt n)))``, and
# :func:`~collapselab.toy.ulpm.minimise_on_sphere` runs L-BFGS on the sphere from random starts:
# it should find nothing lower, and reach the same value (to L-BFGS's tolerance, ``1e-10``
# relative).

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from collapselab.toy.ulpm import (
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
    ulpm_gradients,
    ulpm_loss,
)

K, n, d, R2 = 3, 2, 4, 6.0
W, H = collapsed_point(K, n, d, R2, seed=0)
best = sphere_minimum(K, n, R2, reduction="sum")
search = minimise_on_sphere(K, n, d, R2, starts=3, seed=0, reduction="sum")
print(f"|W|^2 + |H|^2 = {float(W.square().sum() + H.square().sum()):.12f}")
print(f"loss at the collapsed point {float(ulpm_loss(W, H, reduction='sum')):.12f}, Theorem 3.3 {best:.12f}, "
      f"L-BFGS from 3 random starts {[round(float(v), 12) for v in search.values]}")
print(f"Lemma 3.1 at collapse: q_min = {nc_margin(W, H):.12f} = bound {nc_margin_bound(W, H):.12f}")
print(f"the mean loss is the summed loss / N: {float(ulpm_loss(W, H, reduction='mean')):.12f} = {best / (n * K):.12f}")

# %%
# Example 3.1: a KKT point that is not collapsed
# ----------------------------------------------
# ``K = 4``, ``n = 1``, ``d = 4``, ``W = H = c A`` with ``A`` made of two blocks
# ``[[1, -1], [-1, 1]]``: the classes pair up instead of spreading into a simplex. Its summed loss
# is ``8 log(1 + e^{-2c^2})`` and its gradient is ``g(c) A``, parallel to the point itself. The
# paper prints ``g(c) = -c (2 + 2e^{-2c^2}) / (2 + 2e^{-2c^2} + 2e^{2c^2})``; the gradient computed
# from the loss gives the denominator ``2 + e^{-2c^2} + e^{2c^2}``
# (:func:`~collapselab.toy.ulpm.example31_gradient_coefficient`). We project
# :func:`~collapselab.toy.ulpm.ulpm_gradients` (closed-form gradients of the loss) on ``A``.

c = 1.0
We, He = example31_point(c)
loss, gW, gH = ulpm_gradients(We, He, reduction="sum")
A = We / c
g = float((gW * A).sum() / A.square().sum())
printed = -c * (2 + 2 * math.exp(-2 * c * c)) / (2 + 2 * math.exp(-2 * c * c) + 2 * math.exp(2 * c * c))
print(f"loss {float(loss):.14f}, closed form {example31_loss(c, reduction='sum'):.14f}")
print(f"gradient coefficient: from the loss {g:.14f}, corrected closed form {example31_gradient_coefficient(c, reduction='sum'):.14f}, as printed {printed:.6f}")
print(f"the gradient is parallel to (W, H): |grad_W - g A| + |grad_H - g A| = {float((gW - g * A).norm() + (gH - g * A).norm()):.1e}")

# %%
# The landscape around it: the escape family
# ------------------------------------------
# Rotating the pairs into each other, ``W' = H' = c A(beta)`` with rows such as
# ``(1, alpha, beta, beta)``, ``alpha = -sqrt(1 - 2 beta^2)``, keeps the norms. To leading
# order the loss changes by ``16 c^2 e^{-4c^2} beta^2 (1 + e^{2c^2} beta) / (1 + e^{-2c^2})^2``:
# small rotations *raise* the loss and only rotations beyond ``beta* ~ -e^{-2c^2}`` lower it.
# :func:`~collapselab.toy.ulpm.example31_escape_gain` evaluates the change in closed form,
# :func:`~collapselab.toy.ulpm.example31_escape_threshold` finds ``beta*``; the dots are the
# loss differences evaluated directly at :func:`~collapselab.toy.ulpm.example31_escape_point`.

threshold = example31_escape_threshold(c)
print(f"beta* = {threshold:.6f} (leading order -e^(-2c^2) = {-math.exp(-2 * c * c):.6f})")
base = float(ulpm_loss(We, He, reduction="sum"))
betas = -np.geomspace(1e-3, 1 / math.sqrt(2), 200)
curve = [example31_escape_gain(c, float(b), reduction="sum") for b in betas]
probe = -np.geomspace(2e-3, 0.7, 12)
direct = [float(ulpm_loss(*example31_escape_point(c, float(b)), reduction="sum")) - base for b in probe]
print("closed form vs direct loss difference, largest gap:",
      f"{max(abs(example31_escape_gain(c, float(b), reduction='sum') - v) for b, v in zip(probe, direct)):.1e} (rounding of a difference of losses ~1)")

# %%
# Plain and noisy descent on the sphere
# -------------------------------------
# :func:`~collapselab.toy.ulpm.sphere_descent` takes Riemannian gradient steps on the sphere of
# the start. At Example 3.1's point the projected gradient is zero, so plain descent must stay
# at the loss ``8 log(1 + e^{-2})``; with gradient noise of standard deviation ``1e-3`` it leaves
# along a direction of negative curvature (Theorem 3.4's tangent-space saddle) and should reach
# Theorem 3.3's optimum on the same sphere (``R^2 = 16 c^2``), to within the noise floor.

_, _, plain = sphere_descent(We, He, lr=0.5, steps=1500, reduction="sum")
_, _, noisy = sphere_descent(We, He, lr=0.5, steps=1500, noise=1e-3, seed=0, reduction="sum")
optimum = sphere_minimum(4, 1, 16 * c * c, reduction="sum")
print(f"plain descent: {float(plain[0]):.12f} -> {float(plain[-1]):.12f}")
print(f"noisy descent: {float(noisy[0]):.6f} -> {float(noisy[-1]):.6f}; Theorem 3.3 optimum {optimum:.6f}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
a1.plot(-betas, curve, label="closed form")
a1.plot(-probe, direct, "o", ms=4, label="direct evaluation")
a1.axvline(-threshold, c="k", ls=":", lw=1, label="-beta*")
a1.axhline(0, c="0.6", lw=0.8)
a1.set_xscale("log")
a1.set_yscale("symlog", linthresh=1e-6)
a1.set_xlabel("-beta (size of the rotation)")
a1.set_ylabel("L(W', H') - L(W, H)")
a1.set_title("escape family from Example 3.1, c = 1", fontsize=10)
a1.legend(fontsize=8)
a2.plot(plain.numpy(), label="plain descent")
a2.plot(noisy.numpy(), label="noisy descent (std 1e-3)")
a2.axhline(optimum, c="k", ls="--", lw=1, label="Theorem 3.3 optimum")
a2.set_xlabel("step")
a2.set_ylabel("summed loss on the sphere")
a2.set_title("plain descent stays, noise escapes", fontsize=10)
a2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# Gradient descent from a random start
# ------------------------------------
# Without a sphere, plain gradient descent on the mean loss separates the data and then keeps
# growing ``(W, H)`` in a direction that approaches collapse slowly (about ``1/log t``).
# :func:`~collapselab.toy.ulpm.ulpm_descent` records the paper's diagnostics: the margin gap
# ``1 - q_min / bound`` (Lemma 3.1, 0 exactly at collapse) and ``1 - beta``, with ``beta`` the
# cosine between ``(W, H)`` and the descent direction (Lemma 3.3: ``beta -> 1``). Both should
# fall once the data are separated (``q_min > 0``).

gen = torch.Generator().manual_seed(0)
W0 = 0.1 * torch.randn(4, 10, dtype=torch.float64, generator=gen)
H0 = 0.1 * torch.randn(10, 4 * 5, dtype=torch.float64, generator=gen)
run = ulpm_descent(W0, H0, lr=5.0, steps=3000, reduction="mean", record=log_spaced_steps(3000, 40))
rec = {k: v.numpy() for k, v in run.records.items()}
steps = run.steps.numpy()
separated = rec["q_min"] > 0
print(f"separated from step {int(steps[separated][0])}; at step 3000: loss {rec['loss'][-1]:.2e}, "
      f"1 - q_min/bound = {1 - rec['q_min'][-1] / rec['q_bound'][-1]:.3f}, 1 - beta = {1 - rec['beta'][-1]:.3f}")

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.loglog(steps[separated], 1 - rec["q_min"][separated] / rec["q_bound"][separated], label="1 - q_min / bound (Lemma 3.1)")
ax.loglog(steps[separated], 1 - rec["beta"][separated], label="1 - beta (Lemma 3.3)")
ax.loglog(steps[separated], rec["within_class_variation"][separated], label="within-class variation")
ax.set_xlabel("step")
ax.legend(fontsize=8)
ax.set_title("gradient descent drifts towards collapse", fontsize=10)
fig.tight_layout()
plt.show()
