"""Gradient flows of the square-loss toy model of Rangamani et al. 2021 on a bias-free ReLU network.

The binary classifier ``f_W(x) = W_L relu(W_{L-1} ... relu(W_1 x))`` (``W_L`` is ``(1, d)``),
labels ``y_n = +-1``, margins ``f_n = y_n f_V(x_n)`` of the normalised network.

- :func:`toy_flow`: the normalised dynamics with Lagrange-multiplier normalisation
  (Rangamani et al. 2021 eqs. 3-7): state ``(rho, V_1..V_L)`` with ``|V_k|_F = 1``;
  ``rho_dot = 2 s sum_n (1 - rho f_n) f_n - 2 lam rho``,
  ``V_k_dot = 2 s rho (g_k - V_k <V_k, g_k>)``, ``g_k = sum_n (1 - rho f_n) df_n/dV_k``.
  The multiplier is the one that keeps ``V_k^T V_k_dot = 0`` (eq. 5); by the structural
  lemma ``<V_k, g_k> = sum_n (1 - rho f_n) f_n`` as in eq. 7.
- :func:`unnormalised_flow`: plain gradient flow on ``W_k`` of
  ``s sum_n (1 - y_n f_W(x_n))^2 + (lam/2) sum_k |W_k|^2`` (appendix G, eqs. 46-53, with the
  weight-decay convention of docs/theory/square-loss.md).

``s = 1/N`` for ``reduction="mean"`` (paper eq. 1) and ``1`` for ``"sum"``.

Integration: classical fixed-step RK4 in float64 on the inputs' device, with gradients by
explicit back-propagation (two small GEMMs a layer). The ReLU makes the vector field of both
flows discontinuous where a pre-activation crosses zero (``df_n/dW_k`` jumps); an adaptive
solver (torchdiffeq's ``dopri5``) then crawled with steps of 1e-5 while a unit chattered at its
kink (for the normalised flow, scipy's RK45 at rtol 1e-3 took 12 times the evaluations of RK4 at
step 0.05 over t = 3, and at rtol 1e-6 did not finish in minutes), so a fixed step is used and its
error there is O(step) (step-doubling error control crawled the same way, at steps of 1e-6). An
embedded pair at the same fixed step (Dormand-Prince 5(4), Bogacki-Shampine 3(2)) would not
help: its two solutions weight the stages on either side of a kink almost equally, so it misses
the O(step) error there. Both flows therefore also run a companion at twice the step (half the
cost) and report the discrepancy as ``error_estimate``, raising :class:`DivergenceError` when it
exceeds ``rtol`` (``_rk4_estimated``). The normalised flow uses the standard projection
method (each step ends with ``V_k <- V_k / |V_k|_F``), because on chattering stretches RK4 alone
let ``|V_k|`` drift by 17% at step 0.05.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.errors import AssumptionError, DivergenceError, ShapeError
from ..core.validation import as_tensor, check_finite, check_matrix
from ._common import check_reduction, check_scalar, check_times, loss_scale, single_thread

__all__ = ["ToyTrajectory", "bias_free_forward", "output_gradients", "toy_flow", "unnormalised_flow"]

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class ToyTrajectory:
    """Samples of a toy-model flow at the requested times (all float64).

    t: ``(T,)``; rho: ``(T,)``; rho_k: ``(T, L)`` layer norms (``|V_k|_F`` for the normalised
    flow, ``|W_k|_F`` for the unnormalised one); mu, second_moment: ``(T,)`` margin moments;
    loss: ``(T,)`` the loss the flow descends (same reduction); weights: the final matrices
    (``V_k`` or ``W_k``); error_estimate: the relative step-doubling error estimate of the run
    (``_rk4_estimated``; ``None`` only for a trajectory assembled by hand).
    """

    t: torch.Tensor
    rho: torch.Tensor
    rho_k: torch.Tensor
    mu: torch.Tensor
    second_moment: torch.Tensor
    loss: torch.Tensor
    weights: tuple[torch.Tensor, ...]
    error_estimate: float | None = None


def _activations(weights: Sequence[torch.Tensor], X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``([h_0 = X, h_1, ..., h_{L-1}], f (N,))``: the layer inputs kept for back-propagation, and the output."""
    hs = [X]
    for W in weights[:-1]:
        hs.append(torch.relu(hs[-1] @ W.T))
    return hs, (hs[-1] @ weights[-1].T).squeeze(-1)


