"""
Build a zero-loss network for your data and read its per-layer explanation
==========================================================================

For clustered data, Chen & Muñoz Ewald (2023) write down a deep ReLU network with *zero*
training cost, without any training: hidden layer ``l`` is a *cone layer* that collapses
class ``l`` to a single point ``p_l`` and leaves every other training point where it is; the
output layer then maps the ``Q`` collapse points to the targets. Every number in it has a
geometric meaning. :func:`collapselab.construct.construct_clustered` builds it (CE23 Thm 2.3)
and :func:`collapselab.construct.construct_sequential` builds its generalisation to
sequentially linearly separable data (CE24 Thm 5.2). The theory, the assumptions and the
corrections we made to the papers are on :doc:`/theory/minimizers`.
"""

# %%
# Your data
# ---------
# Three classes in ``R^3`` (the construction needs inputs in ``R^Q``, one dimension per
# class), each a cluster of radius ``delta = 0.05`` around its mean. With your own arrays,
# pass ``X (N, Q)`` and integer ``labels (N,)`` in the same way.

import math

import matplotlib.pyplot as plt
import torch

from collapselab.construct import admissible_mu, ce23_cost, ce24_cost, cluster_geometry, construct_clustered, construct_sequential
from collapselab.core.data import check_data, gaussian_clusters, load_dataset
from collapselab.core.errors import AssumptionError, ParameterError
from collapselab.core.geometry import truncation_sequence

data = gaussian_clusters(3, 30, delta=0.05, seed=0)
X, labels = data.X, data.labels
print(f"X {tuple(X.shape)} {X.dtype}, classes {labels.unique().tolist()}")

# %%
# The network, and its cost
# -------------------------
# The result is a :class:`~collapselab.construct.ConstructedNetwork`: ``net.module`` is an
# ordinary ``torch.nn.Module``, ``net.cost`` the cost the construction guarantees (CE23's
# ``L2_N`` norm (2.35), computed from the geometry). Evaluating the module on the data and
# computing the cost again with :func:`~collapselab.construct.ce23_cost` is an independent
# check: both should be zero up to rounding, i.e. a few ``eps = 2.2e-16`` times the size of the
# output weights (the output layer inverts a 3 x 3 matrix of collapse points).

net = construct_clustered(X, labels)
with torch.no_grad():
    outputs = net.module(X)
recomputed = float(ce23_cost(outputs, labels, data.Y))
print(f"widths {net.module.widths}, {net.num_parameters} parameters, {net.descriptive_parameters} of them descriptive")
print(f"cost from the construction: {net.cost:.2e}; cost of module(X): {recomputed:.2e}")
print(f"output-weight scale |W_out| = {float(net.cumulative[-1][0].norm()):.1f}, so rounding leaves residuals of a few times {2.2e-16 * float(net.cumulative[-1][0].norm()):.0e}")

# %%
# What each layer does
# --------------------
# ``net.layers`` holds one :class:`~collapselab.construct.LayerExplanation` per hidden layer:
# the class it collapses, the point it collapses it to, the position ``mu`` of that point
# (``p_l = mean_l - mu_l f_l``, with ``f_l`` the unit vector from the class mean towards the
# barycentre of the means: ``mu_l < 0`` moves the point towards the barycentre), and the
# aperture of the cone.

for l, layer in enumerate(net.layers, start=1):
    print(f"layer {l}: collapses class {layer.collapses_class} to {[round(v, 4) for v in layer.collapse_point.tolist()]}, "
          f"mu = {layer.mu:.4f}, cone angle = {layer.cone_angle:.4f} rad")

# %%
# The truncation, layer by layer
# ------------------------------
# By the composition identity, hidden layer ``l`` of the network equals
# ``W^(l) x^(tau,l) + b^(l)``, where ``x^(tau,l)`` is the input pushed through the first ``l``
# truncation maps (CE23 Prop 2.2). :func:`collapselab.core.geometry.truncation_sequence`
# computes these from the cumulative parameters. The prediction: after layer ``l``, class
# ``l`` has radius exactly 0 (it sits on ``p_l``) and every other class is unchanged.

stages = [X] + truncation_sequence(X, net.cumulative[:-1])
print("largest distance of a point from its class's position after each layer (rows: layer, columns: class)")
for l, Z in enumerate(stages):
    radii = []
    for j in range(3):
        pts = Z[labels == j]
        centre = net.layers[j].collapse_point if l > j else pts.mean(0)
        radii.append(float((pts - centre).norm(dim=1).max()))
    moved = float((Z - X)[labels >= l].abs().max()) if l < 3 else 0.0
    print(f"  after layer {l}: " + "  ".join(f"{r:.2e}" for r in radii) + f"   (largest move of a class not yet collapsed: {moved:.1e})")

