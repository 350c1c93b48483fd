"""Cluster-separated effective flow: Chen 2025 Thm 3.2, **corrected** (spec/chen.md 1.5, errata E1).

With cluster-separated truncations (Def 3.1: ``tau^(l)`` is the identity on every cluster
``j != l`` and on its images under the other maps), layer ``l`` only sees cluster ``l`` and
the loss splits, ``C~_N = sum_l C~_l`` with ``C~_l = 1/2 int mu_l |sigma(z) - v_l|^2``,
``z = R_l (x + beta^(l))``, ``v_l = R_l (beta^(l) + ỹ_l)`` (key cancellation (6.8)). Then

* bias (3.22): ``d(beta^(l) + ỹ_l)/ds = -R_l^T J0perp_l R_l (beta^(l) + ỹ_l)``,
  ``J0perp_l = int mu~_l H^perp(z)`` (diagonal: the fraction of points truncated in each direction);
* weights: ``dR_l/ds = -Omega_l R_l`` with the **corrected**
  ``Omega_l = Pi_A( int mu~_l [H(z) r z^T - r v_l^T] )``, ``r = sigma(z) - v_l``,
  ``Pi_A(M) = (M - M^T)/2``; equivalently ``int [H, z z^T/2 - (z v^T + v z^T)/2]``.

The paper's slide prints ``Omega = int [H, M]``: it lacks the second-moment term and has the
opposite sign; it is not the gradient (spec 1.5, test T13 gives 0 instead of the true 1/2 A).
This module follows the spec. No backpropagation: one pass over each cluster in its own frame.
Layers and clusters are matched by index: layer ``l`` (zero-based) truncates cluster ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.data import ClassificationData
from ..core.errors import AssumptionError, ShapeError
from ._field import EffectiveField
from ._forward import check_flow_data
from ._state import EffectiveState, pulled_back_labels

__all__ = ["ClusterBlocks", "SeparatedFlow", "separation_violations", "check_cluster_separated"]


@dataclass(frozen=True)
class ClusterBlocks:
    """Clusters as one padded tensor: ``X (Q, n_max, Q)``, weights ``w (Q, n_max)`` (``1/N_j``, 0 on padding).

    Lets every per-cluster average be one batched matrix product (no loop over clusters).
    """

    X: torch.Tensor
    w: torch.Tensor

    @staticmethod
    def from_data(data: ClassificationData) -> "ClusterBlocks":
        counts = data.class_counts
        order = torch.argsort(data.labels, stable=True)
        lab = data.labels[order]
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(lab.shape[0], device=lab.device) - starts[lab]
        n_max = int(counts.max())
        X = torch.zeros(data.num_classes, n_max, data.dim, dtype=data.X.dtype, device=data.X.device)
        w = torch.zeros(data.num_classes, n_max, dtype=data.X.dtype, device=data.X.device)
        X[lab, pos] = data.X[order]
        w[lab, pos] = 1.0 / counts.to(data.X.dtype)[lab]
        return ClusterBlocks(X, w)

    @property
    def mask(self) -> torch.Tensor:
        """``(Q, n_max)`` bool: which entries are real points."""
        return self.w > 0


def _check_layers(state: EffectiveState, data: ClassificationData, where: str) -> None:
    check_flow_data(state, data, where)
    if state.depth != data.num_classes:
        raise ShapeError(
            f"{where}: cluster-separated truncations need one hidden layer per cluster (L = Q), "
            f"got L = {state.depth} layers for Q = {data.num_classes} clusters; use GeneralFlow otherwise"
        )


def _violations(state: EffectiveState, blocks: ClusterBlocks) -> torch.Tensor:
    """``(L, Q)``: points of cluster ``j`` whose first non-fixing foreign layer is ``l``.

    Uses the separated structure itself: a point of cluster ``j`` reaches layer ``k < j`` as ``x``
    and layer ``k > j`` as ``tau^(j)(x)`` as long as no earlier layer moved it, so the first layer
    at which this assumption fails is a true violation (and there is none iff the true forward
    pass is separated). Two products with all ``L`` layers at once instead of ``L`` sweeps.
    """
    L, Q = state.depth, state.width
    C, n, _ = blocks.X.shape
    c = (state.R @ state.beta.unsqueeze(2)).squeeze(2)  # (L, Q): z_k = R_k x + R_k beta_k
    Rcat = state.R.reshape(L * Q, Q)
    Zx = (blocks.X.reshape(-1, Q) @ Rcat.T).reshape(C, n, L, Q) + c
    idx = torch.arange(C, device=c.device)
    tau = torch.relu(Zx[idx, :, idx]) @ state.R - state.beta.unsqueeze(1)  # (C, n, Q): own-layer images
    Zt = (tau.reshape(-1, Q) @ Rcat.T).reshape(C, n, L, Q) + c
    k = torch.arange(L, device=c.device)
    before = (k.unsqueeze(0) < idx.unsqueeze(1))[:, None, :, None]  # layer k before the cluster's own layer j
    foreign = (k.unsqueeze(0) != idx.unsqueeze(1)).unsqueeze(1) & blocks.mask.unsqueeze(2)  # (C, 1|n, L)
    bad = (torch.where(before, Zx, Zt) <= 0).any(-1) & foreign
    first = bad & (torch.cumsum(bad.to(torch.int64), -1) == 1)
    return first.sum(1).T


def separation_violations(state: EffectiveState, data: ClassificationData) -> torch.Tensor:
    """``(L, Q)`` int64: how many points of cluster ``j`` are first moved by a foreign layer ``l != j``.

    A point is left fixed by ``tau^(l)`` when it lies strictly inside ``S_+^(l)`` (all
    ``z_a > 0``; on the boundary the flow's derivative is one-sided, so it does not count),
    tested along the actual composition, i.e. on the images under the earlier maps
    (Chen 2025 Def 3.1 / (3.3)); each point is counted once, at the first such layer.
    All zeros means the truncations are cluster separated.
    """
    _check_layers(state, data, "separation_violations")
    return _violations(state, ClusterBlocks.from_data(data))


def check_cluster_separated(
    state: EffectiveState, data: ClassificationData, where: str = "check_cluster_separated", blocks: ClusterBlocks | None = None
) -> None:
    """Raise :class:`AssumptionError` naming the first layer/cluster pair that violates Def 3.1.

    ``blocks``: the data's :class:`ClusterBlocks`, if already built (saves a sort per call)."""
    v = separation_violations(state, data) if blocks is None else _violations(state, blocks)
    if bool((v > 0).any()):
        l, j = (int(i) for i in torch.nonzero(v)[0])
        raise AssumptionError(
            f"{where}: truncations are not cluster separated: layer {l + 1} truncates {int(v[l, j])} point(s) of cluster {j} "
            f"(Chen 2025 Def 3.1 needs tau^({l + 1}) = id on every other cluster); use GeneralFlow (Thm 5.1) for these data"
        )


class SeparatedFlow:
    """Cluster-separated effective flow (Chen 2025 Thm 3.2, corrected Omega; spec 1.5).

    ``data``: inputs in ``R^Q``, ``Q`` clusters, targets ``Y (Q, Q)``; the state must have
    ``L = Q`` layers. ``check=True`` verifies cluster separation at the state given to
    :meth:`validate` (the integrator calls it after every step) and raises
    :class:`AssumptionError` naming the layer and cluster when it fails.
    Cost per field evaluation: ``O(N Q^2)``, one batched product per quantity.
    ``frozen_rotation=True`` sets ``Omega = 0``: the bias flow at fixed ``R`` of Chen 2025 §4.3
    (spec 1.8), whose exact solution is :func:`exact_bias_flow`.
    """

    def __init__(self, data: ClassificationData, *, check: bool = True, frozen_rotation: bool = False) -> None:
        self.data = data
        self.blocks = ClusterBlocks.from_data(data)
        self.check = check
        self.frozen_rotation = frozen_rotation

    def validate(self, state: EffectiveState) -> None:
        _check_layers(state, self.data, "SeparatedFlow")
        if self.check:
            check_cluster_separated(state, self.data, "SeparatedFlow", self.blocks)

    def _frame(self, state: EffectiveState) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (Q, n_max, Q)`` of every cluster in its own layer's frame and ``v (Q, Q)``."""
        z = (self.blocks.X + state.beta.unsqueeze(1)) @ state.R.transpose(1, 2)
        yt = pulled_back_labels(state, self.data.Y)
        v = (state.R @ (state.beta + yt).unsqueeze(2)).squeeze(2)
        return z, v

    def pre_activations(self, state: EffectiveState) -> torch.Tensor:
        """``z (Q, n_max, Q)``: cluster ``l`` pushed forward by ``a_{R_l, beta^(l)}`` (padding rows are garbage; see ``blocks.mask``)."""
        return self._frame(state)[0]

    def pattern(self, state: EffectiveState) -> torch.Tensor:
        """``(Q, n_max, Q)`` bool activation pattern ``h(z) = z > 0`` of every cluster in its layer (False on padding)."""
        return (self.pre_activations(state) > 0) & self.blocks.mask.unsqueeze(2)

    def field(self, state: EffectiveState, pattern: torch.Tensor | None = None) -> EffectiveField:
        """The right-hand side; a given ``pattern`` (from :meth:`pattern`) replaces ``h(z)`` (the
        smooth extension of the field across sector walls that the integrator uses within a step)."""
        z, v = self._frame(state)
        w = self.blocks.w.unsqueeze(2)
        h = (z > 0 if pattern is None else pattern).to(z.dtype)
        jperp = (w * (1 - h)).sum(1)  # (Q, Q): diagonal of J0perp_l, per layer
        dbeta = -(state.R.transpose(1, 2) @ (jperp * v).unsqueeze(2)).squeeze(2)
        hz = h * z
        r = hz - v.unsqueeze(1)
        # int r v^T = int (H z) v^T - m_0 v v^T; the last term is symmetric and dropped, so a
        # fully truncated cluster (H = 0) gives Omega = 0 exactly, not up to rounding
        if self.frozen_rotation:
            return EffectiveField(dbeta, torch.zeros_like(state.R))
        G = (w * h * r).transpose(1, 2) @ z - (w * hz).sum(1).unsqueeze(2) * v.unsqueeze(1)
        return EffectiveField(dbeta, 0.5 * (G - G.transpose(1, 2)))

    def loss(self, state: EffectiveState) -> torch.Tensor:
        """``sum_l C~_l`` (equals :func:`input_space_loss` under cluster separation)."""
        z, v = self._frame(state)
        r = torch.relu(z) - v.unsqueeze(1)
        return 0.5 * (self.blocks.w * r.square().sum(2)).sum()
