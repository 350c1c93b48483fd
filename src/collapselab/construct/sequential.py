"""CE24: zero loss on sequentially linearly separable data, ``Q`` classes in ``R^M`` (docs/theory/minimizers.md).

Chen & Muñoz Ewald, arXiv:2405.07098 v2 (JMLR 26(173) 2025):

* :func:`construct_sequential`: Thm 5.2. Constant width ``M`` (``d_0 = ... = d_Q = M >= Q``,
  ``d_{Q+1} = P``), one cone layer per class in a sequentially separable order, zero cost.
  The order is searched exhaustively (depth-first over all ``Q!`` orders, small ``Q``) or
  greedily (largest margin first); per step the separating hyperplane is the max-margin
  linear program of docs/theory/minimizers.md step 3 (``scipy.optimize.linprog``, HiGHS).
* :func:`construct_clustered_wide`: Prop 4.1 for clustered data, implemented at constant
  width ``M`` as erratum E6, docs/theory/errata.md recommends (independently prescribed cumulative weights
  of decreasing width violate kernel nesting); it is Thm 5.2 with ``h_l = f_l``,
  ``p_l = x̄_{0,l} + mu_l f_l`` and ``theta_l = theta_*``.

Both report the ``Q(M+2)`` descriptive parameters of Thm 5.2 (per layer a cone angle
``theta_l``, an axis ``h_l`` in ``R^M`` and a position ``mu_l``) and use CE24's cost
``1/2 |X^(L) - Y^ext|_F^2`` (2.11). Def 5.1's segment is read as
``{t x̄ + (1 - t) x̄_{0,j} : t in (0, 1)}`` (erratum E7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linprog

from ..core.data import ClassificationData, check_data
from ..core.errors import AssumptionError, DivergenceError, ParameterError, SingularError
from ..core.geometry import angle
from ..core.validation import OneOf, check_param
from ._checks import check_independent_means, deviation_stats, per_class
from ._cones import anchor_cost, assemble, check_sectors, cone_layer
from ._result import ConstructedNetwork, LayerExplanation, check_output_dtype
from .clustered import cluster_geometry

__all__ = ["SequentialStep", "max_margin_hyperplane", "construct_sequential", "construct_clustered_wide"]

EXHAUSTIVE_MAX_Q = 5
"""``search="auto"`` tries all orders for ``Q <= 5`` (120 orders) and searches greedily beyond."""

_SEP_TOL = 1e-9
"""A margin counts as positive when it exceeds ``1e-9`` times the data's radius."""


@dataclass(frozen=True)
class SequentialStep:
    """One hidden layer of CE24 Thm 5.2: collapse class ``cls`` to ``apex``.

    apex: ``(M,)`` ``p_l``; axis: ``(M,)`` unit normal ``h_l`` of the separating hyperplane
    (pointing away from the class); position: ``mu_l`` (``p_l = x̄_l + mu_l (x̄ - x̄_l)`` for
    Thm 5.2, ``p_l = x̄_l + mu_l f_l`` for Prop 4.1); margin: Euclidean margin of the
    hyperplane (``nan`` for Prop 4.1, which needs no hyperplane search); theta_min: the lower
    bound of the admissible apertures (the conical approximation (5.6); Prop 4.1's
    ``max(max_j theta_{*,j}, pi/2)``); theta: the aperture used.
    """

    cls: int
    apex: torch.Tensor
    axis: torch.Tensor
    position: float
    margin: float
    theta_min: float
    theta: float