# %%
# The admissible ``mu`` and ``delta``
# -----------------------------------
# The construction works for any ``mu_l`` in an interval ``(-D_l, -2 delta sqrt(Q))``
# (CE23 (4.26)), where ``delta`` is the largest distance of a point from its class mean and
# ``D_l`` how far the apex can move towards the barycentre before the cone stops containing
# the other classes. :func:`~collapselab.construct.cluster_geometry` computes ``delta`` and the
# smallest admissible cone angle ``theta_*`` (and checks the assumptions);
# :func:`~collapselab.construct.admissible_mu` gives the interval for a cone angle. By default
# the network takes the midpoint of each interval, which we check.

geom = cluster_geometry(check_data(X, labels))
theta = net.layers[0].cone_angle
lo, D = admissible_mu(geom, theta)
print(f"delta = {geom.delta:.4f} (from the sample means; the generator keeps each point within 0.05 of its own centre)")
print(f"2 delta sqrt(Q) = {lo:.4f} = {2 * geom.delta * math.sqrt(3):.4f}")
print(f"theta_* = {geom.theta_max:.4f} < cone angle {theta:.4f} = (theta_* + pi)/2 = {(geom.theta_max + math.pi) / 2:.4f} < pi")
for j, layer in enumerate(net.layers):
    print(f"class {j}: mu in ({-float(D[j]):.4f}, {-lo:.4f}); used {layer.mu:.4f}, midpoint {-(lo + float(D[j])) / 2:.4f}")

# %%
# Any ``mu`` inside the intervals gives zero cost too; one outside is refused with a message
# naming the interval (a :class:`~collapselab.core.errors.ParameterError`).

mus = [-(lo + 0.1 * (float(D[j]) - lo)) for j in range(3)]  # close to the lower end
print(f"mu = {[round(m, 4) for m in mus]}: cost {construct_clustered(X, labels, mu=mus).cost:.1e}")
try:
    construct_clustered(X, labels, mu=[-0.5 * lo] * 3)
except ParameterError as err:
    print("refused:", err)

# %%
# New points are classified by the network's metric decision rule (CE23 (2.61)):
# :meth:`~collapselab.construct.ConstructedNetwork.classify`. Points drawn near a class mean
# get that class.

g = torch.Generator().manual_seed(1)
fresh = geom.means.repeat_interleave(5, 0) + 0.04 * torch.randn(15, 3, generator=g, dtype=torch.float64)
print("classify(fresh points):", net.classify(fresh).tolist())

# %%
# The picture: the three clusters in the plane of their means, after each layer. Layer ``l``
# folds class ``l`` onto its collapse point (a cross), on the segment from the class mean to
# the barycentre (a star), and leaves the rest in place.

e1 = geom.means[1] - geom.means[0]
e1 = e1 / e1.norm()
e2 = geom.means[2] - geom.means[0]
e2 = e2 - (e2 @ e1) * e1
e2 = e2 / e2.norm()
plane = torch.stack([e1, e2], 1)
fig, axes = plt.subplots(1, 4, figsize=(11, 3), sharex=True, sharey=True)
for l, (ax, Z) in enumerate(zip(axes, stages)):
    P = ((Z - geom.means[0]) @ plane).numpy()
    for j in range(3):
        ax.scatter(P[labels == j, 0], P[labels == j, 1], s=8, label=f"class {j}")
    apex = ((torch.stack([layer.collapse_point for layer in net.layers]) - geom.means[0]) @ plane).numpy()
    ax.scatter(apex[:l, 0], apex[:l, 1], marker="x", c="k", s=40)
    bary = ((geom.barycenter - geom.means[0]) @ plane).numpy()
    ax.scatter([bary[0]], [bary[1]], marker="*", c="0.4", s=60)
    ax.set_title("input" if l == 0 else f"after layer {l}", fontsize=9)
    ax.set_aspect("equal")
axes[0].legend(fontsize=7, loc="upper right")
fig.tight_layout()
plt.show()

# %%
# Sequentially separable data
# ---------------------------
# CE24 needs less: inputs in any ``R^M`` with ``M >= Q``, and an order of the classes in which
# each can be cut off by a hyperplane from the classes still to come and the points already
# collapsed. :func:`~collapselab.construct.construct_sequential` searches that order and
# returns the same kind of result, with CE24's squared cost ``1/2 |X^(L) - Y|_F^2``
# (:func:`~collapselab.construct.ce24_cost`). On scikit-learn's wine data (13 features,
# 3 classes, no scaling) the cost is zero again.

wine = load_dataset("wine")
seq = construct_sequential(wine.X, wine.labels)
with torch.no_grad():
    wine_cost = float(ce24_cost(seq.module(wine.X), wine.labels, wine.Y))
print(f"wine: order {seq.order}, widths {seq.module.widths}, cost {seq.cost:.1e}, cost of module(X) {wine_cost:.1e}")
for l, layer in enumerate(seq.layers, start=1):
    print(f"  layer {l}: collapses class {layer.collapses_class}, position mu = {layer.mu:.3f} in (0, 1), cone angle {layer.cone_angle:.3f}")

# %%
# Iris is not sequentially separable (versicolor and virginica overlap), and the
# construction says so, naming the pair, instead of returning a network that does not fit.

iris = load_dataset("iris")
try:
    construct_sequential(iris.X, iris.labels)
except AssumptionError as err:
    print("iris:", err)
