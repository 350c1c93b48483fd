"""Integrate a parameter-space field: explicit Euler, scipy's or torchdiffeq's adaptive Runge-Kutta solvers.

``integrate(field, omap, theta0, y, s_end, method=...)`` follows ``d theta/ds = V(s, theta)``
for a :class:`~collapselab.flows.fields.VectorField` and returns a
:class:`~collapselab.flows.trajectory.Trajectory` (cost, rank, epsilon, outputs, the
deviation from linear interpolation in ``t = 1 - e^{-s/N}``).

Methods (one registry, :data:`METHODS`; a field evaluation costs one Jacobian/Gram solve):

* ``"euler"``: ``theta_{k+1} = theta_k + ds V(theta_k)``, one evaluation per step, error
  ``O(ds)``. For the standard field this is gradient descent with learning rate ``ds``;
  for the adapted field it is a damped Gauss-Newton (minimum-norm) step
  ``theta -= (ds/N) D^+ (x - y)`` whose linearised residual contracts by ``1 - ds/N``
  (docs/theory/adapted-flow.md).
* ``"RK23"``, ``"RK45"``, ``"DOP853"``: scipy.integrate's adaptive explicit solvers
  (3, 6, 12 evaluations per step), stepped one accepted step at a time so every step is
  recorded and a failure keeps the trajectory so far. The state goes through numpy on
  the CPU at each evaluation: on CUDA every evaluation is a device-host round trip.
  These are the reference: the tests check the exponential law, the corrected Prop 2.5
  and the sliding-mode stall with ``"DOP853"``.
* ``"bosh3"``, ``"dopri5"``, ``"dopri8"``: torchdiffeq's adaptive solvers (the same
  Bogacki-Shampine / Dormand-Prince pairs as RK23 / RK45 / DOP853, the same rms error
  norm), on torch tensors on the model's device: no numpy, the same code on CPU and
  CUDA. The run is recorded at the output times ``t_eval`` (default 100 evenly spaced
  in ``(0, s_end]``; ``s_end`` is always one) instead of at every step: each interval
  is one ``torchdiffeq.odeint`` call that lands on its end time exactly, continuing with
  the last step size, and the stopping rules are checked there (one host sync per output
  time). ``steps`` and ``rejected`` count accepted and rejected Runge-Kutta steps. The
  tests check these against the closed form and against ``"DOP853"``.

With ``track_deviation`` (default: for the adapted field) the corrected Prop 2.5
``R``-equation ``dR/ds = (1/N) P^perp (R + x_0 - y)`` (erratum E8, docs/theory/errata.md) is integrated
alongside ``theta``, so ``deviation_error = |x - lin - (1 - t) R|`` checks the formula
along the actual flow (to the solver tolerance; to ``O(ds)`` for Euler).

**ReLU networks.** Chen & Munoz Ewald 2024 assumes ``D`` Lipschitz; for ReLU nets ``D`` jumps across
activation boundaries, and the adapted field often points into a boundary from both
sides (a Filippov sliding mode; on a ``[3, 16, 2]`` net with ``N = 6`` the first one
occurs at ``s ~ 0.16``). There the output velocity is no longer ``-grad_x C`` and the
exponential law breaks; the adaptive solvers' step size collapses and the run stops with
``STALLED`` (the law holds to solver tolerance up to that point). Explicit Euler steps
across (chattering), approximating the sliding solution to ``O(ds)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.integrate import DOP853, RK23, RK45
from torchdiffeq import odeint

from ..core.errors import NonFiniteError, ParameterError, ShapeError
from ..core.types import Theta, Vector
from ..core.validation import Interval, OneOf, check_finite, check_param
from .fields import AdaptedField, FieldEval, VectorField, evaluate_field
from .interpolation import deviation_rate, reparametrised_time
from .jacobian import OutputMap
from .trajectory import Status, Trajectory, TrajectoryRecorder

__all__ = ["integrate", "METHODS", "RANK_LOSS_POLICIES"]

_SCIPY = {"RK23": RK23, "RK45": RK45, "DOP853": DOP853}
_TORCHDIFFEQ = ("bosh3", "dopri5", "dopri8")
METHODS = ("euler", *_SCIPY, *_TORCHDIFFEQ)
"""Integration methods: explicit Euler, scipy's and torchdiffeq's adaptive Runge-Kutta solvers."""
RANK_LOSS_POLICIES = ("stop", "continue")
"""``on_rank_loss``: stop with ``Status.RANK_LOSS``, or continue with the minimum-norm flow."""
_COLLAPSE, _COLLAPSE_STEPS = 1e-6, 20  # adaptive step below 1e-6 s_end for 20 accepted steps: stalled
_NUM_OUTPUTS = 100  # default output times of the torchdiffeq methods
_STALL = "the field is discontinuous there (a ReLU activation boundary reached from both sides, a sliding mode; Chen & Munoz Ewald 2024 assumes a Lipschitz D)"


def integrate(
    field: VectorField,
    omap: OutputMap,
    theta0: Theta,
    y: Vector,
    s_end: float,
    *,
    method: str = "DOP853",
    ds: float | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    t_eval: Sequence[float] | torch.Tensor | None = None,
    target_cost: float = 0.0,
    on_rank_loss: str = "stop",
    track_deviation: bool | None = None,
    record_outputs: bool = True,
    gram: str = "auto",
    rank_rtol: float | None = None,
    divergence: float = 1e6,
) -> Trajectory:
    """Follow ``field`` from ``theta0`` for flow time ``s`` in ``[0, s_end]``.

    omap: the model's output map; theta0: ``(K,)``; y: stacked targets ``(QN,)``.
    ds: Euler step (required for ``method="euler"``); rtol/atol: adaptive solver
    tolerances; t_eval: increasing output times in ``(0, s_end]`` for the torchdiffeq
    methods (``s_end`` is appended if missing; the other methods record every step).
    Stops at ``s_end`` (END_TIME), when ``C <= target_cost`` (CONVERGED), on NaN/Inf
    (NON_FINITE), ``C > divergence * C(0)`` (DIVERGED), ``rank D < min(QN, K)`` with
    ``on_rank_loss="stop"`` (RANK_LOSS), a solver failure, a collapsed adaptive step
    (STALLED), or ``max_steps``. track_deviation: carry the corrected Prop 2.5 ``R``
    (default: for the adapted field). gram / rank_rtol: passed to
    :func:`~collapselab.flows.fields.evaluate_field`.
    """
    where = "integrate"
    check_param("method", method, OneOf(METHODS), where)
    check_param("on_rank_loss", on_rank_loss, OneOf(RANK_LOSS_POLICIES), where)
    check_param("s_end", s_end, Interval(float, 0.0), where)
    check_param("max_steps", max_steps, Interval(int, 1), where)
    if method == "euler":
        check_param("ds", ds, Interval(float, 0.0, closed="right"), where)
    times = _output_times(t_eval, s_end, method, where)
    check_finite(theta0, "theta0", where)
    check_finite(y, "y", where)
    if theta0.ndim != 1:
        raise ShapeError(f"{where}: theta0 must be a flat (K,) parameter vector, got shape {tuple(theta0.shape)}")
    track = isinstance(field, AdaptedField) if track_deviation is None else bool(track_deviation)
    run = _Run(field, omap, y, s_end, max_steps, target_cost, on_rank_loss, divergence, gram, rank_rtol, theta0.shape[0])
    theta0 = theta0.detach()
    try:
        first = run.evaluate(0.0, theta0)
    except NonFiniteError as exc:
        raise NonFiniteError(f"{where}: the initial state is not finite ({exc}); check theta0 and the model") from None
    run.start(first, track, record_outputs)
    stop = run.verdict(first)
    if stop is not None:
        return run.finish(theta0, *stop, steps=0)
    if method == "euler":
        return run.euler(first, theta0, float(ds))
    if method in _SCIPY:
        return run.adaptive(_SCIPY[method], first, theta0, rtol, atol)
    return run.torchdiffeq(method, first, theta0, times, rtol, atol)


def _output_times(t_eval, s_end: float, method: str, where: str) -> list[float]:
    """The torchdiffeq output times: ``t_eval`` (checked) with ``s_end`` appended if missing."""
    if method not in _TORCHDIFFEQ:
        if t_eval is not None:
            raise ParameterError(f"{where}: t_eval applies to the torchdiffeq methods {_TORCHDIFFEQ}, got method={method!r}; drop t_eval (this method records every step)")
        return []
    if t_eval is None:
        return [s_end * (i + 1) / _NUM_OUTPUTS for i in range(_NUM_OUTPUTS)]
    times = [float(t) for t in torch.as_tensor(t_eval, dtype=torch.float64).reshape(-1)]
    if not times or not all(a < b for a, b in zip([0.0, *times], times)) or times[-1] > s_end:
        raise ParameterError(f"{where}: t_eval must be strictly increasing in (0, s_end={s_end:g}], got {times}")
    return times if times[-1] == s_end else [*times, s_end]


class _Run:
    """State shared by the integrators: evaluation, recording, stopping rules."""

    def __init__(self, field, omap, y, s_end, max_steps, target_cost, on_rank_loss, divergence, gram, rank_rtol, num_params) -> None:
        self.field, self.omap, self.y, self.s_end, self.max_steps = field, omap, y, s_end, max_steps
        self.target_cost, self.on_rank_loss, self.divergence = target_cost, on_rank_loss, divergence
        self.gram, self.rank_rtol = gram, rank_rtol
        self.n = omap.num_samples
        self.full_rank = min(y.shape[0], num_params)
        self.evaluations = 0

    def evaluate(self, s: float, theta: Theta) -> FieldEval:
        self.evaluations += 1
        where = f"integrate at s={s:.6g}"
        check_finite(theta, "theta", where)
        ev = evaluate_field(self.field, self.omap, theta, self.y, s=s, gram=self.gram, rtol=self.rank_rtol)
        check_finite(ev.outputs, "outputs x[theta]", where)
        return ev

    def start(self, first: FieldEval, track: bool, record_outputs: bool) -> None:
        self.x0, self.c0 = first.outputs, first.cost
        self.R0 = torch.zeros_like(first.outputs) if track else None
        self.recorder = TrajectoryRecorder(self.x0, self.y, self.n, record_outputs)
        self.record(first, self.R0)

    def record(self, ev: FieldEval, R: Vector | None) -> None:
        pred = None if R is None else (1.0 - reparametrised_time(ev.s, self.n)) * R
        self.recorder.record(ev.s, ev.outputs, ev.cost, rank=ev.rank, epsilon=ev.epsilon, defect=ev.defect, predicted=pred)

    def verdict(self, ev: FieldEval) -> tuple[Status, str] | None:
        if not math.isfinite(ev.cost):
            return Status.NON_FINITE, f"cost {ev.cost} at s={ev.s:.6g}"
        if ev.cost <= self.target_cost:
            return Status.CONVERGED, f"C={ev.cost:.3e} <= {self.target_cost:.3e} at s={ev.s:.6g}"
        if ev.cost > self.divergence * max(self.c0, torch.finfo(torch.float64).tiny):
            return Status.DIVERGED, f"C={ev.cost:.3e} > {self.divergence:g} C(0) at s={ev.s:.6g}"
        if self.on_rank_loss == "stop" and ev.rank < self.full_rank:
            return Status.RANK_LOSS, f"rank D = {ev.rank} < min(QN, K) = {self.full_rank} at s={ev.s:.6g}"
        return None

    def finish(self, theta: Theta, status: Status, detail: str, *, steps: int, rejected: int = 0) -> Trajectory:
        return self.recorder.finish(theta, status, detail, steps=steps, evaluations=self.evaluations, rejected=rejected)

    def rate(self, R: Vector | None, ev: FieldEval) -> Vector | None:
        return None if R is None else deviation_rate(R, self.x0, self.y, ev.solve, self.n)

    def euler(self, ev: FieldEval, theta: Theta, ds: float) -> Trajectory:
        s, steps, R = 0.0, 0, self.R0
        while steps < self.max_steps:
            if s >= self.s_end * (1.0 - 1e-15):
                return self.finish(theta, Status.END_TIME, f"s={s:.6g}", steps=steps)
            h = min(ds, self.s_end - s)
            new_theta = theta + h * ev.velocity
            if R is not None:
                R = R + h * self.rate(R, ev)
            s += h
            steps += 1
            try:
                ev = self.evaluate(s, new_theta)
            except NonFiniteError as exc:
                return self.finish(theta, Status.NON_FINITE, str(exc), steps=steps)
            except torch.linalg.LinAlgError as exc:
                return self.finish(theta, Status.SOLVER_FAILED, f"Gram factorisation failed at s={s:.6g}: {exc}", steps=steps)
            theta = new_theta
            self.record(ev, R)
            stop = self.verdict(ev)
            if stop is not None:
                return self.finish(theta, *stop, steps=steps)
        return self.finish(theta, Status.MAX_STEPS, f"{self.max_steps} steps, s={s:.6g}, C={self.recorder.last_cost:.3e}", steps=steps)

    def adaptive(self, solver_cls, first: FieldEval, theta0: Theta, rtol: float, atol: float) -> Trajectory:
        k, like = theta0.shape[0], dict(dtype=theta0.dtype, device=theta0.device)
        track = self.R0 is not None
        cache: dict[str, object] = {"key": None, "ev": first}

        def split(z: np.ndarray) -> tuple[Theta, Vector | None]:
            zt = torch.as_tensor(z, **like)
            return zt[:k], (zt[k:] if track else None)

        def fun(s: float, z: np.ndarray) -> np.ndarray:
            theta, R = split(z)
            ev = self.evaluate(float(s), theta)
            cache["key"], cache["ev"] = (float(s), z.tobytes()), ev
            parts = [ev.velocity] + ([self.rate(R, ev)] if track else [])
            return torch.cat(parts).cpu().numpy()

        z0 = torch.cat([theta0, self.R0] if track else [theta0]).cpu().numpy()
        theta, steps, tiny = theta0, 0, 0
        try:
            solver = solver_cls(fun, 0.0, z0, self.s_end, rtol=rtol, atol=atol)
        except NonFiniteError as exc:
            return self.finish(theta, Status.NON_FINITE, str(exc), steps=0)
        while steps < self.max_steps:
            if solver.status == "finished":
                return self.finish(theta, Status.END_TIME, f"s={solver.t:.6g}", steps=steps)
            try:
                message = solver.step()
            except NonFiniteError as exc:
                return self.finish(theta, Status.NON_FINITE, str(exc), steps=steps)
            except torch.linalg.LinAlgError as exc:
                return self.finish(theta, Status.SOLVER_FAILED, f"Gram factorisation failed near s={solver.t:.6g}: {exc}", steps=steps)
            if solver.status == "failed":
                return self.finish(theta, Status.SOLVER_FAILED, f"{message} at s={solver.t:.6g}", steps=steps)
            steps += 1
            theta, R = split(solver.y)
            key = (float(solver.t), solver.y.tobytes())
            try:
                ev = cache["ev"] if cache["key"] == key else self.evaluate(float(solver.t), theta)
            except NonFiniteError as exc:
                return self.finish(theta, Status.NON_FINITE, str(exc), steps=steps)
            self.record(ev, R)
            stop = self.verdict(ev)
            if stop is not None:
                return self.finish(theta, *stop, steps=steps)
            tiny = tiny + 1 if solver.step_size < _COLLAPSE * self.s_end else 0
            if tiny >= _COLLAPSE_STEPS:
                return self.finish(theta, Status.STALLED, f"the step size collapsed to {solver.step_size:.1e} at s={solver.t:.6g}: {_STALL}", steps=steps)
        return self.finish(theta, Status.MAX_STEPS, f"{self.max_steps} steps, s={solver.t:.6g}, C={self.recorder.last_cost:.3e}", steps=steps)

    def torchdiffeq(self, method: str, first: FieldEval, theta0: Theta, times: list[float], rtol: float, atol: float) -> Trajectory:
        k, track = theta0.shape[0], self.R0 is not None
        z = torch.cat([theta0, self.R0] if track else [theta0])
        rhs = _TorchRHS(self, k, track, z, first)
        theta, s = theta0, 0.0
        for s_next in times:
            span = torch.tensor([s, s_next], dtype=z.dtype, device=z.device)
            options = {"step_t": span[1:]} | ({} if rhs.dt is None else {"first_step": rhs.dt})
            rhs.end = s_next
            try:
                z = odeint(rhs, z, span, rtol=rtol, atol=atol, method=method, options=options)[-1]
                theta = z[:k]
                ev = rhs.evaluate(s_next, z)
            except _Stop as stop:
                return self.finish(theta, stop.status, stop.detail, steps=rhs.steps, rejected=rhs.rejected)
            except NonFiniteError as exc:
                return self.finish(theta, Status.NON_FINITE, str(exc), steps=rhs.steps, rejected=rhs.rejected)
            except torch.linalg.LinAlgError as exc:
                return self.finish(theta, Status.SOLVER_FAILED, f"Gram factorisation failed in s in [{s:.6g}, {s_next:.6g}]: {exc}", steps=rhs.steps, rejected=rhs.rejected)
            except AssertionError as exc:  # torchdiffeq's failures: "underflow in dt", non-finite state
                status = Status.STALLED if "underflow in dt" in str(exc) else Status.SOLVER_FAILED
                return self.finish(theta, status, f"torchdiffeq {method} in s in [{s:.6g}, {s_next:.6g}]: {exc}", steps=rhs.steps, rejected=rhs.rejected)
            s = s_next
            rhs.remember(s, z, ev)
            self.record(ev, z[k:] if track else None)
            stop = self.verdict(ev)
            if stop is not None:
                return self.finish(theta, *stop, steps=rhs.steps, rejected=rhs.rejected)
        return self.finish(theta, Status.END_TIME, f"s={s:.6g}", steps=rhs.steps, rejected=rhs.rejected)


class _Stop(Exception):
    """Raised from a torchdiffeq step callback to end the run with ``status``."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _TorchRHS:
    """The right-hand side ``(theta, R) -> (V, dR/ds)`` for ``torchdiffeq.odeint``, with its step callbacks.

    Counts accepted/rejected steps, keeps the solver's last proposed step size to start the
    next interval with, and applies the step limit and the step-collapse rule of the scipy
    path (raising :class:`_Stop`). The evaluation at a recorded state is reused as the next
    interval's first stage.
    """

    def __init__(self, run: _Run, k: int, track: bool, z: Vector, ev: FieldEval) -> None:
        self.run, self.k, self.track = run, k, track
        self.steps = self.rejected = self.tiny = 0
        self.dt: torch.Tensor | None = None
        self.end = 0.0
        self.remember(0.0, z, ev)

    def remember(self, s: float, z: Vector, ev: FieldEval) -> None:
        self.key, self.ev = (s, z), ev

    def evaluate(self, s: float, z: Vector) -> FieldEval:
        """The field at ``(s, theta)``: the remembered evaluation if it is this state, else a new one."""
        same = self.key[0] == s and torch.equal(self.key[1], z)
        return self.ev if same else self.run.evaluate(s, z[: self.k])

    def __call__(self, s: torch.Tensor, z: Vector) -> Vector:
        ev = self.evaluate(float(s), z)
        return torch.cat([ev.velocity, self.run.rate(z[self.k :], ev)]) if self.track else ev.velocity

    def callback_step(self, s0: torch.Tensor, z0: Vector, dt: torch.Tensor) -> None:
        self.dt = dt  # the solver's proposal, before it is cut to land on the output time

    def callback_accept_step(self, s0: torch.Tensor, z0: Vector, dt: torch.Tensor) -> None:
        self.steps += 1
        if float(s0 + dt) < self.end - 1e-12 * self.run.s_end:  # a full step, not one cut to land on the output time
            self.tiny = self.tiny + 1 if float(dt) < _COLLAPSE * self.run.s_end else 0
        if self.tiny >= _COLLAPSE_STEPS:
            raise _Stop(Status.STALLED, f"the step size collapsed to {float(dt):.1e} at s={float(s0 + dt):.6g}: {_STALL}")
        if self.steps >= self.run.max_steps:
            raise _Stop(Status.MAX_STEPS, f"{self.run.max_steps} steps, s={float(s0 + dt):.6g}, C={self.run.recorder.last_cost:.3e}")

    def callback_reject_step(self, s0: torch.Tensor, z0: Vector, dt: torch.Tensor) -> None:
        self.rejected += 1
