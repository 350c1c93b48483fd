"""
The effective flow truncating your clusters, animated
=====================================================

Chen (2025) trains a deep ReLU network whose weights stay aligned,
``W^(l) = W_* R_l`` with ``R_l`` a rotation, by the gradient flow of a loss written in
*input space*: every hidden layer is a truncation map
``tau^(l)(x) = R_l^T relu(R_l (x + beta^(l))) - beta^(l)``, which leaves the points in a
shifted, rotated positive orthant alone and projects the others onto its walls. The flow of
``(beta^(l), R_l)`` needs no backpropagation, and for clusters that each layer sees alone
(*cluster separated*, Def 3.1) it has a closed form (Thm 3.2, with the rotation generator
corrected as erratum E1 on :doc:`/theory/errata` explains). Prop 4.2 predicts what it does to a
cluster that starts partly truncated: it becomes **fully truncated at a finite time**
``s_1 <= ln(|eta(0)| / r_0) / (1 - eps_0)``, and from then on collapses onto its label at
**rate exactly 1**. This tutorial builds two clusters in ``R^2`` that satisfy the hypotheses,
runs :class:`collapselab.effective.SeparatedFlow`, checks both predictions and animates the
truncation. The theory is on :doc:`/theory/effective-flow`.
"""

# %%
# Two clusters and an aligned network
# -----------------------------------
# Cluster ``j`` has label ``ỹ_j`` and is truncated by hidden layer ``j``. Write
# ``xi_i = R_j (x_i - ỹ_j)`` and ``eta = R_j (beta^(j) + ỹ_j)``, so that the pre-activation is
# ``z_i = xi_i + eta``. Prop 4.2 asks for
#
# * every ``xi_i`` in the open negative orthant, at distance at least ``r_0`` from its walls: the
#   cluster lies "below" its label in the frame of its layer;
# * in every direction, a fraction ``1 - eps_0 > 0`` of the points truncated (``z_{i,a} <= 0``).
#
# We draw ``xi`` in a box around ``(-0.6, -0.6)`` and put ``eta`` half-way between the 10th and
# 11th largest thresholds, so that exactly half of the 20 points are truncated in each
# direction. The labels ``(-1/2, -1/2)`` and ``(1/2, 1/2)`` and the rotations (layer 2 turned by
# about ``pi``) make each layer the identity on the other cluster, which the flow checks at every
# step (it raises an :class:`~collapselab.core.errors.AssumptionError` otherwise).

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation

from collapselab.core.data import check_data
from collapselab.effective import EventKind, SeparatedFlow, forward_pass, integrate, make_state

rng = np.random.default_rng(0)
n, spread, centre = 20, 0.25, 0.6
labels_y = np.array([[-0.5, -0.5], [0.5, 0.5]])  # ỹ_0, ỹ_1 (output layer: identity)


def rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


