"""Cluster-separated effective flow: Chen 2025 Thm 3.2, **corrected** (docs/theory/effective-flow.md; erratum E1, docs/theory/errata.md).

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
opposite sign; it is not the gradient (docs/theory/effective-flow.md: on a two-point example it gives 0 instead of the true 1/2 A).
This module follows the corrected form (erratum E1, docs/theory/errata.md). No backpropagation: one pass over each cluster in its own frame.
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

__all__ = ["ClusterBlocks", "SeparatedFlow", "separation_bounds", "separation_certificate", "separation_violations", "check_cluster_separated"]


@dataclass(frozen=True)
class ClusterBlocks:
    """Clusters as one padded tensor: ``X (Q, n_max, Q)``, weights ``w (Q, n_max)`` (``1/N_j``, 0 on padding),
    and bounds of each cluster: its axis-aligned bounding box, centre ``centre (Q, Q)`` and
    half-widths ``half (Q, Q)``, and ``radius (Q,)``, the largest distance of a point from ``centre``.

    Lets every per-cluster average be one batched matrix product (no loop over clusters); the
    bounds feed the separation certificate (:func:`separation_certificate`).
    """

    X: torch.Tensor
    w: torch.Tensor
    centre: torch.Tensor
    half: torch.Tensor
    radius: torch.Tensor

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
        mask = (w > 0).unsqueeze(2)
        hi = torch.where(mask, X, -torch.inf).amax(1)
        lo = torch.where(mask, X, torch.inf).amin(1)
        centre = 0.5 * (hi + lo)
        radius = torch.where(mask.squeeze(2), (X - centre.unsqueeze(1)).norm(dim=2), 0.0).amax(1)
        return ClusterBlocks(X, w, centre, 0.5 * (hi - lo), radius)

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


def _lower_bounds(state: EffectiveState, blocks: ClusterBlocks) -> torch.Tensor:
    """``(L, Q)``: a lower bound of ``min_a z_a`` over the points of cluster ``j`` as they reach layer ``k``.

    Lower bounds of ``z_a = (R_k(y + beta_k))_a`` over a set of ``y`` with centre ``c``: over the
    box ``|y - c| <= w`` (coordinatewise) ``(R_k(c + beta_k))_a - sum_i |R_k|_{ai} w_i``, over the
    ball ``|y - c| <= r`` (``R_k`` orthogonal) ``(R_k(c + beta_k))_a - r``; the larger one is used.
    Layers ``k < j`` see the cluster itself. Layers ``k > j`` see its image under ``tau^(j)``:
    layer ``j`` maps the box into the ``z``-box ``[lo, hi]``, ``relu`` into ``[relu(lo), relu(hi)]``,
    and ``tau^(j) = R_j^T u - beta_j`` gives ``z = (R_k R_j^T) u + R_k(beta_k - beta_j)``; and
    ``tau^(j)`` is 1-Lipschitz, so it maps the ball into the ball of radius ``r`` about ``tau^(j)(c)``.
    The diagonal (own layer) is ``+inf``. Cost ``O(L Q^4)``, independent of the number of points.
    """
    R, beta = state.R, state.beta
    c, w, r = blocks.centre, blocks.half, blocks.radius
    Rb = (R @ beta.unsqueeze(2)).squeeze(2)  # (L, Q): R_k beta_k
    Rc = torch.einsum("kai,ji->kja", R, c) + Rb.unsqueeze(1)  # (L, C, Q): R_k (c_j + beta_k)
    Rw = torch.einsum("kai,ji->kja", R.abs(), w)
    idx = torch.arange(c.shape[0], device=c.device)
    own, own_w = Rc[idx, idx], Rw[idx, idx]  # (C, Q): cluster j in its own layer's frame
    lo, hi = torch.relu(own - own_w), torch.relu(own + own_w)
    M = torch.einsum("kab,jcb->kjac", R, R)  # (L, C, Q, Q): R_k R_j^T
    shift = Rb.unsqueeze(1) - torch.einsum("kai,ji->kja", R, beta)  # R_k (beta_k - beta_j)
    box = torch.einsum("kjac,jc->kja", M, 0.5 * (lo + hi)) - torch.einsum("kjac,jc->kja", M.abs(), 0.5 * (hi - lo))
    ball = torch.einsum("kjac,jc->kja", M, torch.relu(own)) - r[:, None]
    k = torch.arange(R.shape[0], device=c.device).unsqueeze(1)
    before = Rc - torch.minimum(Rw, r[:, None])
    bound = torch.where((k < idx).unsqueeze(2), before, shift + torch.maximum(box, ball)).amin(2)
    return bound.masked_fill(k == idx, torch.inf)


def _certificate(state: EffectiveState, blocks: ClusterBlocks) -> torch.Tensor:
    """``(L, Q)`` bool: ``True`` where :func:`_lower_bounds` alone proves that layer ``k`` fixes cluster ``j``.

    A pair is certified when its bound exceeds a rounding margin (``100 Q^2 eps`` times the
    scale of the numbers, far above the rounding error of a length-``Q`` dot product), so it
    never certifies a point that the exact test ``z > 0`` would reject. The diagonal is ``True``.
    """
    c, r, beta = blocks.centre, blocks.radius, state.beta
    scale = 1.0 + c.abs().amax() + r.amax() + beta.abs().amax()
    margin = 100 * state.width**2 * torch.finfo(beta.dtype).eps * scale
    return _lower_bounds(state, blocks) > margin


def _violations(state: EffectiveState, blocks: ClusterBlocks, certified: torch.Tensor) -> torch.Tensor:
    """``(L, Q)``: points of cluster ``j`` whose first non-fixing foreign layer is ``l``.

    Uses the separated structure itself: a point of cluster ``j`` reaches layer ``k < j`` as ``x``
    and layer ``k > j`` as ``tau^(j)(x)`` as long as no earlier layer moved it, so the first layer
    at which this assumption fails is a true violation (and there is none iff the true forward
    pass is separated). Pairs ``(k, j)`` with ``certified[k, j]`` are known to fix cluster ``j``;
    only clusters and layers with an uncertified pair are tested, point by point, in one product
    (two when a layer after the cluster's own is in doubt).
    """
    Q = state.width
    out = torch.zeros(state.depth, blocks.X.shape[0], dtype=torch.int64, device=blocks.X.device)
    doubt = ~certified
    todo = torch.nonzero(doubt.any(0)).flatten()  # clusters with an uncertified pair
    if todo.shape[0] == 0:
        return out
    layers = torch.nonzero(doubt[:, todo].any(1)).flatten()  # layers with an uncertified pair among them
    X, C, n, K = blocks.X[todo], todo.shape[0], blocks.X.shape[1], layers.shape[0]
    Rk, bk = state.R[layers], state.beta[layers]
    c = (Rk @ bk.unsqueeze(2)).squeeze(2)  # (K, Q): z_k = R_k y + R_k beta_k
    Rcat = Rk.reshape(K * Q, Q)
    before = layers.unsqueeze(0) < todo.unsqueeze(1)  # (C, K): layer k before the cluster's own layer j
    low = ((X.reshape(-1, Q) @ Rcat.T).reshape(C, n, K, Q) + c).amin(-1)  # (C, n, K): min_a z_a of x
    test = doubt[layers][:, todo].T  # (C, K)
    if bool((test & ~before).any()):
        Rj, bj = state.R[todo], state.beta[todo].unsqueeze(1)
        tau = torch.relu((X + bj) @ Rj.transpose(1, 2)) @ Rj - bj  # tau^(j)(x)
        low = torch.where(before.unsqueeze(1), low, ((tau.reshape(-1, Q) @ Rcat.T).reshape(C, n, K, Q) + c).amin(-1))
    bad = torch.zeros(C, n, state.depth, dtype=torch.bool, device=out.device)
    bad[:, :, layers] = (low <= 0) & test.unsqueeze(1) & blocks.mask[todo].unsqueeze(2)
    first = bad & (torch.cumsum(bad.to(torch.int64), -1) == 1)
    out[:, todo] = first.sum(1).T
    return out


def separation_bounds(state: EffectiveState, data: ClassificationData) -> torch.Tensor:
    """``(L, Q)``: lower bounds, from each cluster's bounding box and ball, of ``min_a z_a`` over
    cluster ``j``'s points at layer ``l`` (``z = R_l(y + beta_l)``, ``y`` the point as it reaches
    layer ``l`` under separation: ``x`` before layer ``j``, ``tau^(j)(x)`` after); ``+inf`` on the diagonal.

    Costs ``O(L Q^4)`` whatever the number of points; a positive bound proves that ``tau^(l)``
    fixes the whole cluster.
    """
    _check_layers(state, data, "separation_bounds")
    return _lower_bounds(state, ClusterBlocks.from_data(data))


def separation_certificate(state: EffectiveState, data: ClassificationData) -> torch.Tensor:
    """``(L, Q)`` bool: which (layer, cluster) pairs :func:`separation_bounds` alone proves separated.

    ``True`` at ``[l, j]`` guarantees that ``tau^(l)`` fixes every point of cluster ``j`` (as it
    reaches layer ``l``): the bound exceeds a rounding margin. ``False`` is inconclusive (the
    exact point test decides). The diagonal is ``True``.
    """
    _check_layers(state, data, "separation_certificate")
    return _certificate(state, ClusterBlocks.from_data(data))


def separation_violations(state: EffectiveState, data: ClassificationData, *, exhaustive: bool = False) -> torch.Tensor:
    """``(L, Q)`` int64: how many points of cluster ``j`` are first moved by a foreign layer ``l != j``.

    A point is left fixed by ``tau^(l)`` when it lies strictly inside ``S_+^(l)`` (all
    ``z_a > 0``; on the boundary the flow's derivative is one-sided, so it does not count),
    tested along the actual composition, i.e. on the images under the earlier maps
    (Chen 2025 Def 3.1 / (3.3)); each point is counted once, at the first such layer.
    All zeros means the truncations are cluster separated. By default pairs certified by
    :func:`separation_certificate` are skipped (they have no violation); ``exhaustive=True``
    tests every point against every foreign layer (the reference; same result).
    """
    _check_layers(state, data, "separation_violations")
    blocks = ClusterBlocks.from_data(data)
    certified = torch.eye(state.depth, dtype=torch.bool, device=blocks.X.device) if exhaustive else _certificate(state, blocks)
    return _violations(state, blocks, certified)


def check_cluster_separated(
    state: EffectiveState, data: ClassificationData, where: str = "check_cluster_separated", blocks: ClusterBlocks | None = None
) -> None:
    """Raise :class:`AssumptionError` naming the first layer/cluster pair that violates Def 3.1.

    Exact (every point is covered, by the certificate or by the point test) and cheap when the
    clusters are well inside the positive orthants of the foreign layers: then bounding boxes and
    balls (:func:`separation_certificate`, ``O(L Q^4)``) decide without touching the points.
    ``blocks``: the data's :class:`ClusterBlocks`, if already built (saves a sort per call)."""
    _check_layers(state, data, where)
    if blocks is None:
        blocks = ClusterBlocks.from_data(data)
    v = _violations(state, blocks, _certificate(state, blocks))
    if bool((v > 0).any()):
        l, j = (int(i) for i in torch.nonzero(v)[0])
        raise AssumptionError(
            f"{where}: truncations are not cluster separated: layer {l + 1} truncates {int(v[l, j])} point(s) of cluster {j} "
            f"(Chen 2025 Def 3.1 needs tau^({l + 1}) = id on every other cluster); use GeneralFlow (Thm 5.1) for these data"
        )


class SeparatedFlow:
    """Cluster-separated effective flow (Chen 2025 Thm 3.2, corrected Omega; docs/theory/effective-flow.md).

    ``data``: inputs in ``R^Q``, ``Q`` clusters, targets ``Y (Q, Q)``; the state must have
    ``L = Q`` layers. ``check=True`` verifies cluster separation at the state given to
    :meth:`validate` (the integrator calls it after every accepted step) and raises
    :class:`AssumptionError` naming the layer and cluster when it fails. The check is exact and,
    for clusters well inside the foreign layers' orthants, costs ``O(L Q^4)`` bound arithmetic
    instead of a sweep over the points (:func:`check_cluster_separated`).
    Cost per field evaluation: ``O(N Q^2)``, one batched product per quantity.
    ``frozen_rotation=True`` sets ``Omega = 0``: the bias flow at fixed ``R`` of Chen 2025 §4.3
    (docs/theory/effective-flow.md), whose exact solution is :func:`exact_bias_flow`.
    """

    def __init__(self, data: ClassificationData, *, check: bool = True, frozen_rotation: bool = False) -> None:
        self.data = data
        self.blocks = ClusterBlocks.from_data(data)
        self.check = check
        self.frozen_rotation = frozen_rotation

    def validate(self, state: EffectiveState) -> None:
        """Raise ShapeError on a state that does not fit the data, AssumptionError (if ``check``) unless separated."""
        if self.check:
            check_cluster_separated(state, self.data, "SeparatedFlow", self.blocks)
        else:
            _check_layers(state, self.data, "SeparatedFlow")

    def pre_activations(self, state: EffectiveState) -> torch.Tensor:
        """``z (Q, n_max, Q)``: cluster ``l`` pushed forward by ``a_{R_l, beta^(l)}`` (padding rows are garbage; see ``blocks.mask``)."""
        return (self.blocks.X + state.beta.unsqueeze(1)) @ state.R.transpose(1, 2)

    def _frame(self, state: EffectiveState) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (Q, n_max, Q)`` of every cluster in its own layer's frame and ``v_l = R_l (beta^(l) + ỹ_l)``, ``v (Q, Q)``."""
        yt = pulled_back_labels(state, self.data.Y)
        return self.pre_activations(state), (state.R @ (state.beta + yt).unsqueeze(2)).squeeze(2)

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
        if self.frozen_rotation:
            return EffectiveField(dbeta, torch.zeros_like(state.R))
        hz = h * z
        r = hz - v.unsqueeze(1)
        # int r v^T = int (H z) v^T - m_0 v v^T; the last term is symmetric and dropped, so a
        # fully truncated cluster (H = 0) gives Omega = 0 exactly, not up to rounding
        G = (w * h * r).transpose(1, 2) @ z - (w * hz).sum(1).unsqueeze(2) * v.unsqueeze(1)
        return EffectiveField(dbeta, 0.5 * (G - G.transpose(1, 2)))

    def loss(self, state: EffectiveState) -> torch.Tensor:
        """``sum_l C~_l`` (equals :func:`input_space_loss` under cluster separation)."""
        z, v = self._frame(state)
        r = torch.relu(z) - v.unsqueeze(1)
        return 0.5 * (self.blocks.w * r.square().sum(2)).sum()