def _solve_lp(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``max gamma`` s.t. ``h.a - c <= -gamma`` (rows of A), ``h.b - c >= gamma`` (rows of B), ``|h|_inf <= 1``."""
    m = A.shape[1]
    A_ub = np.concatenate(
        [np.hstack([A, -np.ones((len(A), 1)), np.ones((len(A), 1))]), np.hstack([-B, np.ones((len(B), 1)), np.ones((len(B), 1))])]
    )
    cost = np.zeros(m + 2)
    cost[-1] = -1.0
    bounds = [(-1.0, 1.0)] * m + [(None, None), (None, None)]
    res = linprog(cost, A_ub=A_ub, b_ub=np.zeros(len(A_ub)), bounds=bounds, method="highs")
    if res.status != 0:
        raise DivergenceError(f"max_margin_hyperplane: the linear program failed ({res.message}); the data may be badly scaled")
    return res.x


def max_margin_hyperplane(neg: torch.Tensor, pos: torch.Tensor, *, batch: int = 256) -> tuple[torch.Tensor, float, float]:
    """Max-margin separating hyperplane ``{x : <h, x> = c}`` with ``<h, neg> < c < <h, pos>`` (docs/theory/minimizers.md).

    Solves ``max gamma`` subject to ``<h, a> - c <= -gamma`` on ``neg``, ``<h, b> - c >= gamma`` on
    ``pos``, ``|h|_inf <= 1`` (a linear program, HiGHS) in centred and scaled coordinates, by
    cutting planes: start from the ``batch`` points of each set nearest the other set along
    the mean difference, then repeatedly add the ``batch`` most violated points until none is
    violated (the optimum of the reduced LP is then the optimum of the full one). Cost: a
    few matrix-vector products over all points plus LPs of a few hundred rows.

    neg: ``(n1, M)``, pos: ``(n2, M)``. Returns ``(h, c, margin)`` with ``|h| = 1`` (on the
    inputs' device/dtype) and ``margin = min(min(c - <h, neg>), min(<h, pos> - c))`` the exact
    Euclidean margin of that hyperplane (``<= 0`` when the sets are not linearly separable).
    """
    An = neg.detach().cpu().double().numpy()
    Bn = pos.detach().cpu().double().numpy()
    shift = 0.5 * (An.mean(0) + Bn.mean(0))
    scale = max(float(np.abs(An - shift).max()), float(np.abs(Bn - shift).max()), 1e-300)
    A, B = (An - shift) / scale, (Bn - shift) / scale
    d = B.mean(0) - A.mean(0)

    def nearest(P: np.ndarray, key: np.ndarray) -> np.ndarray:
        return np.arange(len(P)) if len(P) <= batch else np.argpartition(key, batch)[:batch]

    act_a, act_b = nearest(A, -(A @ d)), nearest(B, B @ d)
    while True:  # the active sets grow strictly, so this ends (at the latest with all points)
        x = _solve_lp(A[act_a], B[act_b])
        h, c, gamma = x[:-2], x[-2], x[-1]
        if gamma <= 0:
            break
        va = A @ h - c + gamma
        vb = c + gamma - B @ h
        tol = 1e-12 * max(1.0, abs(gamma))
        new_a = np.setdiff1d(np.flatnonzero(va > tol), act_a)
        new_b = np.setdiff1d(np.flatnonzero(vb > tol), act_b)
        if not len(new_a) and not len(new_b):
            break
        act_a = np.concatenate([act_a, new_a[np.argsort(-va[new_a])[:batch]]])
        act_b = np.concatenate([act_b, new_b[np.argsort(-vb[new_b])[:batch]]])
    h_orig = h / scale
    c_orig = c + float(h_orig @ shift)
    norm = float(np.linalg.norm(h_orig))
    if norm == 0.0:
        return torch.zeros(neg.shape[1], dtype=neg.dtype, device=neg.device), 0.0, 0.0
    ht = torch.as_tensor(h_orig / norm, dtype=neg.dtype, device=neg.device)
    c_unit = c_orig / norm
    margin = min(float((c_unit - neg @ ht).min()), float((pos @ ht - c_unit).min()))
    return ht, c_unit, margin


def _conical(p: torch.Tensor, h: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor) -> float:
    """``theta_min = 2 max(max_{x in fwd} angle(x - p, h), max_{x in bwd} angle(x - p, -h))`` (CE24 (5.6))."""
    a = angle(fwd - p, h.expand_as(fwd)).max() if len(fwd) else torch.zeros((), dtype=p.dtype, device=p.device)
    b = angle(bwd - p, (-h).expand_as(bwd)).max()
    return 2 * max(float(a), float(b))


class _Search:
    """Ordering search of CE24 Thm 5.2 (docs/theory/minimizers.md steps 1-4) over the classes of ``data``."""

    def __init__(self, data: ClassificationData, where: str) -> None:
        self.parts = [data.X[idx] for idx in data.class_indices]
        self.means = data.class_means
        self.bary = self.means.mean(0)
        self.tol = _SEP_TOL * float((data.X - self.bary).norm(dim=1).max())
        self.where = where
        self.lps = 0

    def rest(self, done: Sequence[SequentialStep], later: Sequence[int]) -> torch.Tensor:
        pts = [s.apex[None] for s in done] + [self.parts[k] for k in later]
        return torch.cat(pts) if pts else self.bary.new_zeros((0, self.bary.shape[0]))

    def step(self, cls: int, done: Sequence[SequentialStep], later: Sequence[int]) -> SequentialStep | None:
        """Separate class ``cls`` from earlier collapse points, later classes and ``x̄``; ``None`` if impossible."""
        neg, fwd = self.parts[cls], self.rest(done, later)
        self.lps += 1
        h, c, margin = max_margin_hyperplane(neg, torch.cat([fwd, self.bary[None]]))
        if margin <= self.tol:
            return None
        xm = self.means[cls]
        t = (c - float(h @ xm)) / float(h @ (self.bary - xm))
        p = xm + t * (self.bary - xm)
        th_min = _conical(p, h, fwd, neg)
        return SequentialStep(cls, p, h, t, margin, th_min, (th_min + math.pi) / 2)

    def blocking(self, cls: int, done: Sequence[SequentialStep], later: Sequence[int]) -> str:
        """Name what stops class ``cls`` from being separated (a single class or collapse point if one suffices)."""
        neg = self.parts[cls]
        for k in later:
            if max_margin_hyperplane(neg, self.parts[k])[2] <= self.tol:
                return f"class {cls} cannot be separated from class {k} by any hyperplane (pair ({cls}, {k}))"
        for s in done:
            if max_margin_hyperplane(neg, s.apex[None])[2] <= self.tol:
                return f"class {cls} cannot be separated from the collapse point of class {s.cls} (pair ({cls}, {s.cls}))"
        return f"class {cls} cannot be separated from the union of classes {list(later)} and the collapse points of {[s.cls for s in done]}"

    def run_order(self, order: Sequence[int]) -> list[SequentialStep]:
        steps: list[SequentialStep] = []
        for pos, cls in enumerate(order):
            st = self.step(cls, steps, order[pos + 1 :])
            if st is None:
                raise AssumptionError(
                    f"{self.where}: the data are not sequentially linearly separable in the order {list(order)} (CE24 Def 5.1): "
                    f"{self.blocking(cls, steps, order[pos + 1 :])}; try another order or search='exhaustive'"
                )
            steps.append(st)
        return steps

    def exhaustive(self, q: int) -> list[SequentialStep]:
        failure: list[tuple[int, list[SequentialStep], list[int]]] = []

        def dfs(steps: list[SequentialStep], remaining: list[int]) -> list[SequentialStep] | None:
            if not remaining:
                return steps
            for cls in remaining:
                later = [k for k in remaining if k != cls]
                st = self.step(cls, steps, later)
                if st is None:
                    if not failure:
                        failure.append((cls, list(steps), later))
                    continue
                found = dfs([*steps, st], later)
                if found is not None:
                    return found
            return None

        found = dfs([], list(range(q)))
        if found is None:
            cls, done, later = failure[0]
            raise AssumptionError(
                f"{self.where}: the data are not sequentially linearly separable in any of the {math.factorial(q)} class orders "
                f"(exhaustive search, CE24 Def 5.1): {self.blocking(cls, done, later)}"
            )
        return found

    def greedy(self, q: int) -> list[SequentialStep]:
        steps: list[SequentialStep] = []
        remaining = list(range(q))
        while remaining:
            cands = [s for cls in remaining if (s := self.step(cls, steps, [k for k in remaining if k != cls])) is not None]
            if not cands:
                cls = remaining[0]
                raise AssumptionError(
                    f"{self.where}: greedy search found no class separable at position {len(steps) + 1} after {[s.cls for s in steps]} "
                    f"(CE24 Def 5.1): {self.blocking(cls, steps, remaining[1:])}; the data may still be separable in another order: "
                    "pass order=[...] or search='exhaustive'"
                )
            best = max(cands, key=lambda s: s.margin)
            steps.append(best)
            remaining.remove(best.cls)
        return steps


def _finish(
    data: ClassificationData,
    steps: Sequence[SequentialStep],
    stats: tuple[torch.Tensor, float],
    kind: str,
    where: str,
    forward: str,
    collapse: str,
    intervals: dict[str, Any] | None = None,
) -> ConstructedNetwork:
    """Cone layers from ``steps`` (docs/theory/minimizers.md steps 5-7), the sector check, the output layer, the result.

    stats: ``(radii, delta_P)`` of :func:`~._checks.deviation_stats` (computed once by the caller);
    intervals: the result's ``delta``/``theta_interval``/``mu_intervals`` where the kind has them.
    """
    q, m = data.num_classes, data.dim
    hidden = [cone_layer(s.apex, s.axis, s.theta) for s in steps]
    handled_by: list[int | None] = [None] * q
    for k, s in enumerate(steps):
        handled_by[s.cls] = k
    P = torch.stack([s.apex for s in sorted(steps, key=lambda s: s.cls)])  # (Q, M), row j = p_j
    radii, dp = stats
    check_sectors(data, radii, hidden, handled_by, P, where=where, forward_condition=forward, collapse_condition=collapse)
    sv = torch.linalg.svdvals(P)
    if float(sv[-1]) <= 1e3 * torch.finfo(P.dtype).eps * max(q, m) * float(sv[0]):
        raise SingularError(f"{where}: the collapse points are linearly dependent (singular values {sv.tolist()}); CE24 (5.22)-(5.28) needs rank Q")
    W_out = data.Y.T @ torch.linalg.pinv(P.T)  # Y [p_1 ... p_Q]^+ (5.22)
    output = (W_out, torch.zeros(W_out.shape[0], dtype=W_out.dtype, device=W_out.device))
    module, cumulative = assemble(hidden, output)
    cost = anchor_cost(P, output, data.Y, 0.5 * data.class_counts.to(P.dtype))  # CE24 (2.11) on tau(X_0) = [p_j u^T]
    layers = [LayerExplanation(s.cls, s.apex.clone(), float(s.position), float(s.theta), s.axis.clone()) for s in steps]
    return ConstructedNetwork(
        kind=kind,
        module=module,
        cumulative=cumulative,
        layers=layers,
        anchors=P,
        metric=W_out,
        cost=cost,
        cost_definition="CE24 (2.11): 1/2 squared Frobenius",
        delta_P=dp,
        descriptive_parameters=q * (m + 2),
        order=tuple(s.cls for s in steps),
        **(intervals or {}),
    )


def construct_sequential(
    X: Any,
    labels: Any,
    Y: Any | None = None,
    *,
    order: Sequence[int] | None = None,
    search: str = "auto",
    dtype: torch.dtype = torch.float64,
) -> ConstructedNetwork:
    """CE24 Thm 5.2: zero-cost ReLU network of constant width ``M`` with ``Q`` hidden layers.

    Algorithm (docs/theory/minimizers.md): for each class ``l`` in a sequentially separable order, the
    max-margin hyperplane ``(h_l, c_l)`` separates the class from the earlier collapse points,
    the later classes and ``x̄`` (:func:`max_margin_hyperplane`); ``p_l`` is where it cuts the
    segment ``[x̄_{0,l}, x̄]``, ``p_l = x̄_{0,l} + mu_l (x̄ - x̄_{0,l})``; the conical
    approximation (5.6) gives ``theta_{l,min}`` and the rule ``theta_l = (theta_{l,min} + pi)/2``
    (midpoint of the admissible ``(theta_{l,min}, pi)``); the cone layer ``W^(l) = W_{theta_l} R_l``,
    ``b^(l) = -W^(l) p_l`` collapses the class to ``p_l`` and fixes the rest (5.14),(5.19).
    Output ``W^(Q+1) = Y [p_1 ... p_Q]^+``, ``b^(Q+1) = 0`` (5.22)-(5.28).

    order: a permutation of ``range(Q)`` to use as is; otherwise ``search`` picks it:
    ``"exhaustive"`` (depth-first over all orders in lexicographic order, the first
    separable one wins; proves non-separability when all fail), ``"greedy"`` (at each
    position the class with the largest margin; ``Q(Q+1)/2`` linear programs, may miss an
    order), ``"auto"`` (exhaustive for ``Q <= 5``, else greedy).

    X: ``(N, M)`` with ``M >= Q``; labels: ``(N,)``; Y: ``(Q, P)`` (identity if ``None``).
    dtype: the returned network's (float64 or float32); the construction runs in float64 after an
    exact upcast of float32 inputs.
    Raises AssumptionError if the means are dependent or the data are not sequentially
    separable (naming the class and the class or collapse point blocking it).
    """
    where = "construct_sequential"
    dtype = check_output_dtype(dtype, where)
    data = check_data(X, labels, Y, dtype=torch.float64, where=where)  # float32 inputs: an exact upcast
    q = data.num_classes
    check_param("search", search, OneOf(["auto", "exhaustive", "greedy"]), where)
    if q < 2:
        raise AssumptionError(f"{where}: CE24 Thm 5.2 needs at least Q = 2 classes, got Q = {q}")
    check_independent_means(data.class_means, where=where, source="CE24 Thm 5.2 (rank X_0^red = Q)")
    searcher = _Search(data, where)
    if order is not None:
        try:
            given = [int(k) for k in order]
        except (TypeError, ValueError):
            given = []
        if sorted(given) != list(range(q)):
            raise ParameterError(f"{where}: order must be a permutation of 0..{q - 1}, got {order!r}")
        steps = searcher.run_order(given)
    elif search == "exhaustive" or (search == "auto" and q <= EXHAUSTIVE_MAX_Q):
        steps = searcher.exhaustive(q)
    else:
        steps = searcher.greedy(q)
    return _finish(
        data, steps, deviation_stats(data.X, data.labels, data.class_means), "sequential", where,
        forward="the separating cone (CE24 (5.6), Lemma 3.4)", collapse="the backward cone (CE24 (5.6), Lemma 3.4)",
    ).astype(dtype)


def construct_clustered_wide(
    X: Any,
    labels: Any,
    Y: Any | None = None,
    *,
    theta: float | None = None,
    mu: float | Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> ConstructedNetwork:
    """CE24 Prop 4.1 for clustered data in ``R^M``, ``M >= Q``, at constant width ``M`` (erratum E6).

    Same assumptions as CE23 ((4.1)-(4.6): independent means, ``delta < |x̄_{0,j} - x̄| / 4``, the
    cone condition with ``4 delta``-balls; checked by :func:`cluster_geometry`). Hidden layer
    ``l`` is the cone layer with apex ``p_l = x̄_{0,l} + mu_l f_l`` (``f_l`` toward ``x̄``; note
    CE24's ``+mu f`` with ``mu > 0`` is CE23's ``-mu f`` with ``mu < 0``), axis ``f_l`` and aperture
    ``theta_*`` ((4.8)/(6.14)); output ``Y [p_1 ... p_Q]^+`` ((4.9); erratum E7: (6.34) reads
    ``+mu_j f_j``). This is Thm 5.2 with ``h_l = f_l`` (docs/theory/minimizers.md).

    theta: default ``(max_j theta_{*,j} + pi) / 2`` (>= pi/2 as (4.24) requires); must lie in
    ``(max(max_j theta_{*,j}, pi/2), pi)``. mu: default ``2.5 delta`` (midpoint of Prop 4.1's
    ``(2 delta, 3 delta)``), a number or one per class. Cost: CE24 (2.11). dtype: the returned
    network's (float64 or float32); the construction runs in float64 after an exact upcast of
    float32 inputs. The result carries ``delta`` and the admissible ``theta`` and ``mu`` intervals.
    """
    where = "construct_clustered_wide"
    dtype = check_output_dtype(dtype, where)
    data = check_data(X, labels, Y, dtype=torch.float64, where=where)  # float32 inputs: an exact upcast
    q = data.num_classes
    geom = cluster_geometry(data, where=where, source="CE24 Prop 4.1")
    lo_theta = max(geom.theta_max, math.pi / 2)
    if theta is None:
        theta = (geom.theta_max + math.pi) / 2
    elif not (isinstance(theta, (int, float)) and lo_theta < theta < math.pi):
        raise ParameterError(f"{where}: theta must lie in (max(max_j theta_*,j, pi/2), pi) = ({lo_theta:.6g}, {math.pi:.6g}) (CE24 (4.24)), got {theta!r}")
    d = geom.delta
    mus = per_class(2.5 * d if mu is None else mu, q, "mu", where)
    for j, v in enumerate(mus):
        if not 2 * d < v < 3 * d:
            raise ParameterError(f"{where}: mu[{j}] = {v!r} must lie in (2 delta, 3 delta) = ({2 * d:.6g}, {3 * d:.6g}) (CE24 Prop 4.1)")
    steps = []
    for j in range(q):
        p = geom.means[j] + mus[j] * geom.axes[j]
        steps.append(SequentialStep(j, p, geom.axes[j].clone(), mus[j], math.nan, lo_theta, float(theta)))
    return _finish(
        data, steps, (geom.radii, geom.delta_P), "clustered-wide", where,
        forward="the cone condition (CE24 (4.5)/(4.6))", collapse="the collapse condition mu_l in (2 delta, 3 delta) (CE24 Prop 4.1)",
        intervals={"delta": d, "theta_interval": (lo_theta, math.pi), "mu_intervals": tuple((2 * d, 3 * d) for _ in range(q))},
    ).astype(dtype)