R0 = [rotation(0.08), rotation(math.pi + 0.06)]
clusters, betas = [], []
for j in range(2):
    xi = -centre + spread * (2 * rng.random((n, 2)) - 1)  # R_j (x - ỹ_j), in the negative orthant
    clusters.append(labels_y[j] + xi @ R0[j])  # x = ỹ_j + R_j^T xi (rows)
    thresholds = -np.sort(xi, axis=0)  # -xi_{i,a}, decreasing, per direction
    eta0 = 0.5 * (thresholds[n // 2 - 1] + thresholds[n // 2])
    betas.append(R0[j].T @ eta0 - labels_y[j])

data = check_data(np.concatenate(clusters), np.repeat([0, 1], n), Y=labels_y)
state = make_state(np.stack(betas), np.stack(R0))
X, lab, Yt = data.X, data.labels, data.Y

# %%
# The flow
# --------
# :func:`~collapselab.effective.integrate` steps the flow on ``R^Q x O(Q)`` with a Lie-group
# Runge-Kutta method of order 4 (the rotations stay orthogonal to rounding) and locates the
# requested events by bisection: here the time at which a cluster becomes fully truncated.

flow = SeparatedFlow(data)
tr = integrate(flow, state, 5.0, step=0.025, events=[EventKind.FULL_TRUNCATION], event_tol=1e-9)
s1 = {e.cluster: e.s for e in tr.events_of(EventKind.FULL_TRUNCATION) if e.gained}
print(f"{len(tr.s)} records, loss {float(tr.loss[0]):.4f} -> {float(tr.loss[-1]):.2e}; full truncation at", {j: round(s, 4) for j, s in s1.items()})

# %%
# Prop 4.2, checked
# -----------------
# Along the computed orbit we measure the hypotheses, ``1 - eps_0 = min_(s,a) J_aa(s)`` (the
# smallest fraction of truncated points in a direction) and the margin ``r_0`` (the smallest
# distance of a ``xi_i(s)`` from the orthant's walls), and compare ``s_1`` with the bound they
# give. After ``s_1`` the cluster has no untruncated direction left, so ``|eta|`` should decay
# like ``e^{-s}``: the least-squares slope of ``log |eta|`` after ``s_1`` should be 1 up to the
# integrator's error (``h^4/120`` per unit of ``s`` for ``h = 0.025``, about ``3e-9``) and the
# rounding of ``beta + ỹ``.

eta = torch.stack([(tr.R[:, j] @ (tr.beta[:, j] + Yt[j]).unsqueeze(-1)).squeeze(-1).norm(dim=-1) for j in range(2)])  # (2, T)
for j in range(2):
    pts = X[lab == j]
    xi = (pts - Yt[j]) @ tr.R[:, j].transpose(1, 2)  # (T, n, 2): R_j(s) (x - ỹ_j)
    z = (pts + tr.beta[:, j].unsqueeze(1)) @ tr.R[:, j].transpose(1, 2)
    before = tr.s <= s1[j]
    rate = float((z[before] <= 0).double().mean(1).min())  # 1 - eps_0
    r0 = float((-xi).amin())
    bound = math.log(float(eta[j, 0]) / r0) / rate
    after = tr.s > s1[j] + 1e-9
    slope = -np.polyfit(tr.s[after].numpy(), np.log(eta[j, after].numpy()), 1)[0]
    tau = forward_pass(tr.state(-1), pts).ys[-1]
    print(f"cluster {j}: 1 - eps_0 = {rate:.3f}, r_0 = {r0:.3f}, s_1 = {s1[j]:.4f} <= bound {bound:.4f}; "
          f"decay rate after s_1 = {slope:.10f} (theory: 1); at s = 5 the cluster is within {float((tau - Yt[j]).norm(dim=1).max()):.1e} of its label")

# %%
# The animation
# -------------
# The grey points are the inputs ``x``; the coloured points their images ``tau(x)`` through
# both layers at flow time ``s``: **blue** untruncated, **orange** truncated in one direction,
# **red** fully truncated (lying on the corner of the orthant, ``-beta``); the black stars are the
# labels. Each cluster is pushed onto the corner of its layer's orthant, which then slides onto
# the label. (40 frames, denser before ``s = 1.2`` where the truncation happens.)

frames = np.concatenate([np.linspace(0.0, 1.2, 28), np.linspace(1.3, 3.0, 12)])  # denser while the clusters are being truncated
colours = np.array([[0.12, 0.47, 0.71, 1.0], [1.0, 0.5, 0.05, 1.0], [0.84, 0.15, 0.16, 1.0]])
images, states = [], []
for s in frames:  # the network at each frame, computed once
    fp = forward_pass(tr.state_at(s), X)
    own = fp.zs[lab, torch.arange(X.shape[0])]  # each point's pre-activation in its own layer
    images.append(fp.ys[-1].numpy())
    states.append(colours[(own <= 0).sum(1).numpy()])  # truncated in 0, 1 or 2 directions

fig, ax = plt.subplots(figsize=(3.4, 3.4), dpi=80)
ax.scatter(X[:, 0], X[:, 1], s=8, c="0.8")
ax.scatter(Yt[:, 0], Yt[:, 1], marker="*", s=120, c="k", zorder=3)
points = ax.scatter(images[0][:, 0], images[0][:, 1], s=12, c=states[0])
title = ax.set_title("s = 0.00", fontsize=9)
ax.set_xlim(-1.5, 1.5)
ax.set_ylim(-1.5, 1.5)
ax.set_xticks([-1, 0, 1])
ax.set_yticks([-1, 0, 1])
ax.tick_params(labelsize=7)
ax.set_aspect("equal")
fig.tight_layout()


def draw(i: int):
    points.set_offsets(images[i])
    points.set_color(states[i])
    title.set_text(f"s = {frames[i]:.2f}")
    return points, title


animation = FuncAnimation(fig, draw, frames=len(frames), interval=120)
plt.show()

# %%
# The loss and ``|eta|`` of both clusters against ``s``, with the predicted rate-1 decay
# ``|eta(s_1)| e^{-(s - s_1)}`` after ``s_1`` (dashed).

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
a1.semilogy(tr.s.numpy(), tr.loss.numpy())
a1.set_xlabel("s")
a1.set_ylabel("input-space loss")
for j in range(2):
    a2.semilogy(tr.s.numpy(), eta[j].numpy(), label=f"cluster {j}")
    i1 = int(torch.searchsorted(tr.s, torch.tensor(s1[j], dtype=tr.s.dtype)))
    later = tr.s[i1:].numpy()
    a2.semilogy(later, float(eta[j, i1]) * np.exp(-(later - later[0])), "k--", lw=1)
    a2.axvline(s1[j], c="0.6", lw=0.8, ls=":")
a2.set_xlabel("s")
a2.set_ylabel("|eta| = |beta + ỹ|")
a2.legend(fontsize=8)
fig.tight_layout()
plt.show()
