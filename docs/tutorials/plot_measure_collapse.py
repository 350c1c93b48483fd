"""
Measure neural collapse in your own model and data loader
=========================================================

You have a PyTorch model and a ``DataLoader``; you want to know whether the features the
model feeds its classifier *collapse* as training goes on (Papyan, Han & Donoho 2020):

* **NC1** the within-class variability vanishes, ``Tr(Sigma_W Sigma_B^+)/C -> 0``;
* **NC2** the centred class means form a simplex equiangular tight frame (ETF);
* **NC3** the classifier rows align with the centred class means (self-duality);
* **NC4** the classifier decides like the nearest class mean.

This tutorial trains a plain MLP on a small synthetic problem, measures NC1-NC4 with
:func:`collapselab.collapse.measure` (two exact float64 passes over the loader), follows
several layers *during* training with :class:`collapselab.collapse.CollapseTracker` (no
extra forward pass), and checks NC1 against a direct computation from its definition. The
definitions and conventions are on :doc:`/theory/neural-collapse`.
"""

# %%
# A model and a data loader of your own
# -------------------------------------
# Nothing here is specific to CollapseLab: four Gaussian classes in ``R^20`` and an MLP whose
# last layer is an ``nn.Linear``. That last linear layer is what :func:`~collapselab.collapse.measure`
# treats as the classifier by default (its *input* are the features).

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from collapselab.collapse import CollapseTracker, collapse_report, measure

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
C, per_class, dim = 4, 100, 20
means = torch.randn(C, dim)  # class means about as far apart as the noise: not separable at a glance
labels = torch.arange(C).repeat_interleave(per_class)
X = means[labels] + torch.randn(C * per_class, dim)
loader = DataLoader(TensorDataset(X, labels), batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0))

model = nn.Sequential(
    nn.Linear(dim, 64), nn.ReLU(),   # "0", "1"
    nn.Linear(64, 64), nn.ReLU(),    # "2", "3"
    nn.Linear(64, 32), nn.ReLU(),    # "4", "5"
    nn.Linear(32, C),                # "6": the classifier
)
optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)

# %%
# One measurement
# ---------------
# :func:`~collapselab.collapse.measure` runs the model in ``eval()`` mode over the whole loader
# and returns a :class:`~collapselab.collapse.CollapseReport`. At initialisation the features
# are far from collapsed: NC1 is of order one and the classifier is random.

report = measure(model, loader, num_classes=C)
print(f"at initialisation: NC1 = {report.nc1:.3g}, NC3 = {report.nc3:.3g}, NC4 = {report.nc4:.3g}, accuracy = {report.accuracy:.3f}")

# %%
# Training, with the tracker on several layers
# --------------------------------------------
# To *pick a layer*, hook several: ``modules`` takes names from ``model.named_modules()``,
# and ``capture="output"`` records what a module returns (here the ReLU outputs). The tracker
# accumulates during the ordinary training forward passes, so following three layers costs
# no extra pass; the numbers are those of the features as the parameters move during the
# epoch, which is enough to see the trend. The exact measurement is :func:`~collapselab.collapse.measure`.

layers = {"1": "hidden 1", "3": "hidden 2", "5": "hidden 3 (classifier input)"}
epochs, history = 60, {name: [] for name in layers}
exact = []
for epoch in range(1, epochs + 1):
    tracker = CollapseTracker(model, C, modules=list(layers), capture="output")
    with tracker:
        for xb, yb in loader:
            with tracker.labels(yb):
                loss = nn.functional.cross_entropy(model(xb), yb)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    for name, rep in tracker.report().items():
        history[name].append(rep.nc1)
    if epoch in (1, 5, 20, 60):
        exact.append((epoch, measure(model, loader, num_classes=C)))

