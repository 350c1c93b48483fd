"""The adapted flow as an optimizer for any model: damped Gauss-Newton, ``C <= tol`` fast.

The explicit Euler step of the adapted flow ``d theta/ds = -D^T (D D^T)^+ grad_x C``
(seed 003 Lemma 2.2; spec/chen.md 5.1) with ``ds = h N`` is the minimum-norm Gauss-Newton
step

    theta <- theta - h D^T (D D^T)^+ (x[theta] - y),          0 < h <= 1,

which needs only the Gram ``D D^T`` (``QN x QN``) and one vector-Jacobian product, never
``D`` itself. To first order the residual contracts by ``1 - h`` per step
(``h = 1``: straight to the linearised minimiser).

**Stopping rule.** The adapted flow obeys ``C(s) = e^{-2s/N} C(0)``, so ``C <= tol`` is
reached at ``s_tol = (N/2) ln(C(0)/tol)``; Euler steps of size ``ds = hN`` contract the
linearised cost by ``(1 - h)^2`` and need ``n(h) = ceil(ln(C(0)/tol) / (-2 ln(1 - h)))``
steps (``n(1) = 1``). A run stops with ``CONVERGED`` when ``C <= tol``, with
``MAX_STEPS`` after ``max_steps`` (default ``3 n(h) + 50``: the nonlinear remainder
needs a few Gauss-Newton steps more than the linear count), with ``STALLED`` when
halving ``h`` (a rejected step: the cost did not decrease or was not finite) reaches
``min_step`` (the message gives the rank of ``D D^T``: a rank-deficient run that cannot
reach the target ends here), and with ``RANK_LOSS`` at the first singular ``D D^T`` when
``on_rank_loss="stop"``. The default ``"continue"`` takes the minimum-norm (DAE) step of
the generalised adapted flow: near a zero-cost solution the Gram of a ReLU net often
becomes numerically singular (on the benchmark problem its condition number passes
``1e18`` at ``C ~ 1e-8``) while the minimum-norm steps still converge quadratically. After an accepted step ``h`` doubles back towards ``step``.

**Linear algebra** (``linalg=``), chosen by size when ``"auto"``:

* ``"structured"``: ReLU MLPs only (:class:`~collapselab.core.network.ReLUNet` or a
  ``Sequential`` of Linear/ReLU). The Gram assembled layer by layer
  (:func:`~collapselab.flows.gram.relu_gram`), ``O((QN)^2 sum_l d_l)`` time, three
  ``(QN)^2`` buffers. Default for MLPs whose Gram fits ``memory_limit``.
* ``"dense"``: ``D`` by ``torch.func.jacrev``, ``D D^T`` by one product; ``QN K`` memory.
  Default for other modules when ``D`` fits.
* ``"matrix_free"``: conjugate gradients on ``D D^T psi = r`` with Jacobian-vector
  products only (``O(K + QN)`` memory, ``2 cg`` passes per step); the fallback.

The Gram is solved by :func:`~collapselab.flows.linalg.least_squares_solve` (pivoted
Cholesky on the CPU: one rank-revealing factorisation as cheap as Cholesky, giving the
minimum-norm (DAE) solution and the rank at every step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import LabelError, ParameterError, ShapeError
from ..core.network import hidden_layers, unflatten_params
from ..core.types import Inputs, Matrix, Theta, Vector
from ..core.validation import Interval, OneOf, check_finite, check_matrix, check_param
from .gram import relu_gram
from .integrate import RANK_LOSS_POLICIES
from .jacobian import OutputMap
from .linalg import cg_solve, least_squares_solve, symmetric_matvec
from .trajectory import Status, Trajectory, TrajectoryRecorder

__all__ = ["AdaptedFlow", "fit", "adapted_step", "choose_linalg", "LINALG", "stacked_targets"]

LINALG = ("auto", "structured", "dense", "matrix_free")
"""``linalg=`` options of :class:`AdaptedFlow` (see the module docstring)."""


def choose_linalg(omap: OutputMap, num_params: int, num_outputs: int, itemsize: int, memory_limit: float) -> str:
    """``"structured"`` if the model is a ReLU MLP and three ``QN x QN`` buffers fit
    ``memory_limit`` bytes; else ``"dense"`` if ``D`` and two Grams fit; else ``"matrix_free"``."""
    gram_bytes = num_outputs**2 * itemsize
    if omap.is_mlp and 3 * gram_bytes <= memory_limit:
        return "structured"
    if num_outputs * num_params * itemsize + 2 * gram_bytes <= memory_limit:
        return "dense"
    return "matrix_free"


def stacked_targets(targets: torch.Tensor, num_samples: int, Y: torch.Tensor | None, where: str, *, dtype: torch.dtype, device: torch.device) -> Vector:
    """Targets ``(N, Q)``, or labels ``(N,)`` with ``Y (Q, Q)`` (identity if None), as ``y`` in ``R^{QN}``."""
    if not targets.is_floating_point():
        labels = targets.to(device=device, dtype=torch.int64)
        if labels.ndim != 1 or labels.shape[0] != num_samples:
            raise ShapeError(f"{where}: labels must have shape ({num_samples},), got {tuple(labels.shape)}")
        q = int(labels.max()) + 1 if Y is None else Y.shape[0]
        if int(labels.min()) < 0 or int(labels.max()) >= q:
            raise LabelError(f"{where}: labels must lie in [0, {q}), got range [{int(labels.min())}, {int(labels.max())}]; pass Y with one row per class")
        Yt = torch.eye(q, dtype=dtype, device=device) if Y is None else check_matrix(Y, "Y", where, dtype=dtype, device=device)
        return Yt[labels].reshape(-1)
    t = check_matrix(targets, "targets", where, dtype=dtype, device=device)
    if t.shape[0] != num_samples:
        raise ShapeError(f"{where}: targets must have one row per sample ({num_samples}), got {tuple(t.shape)}")
    return t.reshape(-1)


@dataclass
class _Linearisation:
    outputs: Vector
    pullback: Callable[[Vector], Theta]
    gram: Matrix | None
    matvec: Callable[[Vector], Vector]


def _linearise(omap: OutputMap, theta: Theta, linalg: str) -> _Linearisation:
    if linalg == "structured":
        widths = omap.widths

        def fn(th: Theta) -> tuple[Vector, list[torch.Tensor]]:
            xs = hidden_layers(unflatten_params(th, widths), omap.X)
            return xs[-1].reshape(-1), [x.detach() for x in xs]

        out, pull, hidden = torch.func.vjp(fn, theta, has_aux=True)
        gram = relu_gram(unflatten_params(theta.detach(), widths), omap.X, hidden=hidden, upper_only=True)
        return _Linearisation(out.detach(), lambda u: pull(u)[0], gram, lambda u: symmetric_matvec(gram, u))
    if linalg == "dense":
        D = omap.jacobian(theta)
        gram = D @ D.T
        return _Linearisation(omap.outputs(theta).detach(), lambda u: D.T @ u, gram, lambda u: gram @ u)
    out, pull = torch.func.vjp(omap.outputs, theta)
    return _Linearisation(out.detach(), lambda u: pull(u)[0], None, lambda u: omap.jvp(theta, pull(u)[0])[1])


@dataclass(frozen=True)
class _Direction:
    direction: Theta  # D^+ r
    rank: int
    defect: float
    epsilon: float


def _gauss_newton(lin: _Linearisation, r: Vector, cg_max_iter: int, cg_rtol: float, try_cholesky: bool = True) -> _Direction:
    """``D^+ r = D^T G^+ r`` with rank, ``|P^perp r|`` and ``|D^T r| / |r|``."""
    rnorm = float(torch.linalg.vector_norm(r))
    if lin.gram is None:
        psi, _, rel = cg_solve(lin.matvec, r, rtol=cg_rtol, max_iter=cg_max_iter)
        direction = lin.pullback(psi)
        return _Direction(direction, -1, rel * rnorm, math.nan)
    # the Gram may hold only its upper triangle (relu_gram's upper_only): products through lin.matvec
    epsilon = math.sqrt(max(float(r @ lin.matvec(r)), 0.0)) / rnorm if rnorm > 0 else 0.0
    psi, rank = least_squares_solve(lin.gram, r, try_cholesky=try_cholesky)
    defect = float(torch.linalg.vector_norm(r - lin.matvec(psi))) if rank < r.shape[0] else 0.0  # |P^perp r|
    return _Direction(lin.pullback(psi), rank, defect, epsilon)


def adapted_step(omap: OutputMap, theta: Theta, y: Vector, h: float = 1.0, *, linalg: str = "auto") -> Theta:
    """One explicit Euler step of the adapted flow, ``ds = hN``: ``theta - h D^+ (x[theta] - y)``.

    theta: ``(K,)``; y: ``(QN,)``. Pure (no damping, no stopping rule). ``linalg``: as in
    :class:`AdaptedFlow`, except that ``"auto"`` means structured for ReLU MLPs, else dense.
    """
    check_param("linalg", linalg, OneOf(LINALG), "adapted_step")
    if linalg == "auto":
        linalg = "structured" if omap.is_mlp else "dense"
    lin = _linearise(omap, theta, linalg)
    d = _gauss_newton(lin, lin.outputs - y, 10 * y.shape[0], 1e-14)
    return theta.detach() - h * d.direction


class AdaptedFlow:
    """Train ``model`` on ``(X, targets)`` by the adapted flow (damped Gauss-Newton) to ``C <= tol``.

    ``C = (1/2N)|f(X) - Y|^2`` (``core.cost.mean_l2``). ``targets``: ``(N, Q)`` floats, or
    ``(N,)`` integer labels with ``Y`` ``(Q, Q)`` (identity if None). ``step``: ``h`` in
    ``(0, 1]`` (``ds = hN``); ``min_step``: damping floor; ``tol``, ``max_steps``: the
    stopping rule of the module docstring; ``linalg``, ``memory_limit`` (bytes): the
    linear algebra; ``cg_max_iter``, ``cg_rtol``: matrix-free solves; ``on_rank_loss``:
    ``"continue"`` (minimum-norm steps) or ``"stop"``; ``record_outputs``: keep ``x`` per step.
    The trajectory's ``rank`` is ``-1`` and its ``defect`` the CG residual with ``"matrix_free"``.

    :meth:`step` takes one accepted step, :meth:`run` iterates to the stopping rule and
    returns a :class:`~collapselab.flows.trajectory.Trajectory`; the model's parameters
    are updated in place. The parameters' dtype and device are used throughout.
    """

    def __init__(
        self,
        model: nn.Module,
        X: Inputs,
        targets: torch.Tensor,
        *,
        Y: torch.Tensor | None = None,
        step: float = 1.0,
        min_step: float = 1e-8,
        tol: float = 1e-10,
        max_steps: int | None = None,
        linalg: str = "auto",
        memory_limit: float = 8 * 2**30,
        cg_max_iter: int = 2000,
        cg_rtol: float = 1e-12,
        on_rank_loss: str = "continue",
        record_outputs: bool = False,
    ) -> None:
        where = "AdaptedFlow"
        check_param("step", step, Interval(float, 0.0, 1.0, closed="right"), where)
        check_param("min_step", min_step, Interval(float, 0.0, step, closed="right"), where)
        check_param("tol", tol, Interval(float, 0.0, closed="neither"), where)
        check_param("linalg", linalg, OneOf(LINALG), where)
        check_param("on_rank_loss", on_rank_loss, OneOf(RANK_LOSS_POLICIES), where)
        check_param("memory_limit", memory_limit, Interval(float, 0.0, closed="neither"), where)
        check_param("cg_max_iter", cg_max_iter, Interval(int, 1), where)
        check_param("cg_rtol", cg_rtol, Interval(float, 0.0, closed="neither"), where)
        if max_steps is not None:
            check_param("max_steps", max_steps, Interval(int, 1), where)
        params = list(model.parameters())
        if not params:
            raise ParameterError(f"{where}: the model has no parameters to train")
        dtype, device = params[0].dtype, params[0].device
        X = check_matrix(X, "X", where, dtype=dtype, device=device)
        self.model = model
        self.omap, theta = OutputMap.from_module(model, X)
        self.y = check_finite(stacked_targets(targets, X.shape[0], Y, where, dtype=dtype, device=device), "targets", where)
        self.theta = check_finite(theta, "model parameters", where)
        qn, k = self.y.shape[0], self.theta.shape[0]
        if linalg == "structured" and not self.omap.is_mlp:
            raise ParameterError(f"{where}: linalg='structured' needs a ReLU MLP (ReLUNet or Sequential of Linear/ReLU), got {type(model).__name__}; use 'auto'")
        self.linalg = choose_linalg(self.omap, k, qn, self.theta.element_size(), memory_limit) if linalg == "auto" else linalg
        self.full_rank = min(qn, k)
        self.h_max, self.h, self.min_step, self.tol = float(step), float(step), float(min_step), float(tol)
        self.cg_max_iter, self.cg_rtol, self.on_rank_loss = cg_max_iter, cg_rtol, on_rank_loss
        self.s, self.steps, self.rejected, self._last_rank = 0.0, 0, 0, self.full_rank
        # outputs at theta; the linearisation (Gram, pullback) is built when a step needs it,
        # so a run that stops (converged, max steps) never pays for one it does not use
        self._outputs, self._lin = self._outputs_at(self.theta), None
        n = self.omap.num_samples
        self.recorder = TrajectoryRecorder(self._outputs, self.y, n, record_outputs)
        self.max_steps = max_steps if max_steps is not None else self.predicted_steps(self.cost, tol, step) * 3 + 50
        self.recorder.record(0.0, self._outputs, self.cost)

    @staticmethod
    def predicted_steps(cost0: float, tol: float, h: float) -> int:
        """``n(h) = ceil(ln(C(0)/tol) / (-2 ln(1 - h)))`` Euler steps from ``C = e^{-2s/N} C(0)`` (1 for ``h = 1``)."""
        if cost0 <= tol:
            return 0
        if h >= 1.0:
            return 1
        return math.ceil(math.log(cost0 / tol) / (-2.0 * math.log1p(-h)))

    @property
    def cost(self) -> float:
        """``C`` at the current parameters."""
        return self._cost_of(self._outputs)

    def _outputs_at(self, theta: Theta) -> Vector:
        with torch.no_grad():
            return self.omap.outputs(theta).detach()

    def _cost_of(self, outputs: Vector) -> float:
        c = 0.5 * float((outputs - self.y).square().sum()) / self.omap.num_samples
        return c if math.isfinite(c) else math.inf

    def step(self) -> tuple[Status, str] | None:
        """One accepted damped step; returns ``(status, detail)`` if the run must stop, else ``None``."""
        if self._lin is None:
            self._lin = _linearise(self.omap, self.theta, self.linalg)
        r = self._lin.outputs - self.y
        # plain Cholesky succeeds only on a Gram of full size QN: never when K < QN, and once the Gram
        # turned singular it stays so near the solution, so skip the (failing) attempt then
        d = _gauss_newton(self._lin, r, self.cg_max_iter, self.cg_rtol, try_cholesky=self._last_rank >= r.shape[0])
        self._last_rank = d.rank
        if 0 <= d.rank < self.full_rank and self.on_rank_loss == "stop":
            return Status.RANK_LOSS, f"rank D D^T = {d.rank} < {self.full_rank} at step {self.steps}, C={self.cost:.3e}"
        if not bool(torch.isfinite(d.direction).all()):
            return Status.NON_FINITE, f"the Gauss-Newton direction is not finite at step {self.steps}"
        c = self.cost
        while True:
            trial = self.theta - self.h * d.direction
            out_new = self._outputs_at(trial)
            c_new = self._cost_of(out_new)
            if c_new < c:
                break
            self.h *= 0.5
            self.rejected += 1
            if self.h < self.min_step:
                return Status.STALLED, f"step {self.steps}: no h >= {self.min_step:g} decreased C={c:.3e} (rank {d.rank})"
        self.theta = trial
        self.s += self.h * self.omap.num_samples
        self.steps += 1
        self.h = min(self.h_max, 2.0 * self.h)
        self._outputs, self._lin = out_new, None
        self.recorder.record(self.s, self._outputs, self.cost, rank=d.rank, epsilon=d.epsilon, defect=d.defect)
        return None

    def run(self) -> Trajectory:
        """Step until the stopping rule fires; write the parameters back into the model."""
        stop: tuple[Status, str] | None = None
        while stop is None:
            if self.cost <= self.tol:
                stop = (Status.CONVERGED, f"C={self.cost:.3e} <= tol={self.tol:.1e} after {self.steps} steps")
            elif self.steps >= self.max_steps:
                stop = (Status.MAX_STEPS, f"{self.steps} steps, C={self.cost:.3e} > tol={self.tol:.1e}")
            else:
                stop = self.step()
        with torch.no_grad():
            nn.utils.vector_to_parameters(self.theta, self.model.parameters())
        return self.recorder.finish(self.theta, *stop, steps=self.steps, evaluations=self.steps + self.rejected + 1, rejected=self.rejected)


def fit(model: nn.Module, X: Inputs, targets: torch.Tensor, **options: object) -> Trajectory:
    """``AdaptedFlow(model, X, targets, **options).run()``: train ``model`` in place to ``C <= tol``."""
    return AdaptedFlow(model, X, targets, **options).run()
