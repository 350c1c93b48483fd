"""The adapted flow as an optimizer for any model: damped Gauss-Newton, ``C <= tol`` fast.

The explicit Euler step of the adapted flow ``d theta/ds = -D^T (D D^T)^+ grad_x C``
(Chen & Munoz Ewald 2024 Lemma 2.2; docs/theory/adapted-flow.md) with ``ds = h N`` is the minimum-norm Gauss-Newton
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
``1e18`` at ``C ~ 1e-8``) while the minimum-norm steps still converge (there, the cost falls
3-700x per step; the ReLU kinks crossed by each step keep the convergence from being
quadratic). After an accepted step ``h`` doubles back towards ``step``.

**Linear algebra** (``linalg=``), chosen by size when ``"auto"``:

* ``"structured"``: ReLU MLPs only (:class:`~collapselab.core.network.ReLUNet` or a
  ``Sequential`` of Linear/ReLU). The Gram assembled layer by layer
  (:func:`~collapselab.flows.gram.relu_gram`), ``O((QN)^2 sum_l d_l)`` time, two
  ``(QN)^2`` buffers reused from step to step; ``D v`` and ``D^T u`` from the stored layer
  outputs (:mod:`~collapselab.flows.relu_products`, no autograd). Default for MLPs whose
  Gram fits ``memory_limit``.
* ``"dense"``: ``D`` by ``torch.func.jacrev``, ``D D^T`` by one product; ``QN K`` memory.
  Default for other modules when ``D`` fits.
* ``"matrix_free"``: conjugate gradients on ``D D^T psi = r`` with Jacobian-vector
  products only (``O(K + QN)`` memory, ``2 cg`` passes per step); the fallback.

**Precision** (``precision=``). ``"full"``: the Gram is factorised in the parameters'
dtype by :func:`~collapselab.flows.linalg.least_squares_solve` (Cholesky, or pivoted
Cholesky once ``D D^T`` is singular: the minimum-norm (DAE) step and the numerical rank at
every step). ``"mixed"`` (float64 models with a Gram): the Gram is assembled and factorised
in float32 and the step refined in float64 (:func:`~collapselab.flows.linalg.refined_pullback`,
one ``D v`` and one ``D^T u`` per sweep) until the linearised residual ``|r - D d|`` is at
most ``refine_rtol |r|``: ``d`` is then the exact minimum-norm step to a target moved by
that residual, and the cost is still evaluated in float64, so the run reaches the same
``tol``. The float32 factor is of ``G + sigma I``, ``sigma = 1e-6 max diag G``
(:data:`~collapselab.flows.linalg.DEFAULT_SHIFT`; raised tenfold while the factorisation
fails, and the shift that worked is kept for later steps), since the Gram of a ReLU net
turns singular near a solution; the refinement removes the shift's effect on the
eigendirections above ``sigma``, and below it the step is damped as in Levenberg-Marquardt.
If more than ``0.1 |r|`` is left (``r`` far from ``ran D D^T``: an unreachable target, where
the float32 solve is swamped by the components outside the range), or if no shift up to
``1e-2 max diag G`` can be factorised (``G = 0``), the run continues in ``"full"`` precision. Measured on the adapted-flow benchmark (``benchmarks/adapted_flow.py``, docs/benchmarks/performance.md):
1.8x faster than ``"full"`` per run, 2.1x per step at ``QN = 16384``, in half the memory.
The trajectory's rank is then ``-1`` (not computed; a ``STALLED`` message computes it once
in float64) and its defect is ``|r - D d|``. ``"auto"``: ``"mixed"`` for float64 parameters
with a Gram (structured or dense) and ``on_rank_loss="continue"``, else ``"full"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import LabelError, NonFiniteError, ParameterError, ShapeError
from ..core.network import hidden_layers, unflatten_params
from ..core.types import Inputs, Matrix, Theta, Vector
from ..core.data import as_label_tensor
from ..core.validation import Interval, OneOf, as_tensor, check_finite, check_matrix, check_param
from .gram import relu_gram, row_gram
from .integrate import RANK_LOSS_POLICIES
from .jacobian import OutputMap
from .relu_products import relu_jvp, relu_vjp
from .linalg import DEFAULT_SHIFT, LowPrecisionCholesky, cg_solve, least_squares_solve, refined_pullback, square_buffer, symmetric_matvec
from .trajectory import Status, Trajectory, TrajectoryRecorder

__all__ = ["AdaptedFlow", "fit", "adapted_step", "choose_linalg", "LINALG", "PRECISIONS", "stacked_targets"]

LINALG = ("auto", "structured", "dense", "matrix_free")
"""``linalg=`` options of :class:`AdaptedFlow` (see the module docstring)."""

PRECISIONS = ("auto", "full", "mixed")
"""``precision=`` options of :class:`AdaptedFlow` (see the module docstring)."""


def choose_linalg(omap: OutputMap, num_params: int, num_outputs: int, itemsize: int, memory_limit: float) -> str:
    """``"structured"`` if the model is a ReLU MLP and three ``QN x QN`` buffers fit
    ``memory_limit`` bytes; else ``"dense"`` if ``D`` and two Grams fit; else ``"matrix_free"``."""
    gram_bytes = num_outputs**2 * itemsize
    if omap.is_mlp and 3 * gram_bytes <= memory_limit:
        return "structured"
    if num_outputs * num_params * itemsize + 2 * gram_bytes <= memory_limit:
        return "dense"
    return "matrix_free"


def stacked_targets(
    targets: torch.Tensor, num_samples: int, Y: torch.Tensor | None, where: str, *, dtype: torch.dtype, device: torch.device, num_outputs: int | None = None
) -> Vector:
    """Targets ``(N, Q)`` (floats), or labels ``(N,)`` (integers) with ``Y (Q, Q)`` (identity of
    size ``num_outputs`` if None, default the largest label + 1), as ``y`` in ``R^{QN}``;
    tensors or arrays."""
    targets = as_tensor(targets, "targets", where, dtype=None)
    if not targets.is_floating_point():
        labels = as_label_tensor(targets, where).to(device)
        if labels.shape[0] != num_samples:
            raise ShapeError(f"{where}: labels must have shape ({num_samples},), got {tuple(labels.shape)}")
        Y = None if Y is None else check_matrix(Y, "Y", where, dtype=dtype, device=device)
        q = Y.shape[0] if Y is not None else num_outputs if num_outputs is not None else int(labels.max()) + 1
        if int(labels.min()) < 0 or int(labels.max()) >= q:
            raise LabelError(f"{where}: labels must lie in [0, {q}), got range [{int(labels.min())}, {int(labels.max())}]; pass Y with one row per class")
        Yt = torch.eye(q, dtype=dtype, device=device) if Y is None else Y
        return Yt[labels].reshape(-1)
    t = check_matrix(targets, "targets", where, dtype=dtype, device=device)
    if t.shape[0] != num_samples:
        raise ShapeError(f"{where}: targets must have one row per sample ({num_samples}), got {tuple(t.shape)}")
    return t.reshape(-1)


@dataclass
class _Linearisation:
    outputs: Vector
    pullback: Callable[[Vector], Theta]  # u -> D^T u
    push: Callable[[Theta], Vector]  # v -> D v
    gram: Matrix | None  # D D^T in the solve dtype (maybe only its upper triangle), or None (matrix-free)


def _linearise(omap: OutputMap, theta: Theta, linalg: str, gram_dtype: torch.dtype | None = None, buffers: tuple[Matrix, Matrix] | None = None) -> _Linearisation:
    """Outputs, ``D^T``, ``D`` and the Gram (in ``gram_dtype``, default ``theta``'s) at ``theta``;
    ``buffers``: two ``(QN, QN)`` tensors of that dtype, the first to hold the Gram, the second to work in."""
    theta = theta.detach()
    gram_dtype = theta.dtype if gram_dtype is None else gram_dtype
    out, work = (None, None) if buffers is None else buffers
    if linalg == "structured":  # products and Gram from the stored layer outputs (relu_products, gram)
        params = unflatten_params(theta, omap.widths)
        hidden = hidden_layers(params, omap.X)
        low = [(w.to(gram_dtype), b.to(gram_dtype)) for w, b in params]
        gram = relu_gram(low, omap.X.to(gram_dtype), hidden=[x.to(gram_dtype) for x in hidden], upper_only=True, out=out, work=work)
        return _Linearisation(hidden[-1].reshape(-1), lambda u: relu_vjp(params, hidden, u), lambda v: relu_jvp(params, hidden, v), gram)
    if linalg == "dense":
        D = omap.jacobian(theta)
        low = D.to(gram_dtype)
        gram = row_gram(low, square_buffer(out, low.shape[0], low, "out", "AdaptedFlow"), upper_only=True)  # solvers read the upper triangle
        return _Linearisation(omap.outputs(theta).detach(), lambda u: D.T @ u, lambda v: D @ v, gram)
    outputs, pull = torch.func.vjp(omap.outputs, theta)
    return _Linearisation(outputs.detach(), lambda u: pull(u)[0], lambda v: omap.jvp(theta, v)[1], None)


@dataclass(frozen=True)
class _Direction:
    direction: Theta  # D^+ r, or D^T psi with |r - D D^T psi| = defect
    rank: int  # -1: not computed
    defect: float
    epsilon: float


def _epsilon(lin: _Linearisation, r: Vector) -> float:
    """The trapping quantity ``|D^T r| / |r|`` (``|grad_theta C| / |grad_x C|``)."""
    rnorm = float(torch.linalg.vector_norm(r))
    return float(torch.linalg.vector_norm(lin.pullback(r))) / rnorm if rnorm > 0 else 0.0


def _gauss_newton(lin: _Linearisation, r: Vector, cg_max_iter: int, cg_rtol: float, try_cholesky: bool = True) -> _Direction:
    """``D^+ r = D^T G^+ r`` in the Gram's dtype, with rank and ``|P^perp r|``."""
    if lin.gram is None:
        psi, _, rel = cg_solve(lambda u: lin.push(lin.pullback(u)), r, rtol=cg_rtol, max_iter=cg_max_iter)
        return _Direction(lin.pullback(psi), -1, rel * float(torch.linalg.vector_norm(r)), _epsilon(lin, r))
    psi, rank = least_squares_solve(lin.gram, r, try_cholesky=try_cholesky)
    # the Gram may hold only its upper triangle (relu_gram's upper_only): products by symmetric_matvec
    defect = float(torch.linalg.vector_norm(r - symmetric_matvec(lin.gram, psi))) if rank < r.shape[0] else 0.0  # |P^perp r|
    return _Direction(lin.pullback(psi), rank, defect, _epsilon(lin, r))


def _refined_gauss_newton(lin: _Linearisation, r: Vector, shift: float, rtol: float, max_refinements: int, work: Matrix | None = None) -> tuple[_Direction | None, float]:
    """``D^T psi`` with ``|r - D D^T psi| <= rtol |r|`` from a float32 factor of ``G + sigma I``
    (relative ``shift``, raised while needed) refined in ``r``'s dtype; returns the direction and
    the shift that worked. The direction is ``None``, and the caller solves in full precision, if
    more than ``0.1 |r|`` is left (``r`` is then far from ``ran G``, an unreachable target, where
    the float32 solve is swamped by the components outside the range) or if no shift up to
    ``1e-2 max diag G`` makes the float32 factorisation succeed (``G = 0``, or not finite).
    ``work``: a float32 ``(QN, QN)`` buffer to factorise in."""
    try:
        chol = LowPrecisionCholesky.of(lin.gram, shift, work=work)
    except ParameterError:  # G + sigma I not positive definite in float32 (G = 0, not finite, ...)
        return None, shift
    d, rel, _ = refined_pullback(chol.solve, lin.pullback, lin.push, r, rtol=rtol, max_refinements=max_refinements)
    if rel > 0.1:
        return None, chol.shift
    return _Direction(d, -1, rel * float(torch.linalg.vector_norm(r)), _epsilon(lin, r)), chol.shift


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
    ``"continue"`` (minimum-norm steps) or ``"stop"``; ``precision``, ``refine_rtol``,
    ``max_refinements``: ``"full"`` or ``"mixed"`` factorisation and the latter's refinement
    (module docstring); ``record_outputs``: keep ``x`` per step.
    The trajectory's ``rank`` is ``-1`` and its ``defect`` the CG residual with
    ``"matrix_free"``; with ``"mixed"`` they are ``-1`` and ``|r - D d|``.

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
        precision: str = "auto",
        refine_rtol: float = 1e-3,
        max_refinements: int = 10,
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
        check_param("precision", precision, OneOf(PRECISIONS), where)
        check_param("refine_rtol", refine_rtol, Interval(float, 0.0, 1.0, closed="neither"), where)
        check_param("max_refinements", max_refinements, Interval(int, 0), where)
        if max_steps is not None:
            check_param("max_steps", max_steps, Interval(int, 1), where)
        params = list(model.parameters())
        if not params:
            raise ParameterError(f"{where}: the model has no parameters to train")
        dtype, device = params[0].dtype, params[0].device
        X = check_matrix(X, "X", where, dtype=dtype, device=device)
        if X.shape[0] == 0:
            raise ShapeError(f"{where}: X has no samples (shape {tuple(X.shape)}); pass at least one row")
        self.model = model
        self.omap, theta = OutputMap.from_module(model, X)
        self.theta = check_finite(theta, "model parameters", where)
        # outputs at theta; the linearisation (Gram, pullback) is built when a step needs it,
        # so a run that stops (converged, max steps) never pays for one it does not use
        try:
            self._outputs, self._lin = self._outputs_at(self.theta), None
        except RuntimeError as exc:  # the one place a model meets X: a shape it cannot take
            raise ShapeError(f"{where}: {type(model).__name__} cannot run on X of shape {tuple(X.shape)} ({str(exc).splitlines()[0]}); pass inputs of the model's input size") from None
        q_out = self._outputs.numel() // X.shape[0]
        self.y = check_finite(stacked_targets(targets, X.shape[0], Y, where, dtype=dtype, device=device, num_outputs=q_out), "targets", where)
        if self.y.shape != self._outputs.shape:
            raise ShapeError(f"{where}: the targets give {self.y.numel() // X.shape[0]} values per sample but the model has {q_out} outputs; pass targets (N, {q_out}) or Y with {q_out} columns")
        if not math.isfinite(self._cost_of(self._outputs)):
            raise NonFiniteError(
                f"{where}: the initial cost (1/2N)|f(X) - Y|^2 is not finite in {dtype} (largest |output| {float(self._outputs.abs().max()):.3g}, "
                f"largest |target| {float(self.y.abs().max()):.3g}); rescale the inputs or targets"
            )
        qn, k = self.y.shape[0], self.theta.shape[0]
        if linalg == "structured" and not self.omap.is_mlp:
            raise ParameterError(f"{where}: linalg='structured' needs a ReLU MLP (ReLUNet or Sequential of Linear/ReLU), got {type(model).__name__}; use 'auto'")
        self.linalg = choose_linalg(self.omap, k, qn, self.theta.element_size(), memory_limit) if linalg == "auto" else linalg
        self.precision = self._choose_precision(precision, dtype, on_rank_loss, where)
        self.refine_rtol, self.max_refinements, self._shift = float(refine_rtol), max_refinements, DEFAULT_SHIFT
        self._buffers: tuple[Matrix, Matrix] | None = None  # the mixed path's float32 Gram and work space, reused
        self.full_rank = min(qn, k)
        self.h_max, self.h, self.min_step, self.tol = float(step), float(step), float(min_step), float(tol)
        self.cg_max_iter, self.cg_rtol, self.on_rank_loss = cg_max_iter, cg_rtol, on_rank_loss
        self.s, self.steps, self.rejected, self._last_rank = 0.0, 0, 0, self.full_rank
        n = self.omap.num_samples
        self.recorder = TrajectoryRecorder(self._outputs, self.y, n, record_outputs)
        self.max_steps = max_steps if max_steps is not None else self.predicted_steps(self.cost, tol, step) * 3 + 50
        self.recorder.record(0.0, self._outputs, self.cost)

    def _choose_precision(self, precision: str, dtype: torch.dtype, on_rank_loss: str, where: str) -> str:
        mixed_ok = dtype == torch.float64 and self.linalg != "matrix_free" and on_rank_loss == "continue"
        if precision == "auto":
            return "mixed" if mixed_ok else "full"
        if precision == "mixed" and not mixed_ok:
            raise ParameterError(
                f"{where}: precision='mixed' needs float64 parameters (got {dtype}), a Gram (linalg 'structured' or 'dense', "
                f"got {self.linalg!r}) and on_rank_loss='continue' (the rank is not computed; got {on_rank_loss!r})"
            )
        return precision

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
        mixed = self.precision == "mixed"
        if mixed and self._buffers is None:
            qn = self.y.shape[0]
            self._buffers = tuple(torch.empty(qn, qn, dtype=torch.float32, device=self.y.device) for _ in range(2))
        if self._lin is None:
            self._lin = _linearise(self.omap, self.theta, self.linalg, torch.float32, self._buffers) if mixed else _linearise(self.omap, self.theta, self.linalg)
        r = self._lin.outputs - self.y
        d = None
        if mixed:
            # the Gram's work buffer is free once it is assembled: the factorisation runs in it
            d, self._shift = _refined_gauss_newton(self._lin, r, self._shift, self.refine_rtol, self.max_refinements, self._buffers[1])
            if d is None:  # beyond the float32 path (module docstring): full precision from here on
                self.precision, self._lin, self._buffers = "full", _linearise(self.omap, self.theta, self.linalg), None
        if d is None:
            if self._lin.gram is not None and not bool(torch.isfinite(torch.diagonal(self._lin.gram)).all()):
                # |G_ij| <= sqrt(G_ii G_jj): a finite diagonal bounds the whole Gram
                return Status.NON_FINITE, f"the Gram D D^T overflows {self._lin.gram.dtype} at step {self.steps}; rescale the inputs"
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
                return Status.STALLED, f"step {self.steps}: no h >= {self.min_step:g} decreased C={c:.3e} ({self._rank_note(d)})"
        self.theta = trial
        self.s += self.h * self.omap.num_samples
        self.steps += 1
        self.h = min(self.h_max, 2.0 * self.h)
        self._outputs, self._lin = out_new, None
        self.recorder.record(self.s, self._outputs, self.cost, rank=d.rank, epsilon=d.epsilon, defect=d.defect)
        return None

    def _rank_note(self, d: _Direction) -> str:
        """``"rank r"`` of ``D D^T`` at the current point, computed in full precision if the step did not."""
        rank = d.rank
        if rank < 0 and self.linalg != "matrix_free":
            lin = _linearise(self.omap, self.theta, self.linalg)
            rank = least_squares_solve(lin.gram, lin.outputs - self.y)[1]
        return f"rank {rank}" if rank >= 0 else "rank not computed with linalg='matrix_free'"

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
