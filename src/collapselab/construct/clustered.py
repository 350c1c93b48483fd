"""CE23: explicit zero-loss global minimizers for clustered data, ``M = Q``, ``L >= Q`` (docs/theory/minimizers.md).

Chen & Muñoz Ewald, arXiv:2309.10639 v4, Thm 2.3 (global minimum, zero cost) and
Thms 2.4/2.5 (degenerate local-minimum families, with errata E4/E5, docs/theory/errata.md).

Assumptions, each checked on the data (an :class:`AssumptionError` names the condition and
the class or pair responsible; :func:`cluster_geometry` does this):

* linearly independent class means;
* (2.14) ``delta := sup_{j,i} |Δx_{0,j,i}| < c_0 min_j |x̄_{0,j} - x̄|`` with ``c_0 < 1/4``;
* (2.52) cone condition ``max_j theta_{*,j} < pi``, where ``theta_{*,j}`` is the smallest
  aperture with ``x̄_{0,j} + C_theta[f_j] ⊃ B_{4 delta}(x̄_{0,j'})`` for all ``j' != j``,
  ``f_j = (x̄ - x̄_{0,j}) / |x̄ - x̄_{0,j}|``; computed in closed form (docs/theory/minimizers.md)
  ``theta_{*,j} = 2 max_{j'} [angle(x̄_{0,j'} - x̄_{0,j}, f_j) + arcsin(4 delta / |x̄_{0,j'} - x̄_{0,j}|)]``;
* a non-empty admissible interval ``mu_j in (-D_j, -2 delta sqrt(Q))`` (4.26).

Deviation from the paper (documented): CE23's ``(2.12) ΔX_{0,j} != 0`` is not enforced, since
a class that is a single point is collapsed just the same. Beyond the paper's
conditions, the truncation pattern is verified on the data (docs/theory/minimizers.md asks for it for
``Q >= 4``: collapsed points of earlier clusters must lie in later forward cones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.data import ClassificationData, check_data
from ..core.errors import AssumptionError, ParameterError
from ..core.geometry import angle
from ..core.validation import Interval, check_param
from ._checks import check_independent_means, deviation_stats, per_class
from ._cones import anchor_cost, assemble, check_sectors, cone_layer
from ._result import ConstructedNetwork, LayerExplanation, check_output_dtype
from .shallow import barycentric_lsq

__all__ = ["ClusterGeometry", "cluster_geometry", "admissible_mu", "construct_clustered"]


@dataclass(frozen=True)
class ClusterGeometry:
    """The data-derived quantities of CE23 2.2 (docs/theory/minimizers.md).

    means: ``(Q, M)`` class means ``x̄_{0,j}``; barycenter: ``(M,)`` ``x̄ = mean_j x̄_{0,j}``;
    axes: ``(Q, M)`` unit vectors ``f_j`` toward ``x̄``;
    distances: ``(Q,)`` ``|x̄ - x̄_{0,j}|``; theta_star: ``(Q,)`` the angles ``theta_{*,j}``;
    radii: ``(Q,)`` per-class ``max_i |Δx_{0,j,i}|``; delta_P: the
    barycentric noise ``sup |(X_0^red)^{-1} Δx_{0,j,i}|`` (CE23 (2.56) with ``tau = id``).
    """

    means: torch.Tensor
    barycenter: torch.Tensor
    axes: torch.Tensor
    distances: torch.Tensor
    theta_star: torch.Tensor
    radii: torch.Tensor
    delta_P: float

    @property
    def delta(self) -> float:
        """``delta = sup_{j,i} |Δx_{0,j,i}| = max_j radii_j`` (CE23 (2.14))."""
        return float(self.radii.max())

    @property
    def theta_max(self) -> float:
        """``max_j theta_{*,j}`` (must be ``< pi``, CE23 (2.52))."""
        return float(self.theta_star.max())


def cluster_geometry(data: ClassificationData, *, where: str = "cluster_geometry", source: str = "CE23 Thm 2.3") -> ClusterGeometry:
    """Means, ``delta``, ``f_j``, ``theta_{*,j}`` of clustered data, checking independence, (2.14) and (2.52).

    Raises AssumptionError naming the condition and the class (pair) that violates it.
    Shared with CE24 Prop 4.1 (same assumptions (4.1)-(4.6)).
    """
    means = data.class_means
    q = data.num_classes
    if q < 2:
        raise AssumptionError(f"{where}: {source} needs at least Q = 2 classes, got Q = {q}")
    check_independent_means(means, where=where, source=source)
    radii, dp = deviation_stats(data.X, data.labels, means)
    widest = int(radii.argmax())
    delta = float(radii[widest])
    bary = means.mean(0)
    to_bary = bary - means
    dist = to_bary.norm(dim=1)
    jmin = int(dist.argmin())
    if not delta < float(dist[jmin]) / 4:
        raise AssumptionError(
            f"{where}: clusters too wide: delta = sup|Δx| = {delta:.4g} (a point of class {widest}) is not below "
            f"|x̄_j - x̄|/4 = {float(dist[jmin]) / 4:.4g} for class {jmin}; {source} needs delta < c_0 min_j |x̄_j - x̄| with "
            "c_0 < 1/4 (CE23 (2.14)); tighten the clusters or separate the means"
        )
    axes = to_bary / dist[:, None]
    diff = means[None, :, :] - means[:, None, :]  # [j, j'] = x̄_{j'} - x̄_j
    d = diff.norm(dim=2)
    off = ~torch.eye(q, dtype=torch.bool, device=means.device)
    ratio = torch.where(off, 4 * delta / d.where(off, torch.ones_like(d)), torch.zeros_like(d))
    if bool((ratio >= 1).any()):
        j, jp = (int(i) for i in torch.nonzero(ratio >= 1)[0])
        raise AssumptionError(
            f"{where}: cone condition (CE23 (2.51)/(2.52)) fails for the pair ({j}, {jp}): the 4 delta-ball around the mean of "
            f"class {jp} contains the mean of class {j} (4 delta = {4 * delta:.4g} >= distance {float(d[j, jp]):.4g}); tighten the clusters"
        )
    half = angle(diff, axes[:, None, :].expand_as(diff)) + torch.asin(ratio)
    half = torch.where(off, half, torch.full_like(half, -math.inf))
    theta_star = 2 * half.amax(dim=1)
    j = int(theta_star.argmax())
    if not float(theta_star[j]) < math.pi:
        jp = int(half[j].argmax())
        raise AssumptionError(
            f"{where}: cone condition (CE23 (2.52)) fails for the pair ({j}, {jp}): theta_*,{j} = {float(theta_star[j]):.4g} >= pi, "
            f"i.e. no cone of aperture < pi at the mean of class {j} pointing to the barycenter contains the 4 delta-ball around the "
            f"mean of class {jp}; the clusters are too wide or the means badly placed for {source}"
        )
    return ClusterGeometry(means, bary, axes, dist, theta_star, radii, dp)


def admissible_mu(
    geom: ClusterGeometry, theta: float, *, classes: Sequence[int] | None = None, where: str = "admissible_mu"
) -> tuple[float, torch.Tensor]:
    """The admissible collapse parameters of CE23 (4.26): ``mu_j in (-D_j, -2 delta sqrt(Q))``.

    Returns ``(2 delta sqrt(Q), D)`` with ``D`` of shape ``(Q,)``: ``D_j`` is the largest ``s``
    such that the cone ``x̄_{0,j} + s f_j + C_theta[f_j]`` contains ``B_delta(x̄_{0,j'})`` for all
    ``j' != j``, capped at ``|x̄ - x̄_{0,j}|`` so that the apex stays on the segment
    ``[x̄_{0,j}, x̄]`` (this keeps earlier collapse points inside later forward cones by
    convexity, CE24 (6.21)-(6.27)). Per class rather than CE23's single ``D = min_j D_j``.

    Closed form instead of a 1-D search (derived here): with ``psi = theta/2 < pi/2`` and
    ``x̄_{0,j'} - x̄_{0,j} = alpha f_j + w_perp``, ``|w_perp| = beta``, the signed distance of
    ``x̄_{0,j'}`` to the boundary of the cone with apex ``x̄_{0,j} + s f_j`` is
    ``(alpha - s) sin psi - beta cos psi``, so the ball fits iff
    ``s <= alpha - (delta + beta cos psi) / sin psi``, for every smaller ``s`` too.
    Raises AssumptionError naming the class (and the class leaving the cone) if the interval of
    one of ``classes`` (default: all) is empty.
    """
    q = geom.means.shape[0]
    lo = 2 * geom.delta * math.sqrt(q)
    psi = theta / 2
    diff = geom.means[None, :, :] - geom.means[:, None, :]  # [j, j'] = x̄_{j'} - x̄_j
    alpha = (diff * geom.axes[:, None, :]).sum(2)
    beta = (diff - alpha[..., None] * geom.axes[:, None, :]).norm(dim=2)
    limit = alpha - (geom.delta + beta * math.cos(psi)) / math.sin(psi)
    limit = limit + torch.diag(torch.full((q,), math.inf, dtype=limit.dtype, device=limit.device))
    cone_limit, blocker = limit.min(dim=1)
    D = torch.minimum(cone_limit, geom.distances)
    for j in range(q) if classes is None else classes:
        if not lo < float(D[j]):
            what = (
                f"the delta-ball of class {int(blocker[j])} leaves the cone of aperture {theta:.4g} (pair ({j}, {int(blocker[j])}))"
                if float(cone_limit[j]) <= float(geom.distances[j])
                else f"the apex would pass the barycenter (|x̄_{j} - x̄| = {float(geom.distances[j]):.4g})"
            )
            raise AssumptionError(
                f"{where}: no admissible mu for class {j} (CE23 (4.26)): the collapse needs |mu| > 2 delta sqrt(Q) = {lo:.4g} but "
                f"beyond |mu| = {float(D[j]):.4g} {what}; the clusters are too wide for the cone condition: tighten them"
            )
    return lo, D


def _branches(mu: float | Sequence[float] | None, keep: Sequence[int], q: int, where: str) -> tuple[list[float] | None, list[bool]]:
    """``(mu values or None, collapsed[j])``: which classes are collapsed (Thm 2.3) and which kept (Thms 2.4/2.5)."""
    if mu is not None and keep:
        raise ParameterError(f"{where}: give either mu (whose signs choose collapse/keep) or keep, not both")
    if mu is None:
        for j in keep:
            check_param("keep[]", j, Interval(int, 0, q - 1), where)
        kept = {int(j) for j in keep}
        return None, [j not in kept for j in range(q)]
    values = per_class(mu, q, "mu", where)
    return values, [v < 0 for v in values]


def _mu_values(values: list[float] | None, collapsed: list[bool], lo: float, D: torch.Tensor, where: str) -> list[float]:
    """The documented default rule, or the given values checked against the admissible intervals."""
    if values is None:
        return [-(lo + float(D[j])) / 2 if c else 2 * lo for j, c in enumerate(collapsed)]
    for j, v in enumerate(values):
        if not math.isfinite(v) or not (-float(D[j]) < v < -lo or v > lo):
            raise ParameterError(
                f"{where}: mu[{j}] = {v!r} is in neither admissible interval for class {j}: collapse needs mu in "
                f"({-float(D[j]):.6g}, {-lo:.6g}) (CE23 (2.58)), keep needs mu > {lo:.6g} (CE23 Thm 2.4, I_1)"
            )
    return values


def construct_clustered(
    X: Any,
    labels: Any,
    Y: Any | None = None,
    *,
    depth: int | None = None,
    theta: float | None = None,
    mu: float | Sequence[float] | None = None,
    keep: Sequence[int] = (),
    dtype: torch.dtype = torch.float64,
) -> ConstructedNetwork:
    """CE23 Thm 2.3: a ReLU network ``R^Q -> R^Q -> ... -> R^P`` with ``L`` hidden layers and zero cost.

    Algorithm (docs/theory/minimizers.md): hidden layer ``l = 1..Q`` is the cone layer with apex
    ``p_l = x̄_{0,l} - mu_l f_l`` (the mean moved ``|mu_l|`` toward the barycenter), axis
    ``f_l`` and aperture ``theta_*``: cumulative ``W^(l) = W_* R_l``, ``b^(l) = -W^(l) p_l``
    with ``W_* = lambda 1 + (1 - lambda) û û^T``, ``lambda = lambda(theta_*, theta_Q)`` (CE23
    (2.63)-(2.65)). It collapses class ``l`` to ``p_l`` and fixes everything else, so
    ``tau(X_0) = [p_1 u^T ... p_Q u^T]`` (2.59). Layers ``Q+1..L`` are ``W_l = 1, b_l = 0``
    (exactly the identity on ReLU outputs). Output: ``W^(L+1) = Y (X_0^red[mu])^{-1}``,
    ``b^(L+1) = 0`` (4.74)/(4.75).

    Local-minimum families (CE23 Thms 2.4/2.5 with errata E4/E5): a class ``j`` with
    ``mu_j > 2 delta sqrt(Q)`` (interval ``I_1``) is *kept* (its layer is the identity on the
    data); the output layer is then the least-squares optimum without output bias for the
    truncated data ``tau(X_0)`` (:func:`barycentric_lsq` with the truncated reduced matrix,
    erratum E4), and the cost equals ``|Y |Δ_2|^{1/2} (1 + Δ_2)^{-1/2}|_F``. Keeping every
    class is Thm 2.4 (``tau(X_0) = X_0``).

    Rules (all overridable):

    * ``theta`` (the aperture ``theta_*``): default ``(max_j theta_{*,j} + pi) / 2``, the midpoint of
      the admissible ``(max_j theta_{*,j}, pi)``: a larger cone gives more room to the forward
      cone but ``lambda -> 0`` as ``theta -> pi`` makes ``W_*`` ill-conditioned.
    * ``mu``: default ``mu_j = -(2 delta sqrt(Q) + D_j) / 2``, the midpoint of the admissible
      ``(-D_j, -2 delta sqrt(Q))`` (:func:`admissible_mu`); classes listed in ``keep`` get
      ``mu_j = 4 delta sqrt(Q)`` (twice the lower end of ``I_1``). Given explicitly, the sign of
      each ``mu_j`` picks collapse (< 0) or keep (> 0).

    X: ``(N, Q)``; labels: ``(N,)`` in ``[0, Q)``; Y: ``(Q, P)`` (identity if ``None``);
    depth: ``L >= Q`` (default ``Q``). dtype: the returned network's (float64 or float32); the
    construction runs in float64 either way, after an exact upcast of float32 inputs, and the
    result carries ``delta``, the admissible ``theta`` interval and each class's admissible ``mu``
    interval (:class:`ConstructedNetwork`). The returned cost is CE23's ``L2_N`` norm (2.35), computed
    from the verified truncation pattern (zero-loss branch: ``(sum_j |W^(L+1) p_j - y_j|^2)^{1/2}``;
    local families: the least-squares value); ``module(X)`` reproduces it.
    Raises AssumptionError for data violating an assumption (naming condition and class/pair),
    ParameterError for bad ``depth``/``theta``/``mu``.
    """
    where = "construct_clustered"
    dtype = check_output_dtype(dtype, where)
    data = check_data(X, labels, Y, dtype=torch.float64, where=where)  # float32 inputs: an exact upcast
    q, m = data.num_classes, data.dim
    if m != q:
        raise AssumptionError(
            f"{where}: the inputs live in R^{m} but CE23 Thm 2.3 needs M = Q = {q}; use construct_clustered_wide "
            "(CE24 Prop 4.1 at constant width) or construct_sequential, or project onto the span of the class means"
        )
    L = q if depth is None else int(check_param("depth", depth, Interval(int, q), where))
    geom = cluster_geometry(data, where=where, source="CE23 Thm 2.3")
    if theta is None:
        theta = (geom.theta_max + math.pi) / 2
    elif not (isinstance(theta, (int, float)) and geom.theta_max < theta < math.pi):
        raise ParameterError(f"{where}: theta must lie in (max_j theta_*,j, pi) = ({geom.theta_max:.6g}, {math.pi:.6g}) (CE23 (4.24)/(4.25)), got {theta!r}")
    theta = float(theta)
    given, collapsed = _branches(mu, keep, q, where)
    lo, D = admissible_mu(geom, theta, classes=[j for j in range(q) if collapsed[j]], where=where)
    mus = _mu_values(given, collapsed, lo, D, where)
    mu_t = torch.tensor(mus, dtype=data.X.dtype, device=data.X.device)
    apexes = geom.means - mu_t[:, None] * geom.axes  # p_j = x̄_j - mu_j f_j
    hidden = [cone_layer(apexes[j], geom.axes[j], theta) for j in range(q)]
    handled_by = [j if collapsed[j] else None for j in range(q)]
    check_sectors(
        data, geom.radii, hidden, handled_by, apexes, where=where,
        forward_condition="the cone condition (CE23 (2.52), (4.26))",
        collapse_condition="the collapse condition mu_j < -2 delta sqrt(Q) (CE23 Lemma 4.1)",
    )
    is_collapsed = torch.tensor(collapsed, device=data.X.device)
    anchors = torch.where(is_collapsed[:, None], apexes, geom.means)  # class means of tau(X_0)
    metric = torch.linalg.solve(anchors, data.Y).T  # Y (X_0^red[mu])^{-1}, CE23 (2.61), (4.74)
    if all(collapsed):
        W_out = metric
        zero = torch.zeros(W_out.shape[0], dtype=W_out.dtype, device=W_out.device)
        cost = math.sqrt(anchor_cost(anchors, (W_out, zero), data.Y, torch.ones_like(mu_t)))
    else:  # Thms 2.4/2.5: least squares without bias on tau(X_0), truncated reduced matrix (E4, E5)
        T = torch.where(is_collapsed[data.labels][:, None], anchors[data.labels], data.X)
        lsq = barycentric_lsq(T, data.labels, data.Y)
        W_out, cost = lsq.weight, float(lsq.value)
    output = (W_out, torch.zeros(W_out.shape[0], dtype=W_out.dtype, device=W_out.device))
    module, cumulative = assemble(hidden, output, extra_identity=L - q)
    layers = [
        LayerExplanation(j if collapsed[j] else None, apexes[j].clone() if collapsed[j] else None, mus[j], theta, geom.axes[j].clone())
        for j in range(q)
    ] + [LayerExplanation() for _ in range(L - q)]
    return ConstructedNetwork(
        kind="clustered",
        module=module,
        cumulative=cumulative,
        layers=layers,
        anchors=anchors,
        metric=metric,
        cost=cost,
        cost_definition="CE23 (2.35): L2_N norm",
        delta_P=geom.delta_P,
        descriptive_parameters=q * (m + 2),
        order=tuple(range(q)),
        delta=geom.delta,
        theta_interval=(geom.theta_max, math.pi),
        mu_intervals=tuple((-float(D[j]), -lo) if collapsed[j] else (lo, math.inf) for j in range(q)),
    ).astype(dtype)
