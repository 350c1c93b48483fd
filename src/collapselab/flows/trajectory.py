"""The result of a flow or optimizer run: a :class:`Trajectory` with a :class:`Status`.

Every run returns what it computed up to where it stopped: a run that hits NaN, a
divergence, rank loss or a failing solver stops there and keeps its trajectory; the
``status`` says why (its value is the human-readable message) and
:meth:`Trajectory.raise_for_status` turns a failure into an exception for callers that
prefer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import torch

from ..core.errors import DivergenceError, SingularError
from ..core.types import Matrix, Theta, Vector
from .interpolation import linear_interpolation, reparametrised_time

__all__ = ["Status", "Trajectory", "TrajectoryRecorder"]


class Status(Enum):
    """Why a run stopped; the value is the message a report prints."""

    CONVERGED = "converged: the cost reached the target"
    END_TIME = "reached the end of the flow-time interval"
    MAX_STEPS = "stopped at the step limit before reaching the target cost"
    RANK_LOSS = "stopped: the Jacobian D lost rank; pass on_rank_loss='continue' to follow the minimum-norm (DAE) flow"
    NON_FINITE = "stopped: NaN or Inf in the parameters, outputs or cost; reduce the step size or check the model"
    DIVERGED = "stopped: the cost grew beyond the divergence bound; reduce the step size"
    STALLED = "stopped: no progress (the damping is exhausted or the solver's step size collapsed)"
    SOLVER_FAILED = "stopped: the ODE solver failed; loosen rtol/atol or use method='euler'"

    @property
    def ok(self) -> bool:
        """``True`` for ``CONVERGED`` and ``END_TIME``."""
        return self in (Status.CONVERGED, Status.END_TIME)


@dataclass
class Trajectory:
    """A recorded run. One entry per recorded step in every 1-D field (``n`` entries).

    s: flow time (for explicit Euler the sum of step sizes ``ds``); cost: ``(1/2N)|x - y|^2``;
    rank: numerical rank of ``D D^T`` (``-1`` where not computed); epsilon: the trapping
    quantity ``|grad_theta C| / |grad_x C|``; defect: ``|P^perp v|`` of the requested output
    velocity (0 at full rank); outputs: ``(n, QN)`` stacked outputs, or ``None`` if not
    recorded; deviation: ``|x(s) - ((1 - t) x_0 + t y)|``; deviation_predicted: the
    corrected Prop 2.5 value ``|(1 - t) R|`` (NaN if not tracked); deviation_error:
    ``|x - lin - (1 - t) R|``; theta: the last parameters ``(K,)``; x0, y: ``(QN,)``.
    The per-step series (``s`` ... ``deviation_error``) are float64 on the CPU; ``theta``,
    ``x0``, ``y`` and ``outputs`` stay on the model's device.
    """

    s: Vector
    cost: Vector
    rank: torch.Tensor
    epsilon: Vector
    defect: Vector
    deviation: Vector
    deviation_predicted: Vector
    deviation_error: Vector
    outputs: Matrix | None
    theta: Theta
    x0: Vector
    y: Vector
    num_samples: int
    status: Status
    detail: str = ""
    steps: int = 0
    evaluations: int = 0
    rejected: int = 0

    @property
    def t(self) -> Vector:
        """``t = 1 - e^{-s/N}`` (Chen & Munoz Ewald 2024 (2.54))."""
        return reparametrised_time(self.s, self.num_samples)

    @property
    def message(self) -> str:
        """``status.value`` plus the details of where and why."""
        return f"{self.status.value} ({self.detail})" if self.detail else self.status.value

    @property
    def ok(self) -> bool:
        """Whether the run ended well (:attr:`Status.ok`)."""
        return self.status.ok

    def predicted_cost(self) -> Vector:
        """``C(0) e^{-2s/N}``: the full-rank adapted-flow law (Thm C'24)."""
        return self.cost[0] * torch.exp(-2.0 * self.s / self.num_samples)

    def interpolation(self) -> Matrix:
        """``(1 - t) x_0 + t y`` at the recorded times: ``(n, QN)``."""
        return linear_interpolation(self.t.to(self.x0.device), self.x0, self.y)

    def raise_for_status(self) -> "Trajectory":
        """Return ``self`` if the run ended well, else raise with :attr:`message`."""
        if self.status is Status.RANK_LOSS:
            raise SingularError(self.message)
        if not self.ok:
            raise DivergenceError(self.message)
        return self


@dataclass
class TrajectoryRecorder:
    """Accumulates the per-step records of a run (used by the integrators and the optimizer)."""

    x0: Vector
    y: Vector
    num_samples: int
    record_outputs: bool = True
    rows: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("s", "cost", "rank", "epsilon", "defect", "deviation", "deviation_predicted", "deviation_error")})
    outputs: list[Vector] = field(default_factory=list)

    def record(self, s: float, outputs: Vector, cost: float, *, rank: int = -1, epsilon: float = math.nan, defect: float = math.nan, predicted: Vector | None = None) -> None:
        """Record one state; ``predicted`` is the tracked ``(1 - t) R`` deviation vector if any."""
        t = reparametrised_time(s, self.num_samples)
        dev = outputs - ((1.0 - t) * self.x0 + t * self.y)
        row = self.rows
        row["s"].append(float(s))
        row["cost"].append(float(cost))
        row["rank"].append(int(rank))
        row["epsilon"].append(float(epsilon))
        row["defect"].append(float(defect))
        row["deviation"].append(float(torch.linalg.vector_norm(dev)))
        row["deviation_predicted"].append(math.nan if predicted is None else float(torch.linalg.vector_norm(predicted)))
        row["deviation_error"].append(math.nan if predicted is None else float(torch.linalg.vector_norm(dev - predicted)))
        if self.record_outputs:
            self.outputs.append(outputs.detach().clone())

    @property
    def last_cost(self) -> float:
        return self.rows["cost"][-1] if self.rows["cost"] else math.nan

    def finish(self, theta: Theta, status: Status, detail: str = "", *, steps: int = 0, evaluations: int = 0, rejected: int = 0) -> Trajectory:
        """The :class:`Trajectory` of everything recorded so far."""
        f64 = {k: torch.tensor(v, dtype=torch.float64) for k, v in self.rows.items() if k != "rank"}
        return Trajectory(
            rank=torch.tensor(self.rows["rank"], dtype=torch.int64),
            outputs=torch.stack(self.outputs) if self.record_outputs and self.outputs else None,
            theta=theta.detach(),
            x0=self.x0,
            y=self.y,
            num_samples=self.num_samples,
            status=status,
            detail=detail,
            steps=steps,
            evaluations=evaluations,
            rejected=rejected,
            **f64,
        )