def _backprop(weights: Sequence[torch.Tensor], hs: list[torch.Tensor], coeff: torch.Tensor) -> list[torch.Tensor]:
    """``[d (sum_n coeff_n f(x_n)) / d W_k]`` from the layer inputs ``hs`` of :func:`_activations`."""
    delta = coeff[:, None]  # d(sum coeff f)/d(output), (N, 1)
    grads = []
    for k in range(len(weights) - 1, -1, -1):
        grads.append(delta.T @ hs[k])
        if k:
            delta = (delta @ weights[k]) * (hs[k] > 0)
    return grads[::-1]


def bias_free_forward(weights: Sequence[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """``f(x) = W_L relu(... relu(W_1 x))`` for every row of ``X`` ``(N, M)``; returns ``(N,)``."""
    return _activations(weights, X)[1]


def output_gradients(weights: Sequence[torch.Tensor], X: torch.Tensor, coeff: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(f (N,), [d (sum_n coeff_n f(x_n)) / d W_k])`` by explicit back-propagation.

    ``f`` as :func:`bias_free_forward`; the ReLU derivative at 0 is taken as 0 (PyTorch's
    convention). ``coeff``: ``(N,)``. The flows use the same two halves (one forward pass per
    field evaluation, since their ``coeff`` depends on ``f``); the tests compare it with autograd.
    """
    hs, f = _activations(weights, X)
    return f, _backprop(weights, hs, coeff)


def _check_problem(weights: Sequence[torch.Tensor], X: torch.Tensor, y: torch.Tensor, t: torch.Tensor, step_size: float, where: str) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, float]:
    X = check_matrix(X, "X", where)
    Ws = [check_matrix(W, f"weights[{k}]", where, device=X.device) for k, W in enumerate(weights)]
    if not Ws:
        raise ShapeError(f"{where}: weights must list at least one matrix")
    width = X.shape[1]
    for k, W in enumerate(Ws):
        if W.shape[1] != width:
            raise ShapeError(f"{where}: weights[{k}] has {W.shape[1]} columns, expected {width} (the previous layer's width)")
        width = W.shape[0]
    if width != 1:
        raise ShapeError(f"{where}: the last weight matrix must have one row (a scalar binary classifier), got {width}")
    y = check_finite(as_tensor(y, "y", where, device=X.device), "y", where)
    if y.shape != (X.shape[0],) or not bool((y.abs() == 1).all()):
        raise ShapeError(f"{where}: y must have shape ({X.shape[0]},) with entries +1 or -1")
    return Ws, X, y, check_times(t, where, X.device), check_scalar("step_size", step_size, where, low=0.0, closed="neither")


def _rk4_step(field: Callable[[State], State], state: State, h: float) -> State:
    """One classical RK4 step of size ``h``."""

    def axpy(a: State, c: float, b: State) -> State:
        return tuple(x + c * y for x, y in zip(a, b))

    k1 = field(state)
    k2 = field(axpy(state, h / 2, k1))
    k3 = field(axpy(state, h / 2, k2))
    k4 = field(axpy(state, h, k3))
    return tuple(x + h / 6 * (a + 2 * b + 2 * c + d) for x, a, b, c, d in zip(state, k1, k2, k3, k4))


def _step_grid(t: torch.Tensor, step_size: float) -> tuple[list[float], set[int]]:
    """Step end points of fixed-step integration over ``t`` (each output interval cut into equal
    steps of at most ``step_size``) and the indices of the output times among them."""
    times, outputs = [float(t[0])], {0}
    for t0, t1 in zip(t[:-1].tolist(), t[1:].tolist()):
        n = max(1, math.ceil((t1 - t0) / step_size - 1e-9))
        times.extend(t0 + (t1 - t0) * i / n for i in range(1, n))
        times.append(t1)
        outputs.add(len(times) - 1)
    return times, outputs


def _rk4_estimated(field: Callable[[State], State], state: State, t: torch.Tensor, step_size: float, rtol: float, where: str, project: Callable[[State], State] = lambda st: st) -> tuple[list[State], float]:
    """Classical RK4 with steps of at most ``step_size`` (``project`` after each step): the states at
    ``t`` and a step-doubling error estimate (Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4).

    A companion run takes one step over every two steps of the returned run (half its cost) and
    the estimate is ``max_k max_j |y_k^{2h}(t_j) - y_k^h(t_j)| / max_j |y_k^h(t_j)|`` over the
    companion's step ends ``t_j``: the relative error of each state tensor ``y_k`` (rho, a weight
    matrix), worst over tensors. With a global error ``C h^p`` it is ``(2^p - 1) C h^p``: 15 times
    the error of the returned run on smooth stretches (order 4) and about the error itself where a
    ReLU unit crosses or chatters at its kink (order 1; the order-1 constant depends on where the
    kinks fall inside the steps, so there the error is the estimate times an O(1) factor: 0.2 to
    1.5 measured for the normalised flow over 45 runs, 8 seeds, against runs at 1/32 and 1/64 of the step).
    An estimate above ``rtol`` (or NaN: a diverged run) raises :class:`DivergenceError` naming the fix.
    """
    times, outputs = _step_grid(t, step_size)
    fine = coarse = state
    out, diff, scale = [state], [0.0] * len(state), [float(x.abs().max()) for x in state]
    with torch.no_grad(), single_thread():
        for i in range(0, len(times) - 1, 2):
            j = min(i + 2, len(times) - 1)
            coarse = project(_rk4_step(field, coarse, times[j] - times[i]))
            for m in range(i, j):
                fine = project(_rk4_step(field, fine, times[m + 1] - times[m]))
                if m + 1 in outputs:
                    out.append(fine)
            for k, (c, f) in enumerate(zip(coarse, fine)):
                diff[k] = max(diff[k], float((c - f).abs().max()))
                scale[k] = max(scale[k], float(f.abs().max()))
    estimate = max(d / s if s > 0 else d for d, s in zip(diff, scale))
    if not all(bool(torch.isfinite(x).all()) for x in (*fine, *coarse)):
        estimate = math.nan  # a diverged run (max() above skips NaN differences)
    if not estimate <= rtol:
        raise DivergenceError(
            f"{where}: RK4 at step {step_size:g} is not accurate for this flow: the step-doubling error estimate is {estimate:.3g} "
            f"(relative, worst state tensor; rtol={rtol:g}); lower step_size (the error falls like step^4 on smooth stretches, like step at ReLU kinks) "
            "or raise rtol"
        )
    return out, estimate


def _record(t: torch.Tensor, states: list[tuple[torch.Tensor, list[torch.Tensor]]], X: torch.Tensor, y: torch.Tensor, loss_of: Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]) -> ToyTrajectory:
    """Trajectory of ``(rho, weights)`` pairs: margins of the normalised network and the loss."""
    rho, norms, mu, M, loss = [], [], [], [], []
    for r, Ws in states:
        nk = torch.stack([torch.linalg.vector_norm(W) for W in Ws])
        f = y * bias_free_forward(Ws, X) / nk.prod()
        rho.append(r)
        norms.append(nk)
        mu.append(f.mean())
        M.append(f.square().mean())
        loss.append(loss_of(r, f, Ws))
    return ToyTrajectory(t, torch.stack(rho), torch.stack(norms), torch.stack(mu), torch.stack(M), torch.stack(loss), tuple(states[-1][1]))


def toy_flow(V0: Sequence[torch.Tensor], rho0: float, X: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, lam: float = 0.0, reduction: str = "mean", step_size: float = 0.05, project: bool = True, rtol: float = 1e-2) -> ToyTrajectory:
    """Integrate the Lagrange-normalised toy flow (Rangamani et al. 2021 eqs. 6-7) from ``(rho0, V0)``.

    V0: ``[V_1 (d_1, M), ..., V_L (1, d_{L-1})]`` of unit Frobenius norm (else
    :class:`AssumptionError`); X: ``(N, M)``; y: ``(N,)`` of +-1; t: increasing output times.
    Loss ``s sum_n (1 - rho f_n)^2 + lam rho^2`` (module docstring); ``rho_k`` records
    ``|V_k|_F`` and ``rho`` the scalar state. ``project=True`` ends every RK4 step with
    ``V_k <- V_k / |V_k|_F`` (``rho_k`` is then 1 by construction); ``project=False``
    integrates eqs. 6-7 as they stand, so ``|V_k|_F - 1`` measures how well the Lagrange
    multiplier alone conserves the norm (zero for the exact flow, the integrator error here).

    ``error_estimate`` is the relative step-doubling estimate of the run's error (module
    docstring, ``_rk4_estimated``: a companion at twice the step, 1.5 times the cost);
    an estimate above ``rtol`` (default ``1e-2``, as :func:`unnormalised_flow`) raises
    :class:`DivergenceError` naming the fix (lower ``step_size``). Where units chatter at their
    kinks RK4 is first order: 4-6-6-1 networks on 12 points measured 0.5e-2 to 2.5e-2 at step 0.05
    over t = 10-30 (mean loss; up to 0.26 from a large ``rho0``, whose fast ``V_k`` cross many
    kinks), and the summed loss of 40 points 0.16 to 0.77 at step 0.05.
    """
    where = "toy_flow"
    Vs, X, y, t, step_size = _check_problem(V0, X, y, t, step_size, where)
    check_reduction(reduction, where)
    lam = check_scalar("lam", lam, where, low=0.0)
    rho0 = check_scalar("rho0", rho0, where, low=0.0)
    rtol = check_scalar("rtol", rtol, where, low=0.0, closed="neither")
    for k, V in enumerate(Vs):
        if abs(float(torch.linalg.vector_norm(V)) - 1.0) > 1e-8:
            raise AssumptionError(f"{where}: V0[{k}] has Frobenius norm {float(torch.linalg.vector_norm(V)):.6g}, expected 1; pass W_k/|W_k|_F (normalise_layers) and put the scale in rho0")
    s = loss_scale(reduction, X.shape[0])

    def field(state: State) -> State:
        rho, *V = state
        hs, out = _activations(V, X)
        f = y * out
        w = 1.0 - rho * f
        grads = _backprop(V, hs, w * y)  # d(sum_n w_n f_n)/dV_k with w frozen
        V_dot = [2.0 * s * rho * (g - v * (v * g).sum() / v.square().sum()) for v, g in zip(V, grads)]
        return (2.0 * s * (w * f).sum() - 2.0 * lam * rho, *V_dot)

    def normalise(state: State) -> State:
        return (state[0], *(v / torch.linalg.vector_norm(v) for v in state[1:]))

    state0 = (torch.tensor(rho0, dtype=torch.float64, device=X.device), *Vs)
    states, estimate = _rk4_estimated(field, state0, t, step_size, rtol, where, normalise if project else lambda st: st)

    def loss_of(r: torch.Tensor, f: torch.Tensor, _: list[torch.Tensor]) -> torch.Tensor:
        return s * (1.0 - r * f).square().sum() + lam * r**2

    return dataclasses.replace(_record(t, [(st[0], list(st[1:])) for st in states], X, y, loss_of), error_estimate=estimate)


def unnormalised_flow(
    W0: Sequence[torch.Tensor],
    X: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    *,
    lam: float = 0.0,
    reduction: str = "mean",
    step_size: float = 0.01,
    rtol: float = 1e-2,
) -> ToyTrajectory:
    """Plain gradient flow ``W_k_dot = -dL/dW_k`` of the unnormalised toy network (appendix G).

    ``L = s sum_n (1 - y_n f_W(x_n))^2 + (lam/2) sum_k |W_k|^2``. W0 as ``V0`` of
    :func:`toy_flow` but of any norm. Records ``rho_k = |W_k|_F``, ``rho = prod rho_k`` and
    the margin moments of the normalised network ``f_n = y_n f_W(x_n) / rho``.

    Integrated by fixed-step RK4 at ``step_size`` and at half of it (module docstring: an adaptive
    solver crawls where a ReLU unit chatters at its kink); the half-step run is returned and
    ``error_estimate`` is ``max_k max|W_k^h - W_k^{h/2}| / max|W_k^{h/2}|`` (``_rk4_estimated``),
    an estimate of its relative error (order 4 on smooth stretches, order 1 at kinks). An estimate above ``rtol``
    raises :class:`DivergenceError` naming the fix. Default ``rtol = 1e-2`` of the largest weight;
    measured on 4-6-6-1 networks: chattering at a kink gives 1e-4 to 1e-3 at step 0.01 with the
    mean loss, the summed loss of 40 points at step 0.01 gives 0.1 to 0.6 (there the fixed step
    had broken Lemma 10 silently: the conserved ``|W_2|^2 - |W_1|^2`` moved by O(1)).
    """
    where = "unnormalised_flow"
    Ws, X, y, t, step_size = _check_problem(W0, X, y, t, step_size, where)
    check_reduction(reduction, where)
    lam = check_scalar("lam", lam, where, low=0.0)
    rtol = check_scalar("rtol", rtol, where, low=0.0, closed="neither")
    s = loss_scale(reduction, X.shape[0])

    def field(state: State) -> State:
        hs, out = _activations(state, X)
        grads = _backprop(state, hs, 2.0 * s * (1.0 - y * out) * y)  # = -d(data loss)/dW_k
        return tuple(gk - lam * w for gk, w in zip(grads, state))

    states, estimate = _rk4_estimated(field, tuple(Ws), t, step_size / 2, rtol, where)

    def loss_of(r: torch.Tensor, f: torch.Tensor, W: list[torch.Tensor]) -> torch.Tensor:
        return s * (1.0 - r * f).square().sum() + 0.5 * lam * sum(w.square().sum() for w in W)

    tr = _record(t, [(torch.stack([torch.linalg.vector_norm(w) for w in st]).prod(), list(st)) for st in states], X, y, loss_of)
    return dataclasses.replace(tr, error_estimate=estimate)
