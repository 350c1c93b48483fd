"""Integration of the effective flow on ``(R^Q x O(Q))^L`` with event detection.

Method: Runge-Kutta-Munthe-Kaas of order 4 (Munthe-Kaas 1999; Iserles, Munthe-Kaas, Norsett,
Zanna, Acta Numerica 2000, the RKMK4 scheme with truncated ``dexp^{-1}``). With the field
``xi(y) = (dbeta, -Omega)`` in the Lie algebra ``(R^Q x so(Q))^L`` acting by
``exp(b, A) . (beta, R) = (beta + b, e^A R)``:

    k1 = h xi(y0),  k2 = h xi(exp(k1/2) y0),  k3 = h xi(exp(k2/2 - [k1,k2]/8) y0),
    k4 = h xi(exp(k3) y0),  y1 = exp((k1 + 2 k2 + 2 k3 + k4)/6 - [k1,k4]/12) y0.

Every update is a matrix exponential of an antisymmetric matrix, so ``R`` stays orthogonal
for any step size; one Newton-Schulz correction per step keeps the rounding error at about
1e-16 instead of letting it grow with the number of steps; ``"lie-euler"`` (``y1 = exp(h xi(y0)) y0``,
order 1) is offered for comparisons. The exponential comes from a unitary eigendecomposition
(:func:`expm_antisymmetric`: a few ulps; ``torch.linalg.matrix_exp`` loses up to ~1e-10 in float64
for arguments of norm 0.01 to 0.5); a Cayley retraction would need its own ``dcay^{-1}``
correction to keep order 4, so it is not offered.

Events (step-and-bisect): after every step, discrete indicators of the new state are compared
with the old ones. If one changed, the step is bisected (re-stepping from the step's start)
until the change is bracketed in an interval of length ``event_tol`` (default ``1e-12`` in
``s``); the event is recorded at the bracket's right end, from where integration continues.
With ``locate_kinks=True`` every sector crossing is treated so, with the activation pattern
frozen within each step, which keeps order 4 across the kinks of the field (see :func:`integrate`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.data import ClassificationData
from ..core.errors import DivergenceError, ParameterError
from ..core.validation import Interval, OneOf, check_param
from ._expm import expm_antisymmetric
from ._field import EffectiveField, Flow
from ._forward import forward_pass
from ._state import EffectiveState

__all__ = ["EventKind", "Event", "Trajectory", "integrate", "lie_step", "event_indicators"]

METHODS = ("rkmk4", "lie-euler")
"""The integrators :func:`lie_step` offers (module docstring)."""


class EventKind(str, enum.Enum):
    """Discrete changes the integrator can locate."""

    SECTOR_CROSSING = "sector_crossing"
    """A point crosses a sector wall at some layer (a coordinate of ``z_l`` changes sign)."""
    STATE_CHANGE = "state_change"
    """A point changes its truncation state at some layer (Chen 2025 Def 2.1)."""
    FULL_TRUNCATION = "full_truncation"
    """A cluster becomes (or stops being) fully truncated at some layer (``s_1`` of Prop 4.2)."""


@dataclass(frozen=True)
class Event:
    """One located event: time ``s``, kind, zero-based ``layer`` and ``cluster``.

    ``gained``/``lost``: how many indicator entries switched towards / away from truncation
    (point-directions for sector crossings, points for state changes, 1 for the cluster itself).
    """

    s: float
    kind: EventKind
    layer: int
    cluster: int
    gained: int
    lost: int


@dataclass
class Trajectory:
    """Recorded states: ``s (T,)``, ``beta (T, L, Q)``, ``R (T, L, Q, Q)``, ``loss (T,)``, events, stats."""

    s: torch.Tensor
    beta: torch.Tensor
    R: torch.Tensor
    loss: torch.Tensor
    events: list[Event]
    template: EffectiveState
    stats: dict[str, int] = field(default_factory=dict)

    def state(self, index: int) -> EffectiveState:
        """The recorded state number ``index`` (negative indices count from the end)."""
        return self.template.replace(beta=self.beta[index], R=self.R[index])

    def state_at(self, s: float) -> EffectiveState:
        """The recorded state with the largest ``s_i <= s`` (records include every event time)."""
        i = int(torch.searchsorted(self.s, torch.tensor([s + 1e-15], dtype=self.s.dtype, device=self.s.device), right=True)[0]) - 1
        return self.state(max(i, 0))

    def events_of(self, kind: EventKind, *, layer: int | None = None, cluster: int | None = None) -> list[Event]:
        """Events of one kind, optionally of one layer and/or cluster, in time order."""
        return [e for e in self.events if e.kind == kind and (layer is None or e.layer == layer) and (cluster is None or e.cluster == cluster)]


def event_indicators(state: EffectiveState, data: ClassificationData, kinds: Sequence[EventKind]) -> dict[EventKind, torch.Tensor]:
    """The discrete quantities whose changes define each event kind.

    SECTOR_CROSSING: ``(L, N, Q)`` bool ``z_l > 0``; STATE_CHANGE: ``(L, N)`` int64 Def 2.1 state
    (0 untruncated, 1 partially, 2 fully); FULL_TRUNCATION: ``(L, Q_clusters)`` bool.
    """
    zs = forward_pass(state, data.X).zs
    out: dict[EventKind, torch.Tensor] = {}
    full = (zs <= 0).all(-1)
    if EventKind.SECTOR_CROSSING in kinds:
        out[EventKind.SECTOR_CROSSING] = zs > 0
    if EventKind.STATE_CHANGE in kinds:
        out[EventKind.STATE_CHANGE] = torch.where((zs >= 0).all(-1), 0, torch.where(full, 2, 1))
    if EventKind.FULL_TRUNCATION in kinds:
        n_full = torch.zeros(state.depth, data.num_classes, dtype=torch.int64, device=zs.device)
        n_full.index_add_(1, data.labels, full.to(torch.int64))
        out[EventKind.FULL_TRUNCATION] = n_full == data.class_counts
    return out


def _changes(kind: EventKind, old: torch.Tensor, new: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[tuple[int, int, int, int]]:
    """``[(layer, cluster, gained, lost)]`` for every layer/cluster pair whose indicator changed."""
    if kind == EventKind.FULL_TRUNCATION:
        gained, lost = (new & ~old).to(torch.int64), (old & ~new).to(torch.int64)
    else:
        if kind == EventKind.SECTOR_CROSSING:  # towards truncation: z > 0 becomes z <= 0
            g, l_ = (old & ~new).sum(-1), (new & ~old).sum(-1)
        else:
            g, l_ = (new > old).to(torch.int64), (new < old).to(torch.int64)
        L = old.shape[0]
        gained = torch.zeros(L, num_classes, dtype=torch.int64, device=old.device).index_add_(1, labels, g.to(torch.int64))
        lost = torch.zeros(L, num_classes, dtype=torch.int64, device=old.device).index_add_(1, labels, l_.to(torch.int64))
    idx = torch.nonzero((gained > 0) | (lost > 0))
    return [(int(a), int(b), int(gained[a, b]), int(lost[a, b])) for a, b in idx]


def _exp_act(state: EffectiveState, b: torch.Tensor, A: torch.Tensor) -> EffectiveState:
    # A = 0 exactly (frozen rotation, fully truncated clusters): e^0 R = R, no exponential needed
    return state.replace(beta=state.beta + b, R=expm_antisymmetric(A) @ state.R if bool(A.any()) else state.R)


def _xi(flow: Flow, state: EffectiveState, pattern: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    f: EffectiveField = flow.field(state, pattern)
    return f.dbeta, -f.omega


def _comm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    C = A @ B
    return C - C.transpose(-1, -2)  # [A, B] = AB - BA, and BA = (AB)^T for antisymmetric A, B


def lie_step(flow: Flow, state: EffectiveState, h: float, method: str = "rkmk4", pattern: torch.Tensor | None = None) -> EffectiveState:
    """One step of size ``h`` (``"rkmk4"``: 4 field evaluations; ``"lie-euler"``: 1).

    ``pattern``: an activation pattern held fixed in every stage (see :func:`integrate`). The
    result's ``R`` gets one Newton-Schulz correction ``R (3 - R^T R)/2`` so that rounding errors of
    the exponentials do not accumulate over many steps (it changes ``R`` by ``O(|R^T R - 1|)``).
    """
    check_param("method", method, OneOf(METHODS), "lie_step")
    b1, A1 = _xi(flow, state, pattern)
    if method == "lie-euler":
        new = _exp_act(state, h * b1, h * A1)
    else:
        b1, A1 = h * b1, h * A1
        b2, A2 = _xi(flow, _exp_act(state, b1 / 2, A1 / 2), pattern)
        b2, A2 = h * b2, h * A2
        b3, A3 = _xi(flow, _exp_act(state, b2 / 2, A2 / 2 - _comm(A1, A2) / 8), pattern)
        b3, A3 = h * b3, h * A3
        b4, A4 = _xi(flow, _exp_act(state, b3, A3), pattern)
        b4, A4 = h * b4, h * A4
        A = (A1 + 2 * A2 + 2 * A3 + A4) / 6 - _comm(A1, A4) / 12
        new = _exp_act(state, (b1 + 2 * b2 + 2 * b3 + b4) / 6, 0.5 * (A - A.transpose(-1, -2)))
    R = new.R
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    return new.replace(R=0.5 * R @ (3 * eye - R.transpose(-1, -2) @ R))


def integrate(
    flow: Flow,
    state: EffectiveState,
    s_end: float,
    *,
    step: float = 1e-2,
    method: str = "rkmk4",
    events: Sequence[EventKind | str] = (),
    event_tol: float = 1e-12,
    locate_kinks: bool = False,
    record_every: int = 1,
    validate_every: int = 1,
) -> Trajectory:
    """Integrate ``flow`` from ``state`` at ``s = 0`` to ``s_end`` with fixed steps ``step``.

    The field jumps where a point crosses a sector wall. ``locate_kinks=True`` holds the
    activation pattern of the step's start fixed in all stages (the smooth field of that
    activation region) and bisects any step across which ``flow.pattern`` changes to
    ``event_tol``, so the method keeps order 4 across kinks (cost: about
    ``log2(step/event_tol)`` extra steps per crossing; use it for small data). With
    ``locate_kinks=False`` every stage uses the true pattern and a step across a wall has a
    local error of order ``step`` times the jump of the field. Where a point slides along a
    wall (the field pushes it back from both sides, so the pattern would flip within
    ``event_tol`` of every step's start), such a step is taken with the true pattern and
    counted in ``stats["sliding_steps"]``; its event times are then located only to ``step``.

    Records the state and the loss at ``s = 0``, every ``record_every`` steps, at every event and
    at ``s_end``. ``flow.validate`` is called on the initial state, every ``validate_every``
    steps and on the final state (``validate_every=0``: never); the default checks every accepted
    step (not the Runge-Kutta stages nor the bisection trials). For :class:`SeparatedFlow` this
    re-checks cluster separation exactly and raises AssumptionError naming layer and cluster when
    it fails; pairs certified by :func:`separation_bounds` cost ``O(L Q^4)`` in all, only the
    others are swept point by point (at worst ``O(L N Q^2)``, a few field evaluations).
    Raises DivergenceError on a non-finite state.
    """
    where = "integrate"
    check_param("s_end", s_end, Interval(float, 0.0), where)
    check_param("step", step, Interval(float, 0.0, closed="right"), where)
    check_param("method", method, OneOf(METHODS), where)
    check_param("event_tol", event_tol, Interval(float, 0.0, closed="right"), where)
    check_param("record_every", record_every, Interval(int, 1), where)
    check_param("validate_every", validate_every, Interval(int, 0), where)
    kinds = [EventKind(check_param("events", k, OneOf([e.value for e in EventKind]), where)) for k in ([events] if isinstance(events, str) else events)]
    data: ClassificationData | None = getattr(flow, "data", None) if kinds else None
    if kinds and data is None:
        raise ParameterError(f"{where}: events need a flow with a .data attribute (the training points), got {type(flow).__name__}")
    if validate_every:
        flow.validate(state)
    rec_s, rec_b, rec_R, rec_L = [0.0], [state.beta], [state.R], [flow.loss(state)]
    found: list[Event] = []
    stats = {"steps": 0, "bisection_steps": 0, "sliding_steps": 0}
    ind = event_indicators(state, data, kinds) if kinds else {}

    def crossed(y: EffectiveState, p0: torch.Tensor | None) -> tuple[bool, dict[EventKind, torch.Tensor]]:
        new_ind = event_indicators(y, data, kinds) if kinds else {}
        hit = any(not torch.equal(ind[k], new_ind[k]) for k in kinds)
        return hit or (p0 is not None and not torch.equal(flow.pattern(y), p0)), new_ind

    s, n_steps = 0.0, 0
    while s_end - s > 1e-14 * max(1.0, s_end):
        h = min(step, s_end - s)
        p0 = flow.pattern(state) if locate_kinks else None
        new = lie_step(flow, state, h, method, p0)
        hit, new_ind = crossed(new, p0)
        if hit:
            lo, hi = 0.0, h
            while hi - lo > event_tol:
                mid = 0.5 * (lo + hi)
                stats["bisection_steps"] += 1
                if crossed(lie_step(flow, state, mid, method, p0), p0)[0]:
                    hi = mid
                else:
                    lo = mid
            if hi <= 2 * event_tol and p0 is not None:
                # the frozen field leaves its own region at once: a point slides along a wall
                # (chattering of the discontinuous field); take the step with the true pattern
                stats["sliding_steps"] += 1
                new = lie_step(flow, state, h, method)
            else:
                h = hi
                new = lie_step(flow, state, h, method, p0)
            new_ind = event_indicators(new, data, kinds) if kinds else {}
            for k in kinds:
                for layer, cluster, g, l_ in _changes(k, ind[k], new_ind[k], data.labels, data.num_classes):
                    found.append(Event(s + h, k, layer, cluster, g, l_))
        if not (bool(torch.isfinite(new.beta).all()) and bool(torch.isfinite(new.R).all())):
            raise DivergenceError(f"{where}: the state became non-finite at s = {s + h:.6g}; reduce step (now {step:g})")
        s, state, ind = s + h, new, new_ind
        n_steps += 1
        last = s_end - s <= 1e-14 * max(1.0, s_end)
        if validate_every and (n_steps % validate_every == 0 or last):
            flow.validate(state)
        if hit or n_steps % record_every == 0 or last:
            rec_s.append(s)
            rec_b.append(state.beta)
            rec_R.append(state.R)
            rec_L.append(flow.loss(state))
    stats["steps"] = n_steps
    st = state.beta
    return Trajectory(
        torch.tensor(rec_s, dtype=st.dtype, device=st.device), torch.stack(rec_b), torch.stack(rec_R), torch.stack(rec_L), found, state, stats
    )