# %%
# What the theory predicts, and what we see
# -----------------------------------------
# Once the training error is zero (the *terminal phase*), cross-entropy with weight decay
# drives the last-layer features towards collapse: NC1, NC3, NC4 and the ETF error of the
# class means should fall, and the pairwise cosines of the centred class means should approach
# the simplex ETF's ``-1/(C-1) = -1/3``. Deeper layers should be more collapsed: NC1 should
# decrease from the raw inputs through the hidden layers to the classifier input.
#
# What to look for in the table: accuracy reaches 1 within the first epochs; from then on NC4 is
# 0 (the classifier agrees with the nearest class mean on every sample), NC3 and the ETF error
# keep falling, and NC1 drops by about an order of magnitude from its initial value and then
# decreases only slowly (Papyan, Han & Donoho train for hundreds of epochs to push it much further).

print(f"{'epoch':>5} {'acc':>6} {'NC1':>9} {'NC2 ETF err':>11} {'NC3':>9} {'NC4':>7}")
for epoch, rep in exact:
    print(f"{epoch:>5} {rep.accuracy:>6.3f} {rep.nc1:>9.2e} {rep.nc2_etf_error_means:>11.3f} {rep.nc3:>9.3f} {rep.nc4:>7.3f}")
final = exact[-1][1]
centred = final.means - final.means.mean(0)
unit = centred / centred.norm(dim=1, keepdim=True)
cosines = (unit @ unit.T)[~torch.eye(C, dtype=torch.bool)]
print(f"pairwise cosines of the centred means: {cosines.min():.3f} .. {cosines.max():.3f} (simplex ETF: {-1 / (C - 1):.3f})")
print(f"NC1 of the raw inputs: {collapse_report(X, labels).nc1:.2e}")
for name, label in layers.items():
    print(f"NC1 of {label} at the last epoch: {history[name][-1]:.2e}")

# %%
# Checking the measurement by hand
# --------------------------------
# NC1 is ``Tr(Sigma_W Sigma_B^+) / C`` with ``Sigma_W`` the within-class covariance and
# ``Sigma_B`` the covariance of the class means around their (unweighted) mean. Capture the
# features with an ordinary forward hook and compute it with NumPy; the streaming
# measurement must agree to rounding (relative error of order ``d * eps`` times the condition
# number of ``Sigma_B`` on its range, far below ``1e-8`` here).

feats = []
hook = model[6].register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach()))
with torch.no_grad():
    model.eval()
    for xb, _ in DataLoader(TensorDataset(X, labels), batch_size=100):
        model(xb)
hook.remove()
H = torch.cat(feats).numpy()
y = labels.numpy()
mu = np.stack([H[y == c].mean(0) for c in range(C)])
sigma_w = sum(((H[y == c] - mu[c]).T @ (H[y == c] - mu[c])) for c in range(C)) / len(y)
mb = mu - mu.mean(0)
sigma_b = mb.T @ mb / C
by_hand = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / C
print(f"NC1 by hand = {by_hand:.10e}, measure() = {final.nc1:.10e}, relative difference = {abs(by_hand / final.nc1 - 1):.1e}")

# %%
# The same report from arrays you already have: :func:`~collapselab.collapse.collapse_report`
# takes ``features (N, d)``, ``labels (N,)`` and optionally the classifier ``weights (C, d)``
# and ``bias (C,)``.

from_arrays = collapse_report(torch.from_numpy(H), labels, model[6].weight.detach(), model[6].bias.detach())
print(f"collapse_report: NC1 = {from_arrays.nc1:.10e}, NC4 = {from_arrays.nc4:.3f}")

# %%
# The curves: NC1 of the three hidden layers, epoch by epoch. All fall sharply while the
# training error goes to zero and slowly afterwards; by the end, the deeper the layer, the lower
# its NC1.

fig, ax = plt.subplots(figsize=(5.5, 3.5))
for name, label in layers.items():
    ax.semilogy(range(1, epochs + 1), history[name], label=label)
ax.set_xlabel("epoch")
ax.set_ylabel("NC1 (tracked during the epoch)")
ax.legend()
ax.set_title("within-class variability, by layer")
fig.tight_layout()
plt.show()
