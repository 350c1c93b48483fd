"""State of the effective flow: per hidden layer ``(beta^(l), R_l)``, fixed output weights.

Chen 2025 (arXiv:2501.07400) (3.20)-(3.21), docs/theory/effective-flow.md: for weights aligned with the
activation, ``W^(l) = W_*^(l) R_l`` with ``W_*`` positive diagonal and ``R_l`` in ``O(Q)``;
``W_*`` drops out of every truncation map, so a network is described by
``(beta^(l), R_l)_{l <= L}`` and its cumulative output parameters ``(W^(L+1), b^(L+1))``,
which the effective flow keeps fixed. Layer form (docs/theory/effective-flow.md, implementation note):
``W_1 = R_1``, ``W_l = R_l R_{l-1}^T``, ``b_l = R_l beta^(l) - W_l R_{l-1} beta^(l-1) = R_l (beta^(l) - beta^(l-1))``
and ``W_{L+1} = W^(L+1) R_L^T``, ``b_{L+1} = b^(L+1) - W^(L+1) beta^(L)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import AssumptionError, ShapeError, SingularError
from ..core.geometry import cumulative_beta, cumulative_weights, is_aligned, polar
from ..core.network import ReLUNet, from_layers
from ..core.validation import Interval, as_tensor, check_finite, check_param

__all__ = ["EffectiveState", "make_state", "random_state", "state_from_network", "state_to_network", "pulled_back_labels", "orthogonality_errors"]

ORTHOGONALITY_TOL = 1e-10
"""Default tolerance of ``max |R^T R - 1|`` when a state is built from user input."""


def orthogonality_errors(R: torch.Tensor) -> torch.Tensor:
    """``max |R_l^T R_l - 1|`` (entrywise) of every matrix of ``R (..., Q, Q)``; shape ``(...)``."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    return (R.transpose(-1, -2) @ R - eye).abs().amax(dim=(-2, -1))


@dataclass(frozen=True)
class EffectiveState:
    """``beta (L, Q)``, ``R (L, Q, Q)`` orthogonal, fixed ``W_out (Q, Q)`` and ``b_out (Q,)``.

    Row ``l`` of ``beta`` is ``beta^(l+1)`` and ``R[l]`` is ``R_{l+1}`` (zero-based layers).
    ``W_out``, ``b_out`` are the cumulative output parameters ``W^(L+1)``, ``b^(L+1)``
    (Chen 2025 (2.7)). Build it with :func:`make_state` (which checks), not directly.
    """

    beta: torch.Tensor
    R: torch.Tensor
    W_out: torch.Tensor
    b_out: torch.Tensor

    @property
    def depth(self) -> int:
        """``L``, the number of hidden layers."""
        return int(self.beta.shape[0])

    @property
    def width(self) -> int:
        """``Q``, the common width of input, hidden and output spaces."""
        return int(self.beta.shape[1])

    def replace(self, beta: torch.Tensor | None = None, R: torch.Tensor | None = None) -> "EffectiveState":
        """A copy with new ``beta`` and/or ``R`` (no checks: for integrators that keep ``R`` orthogonal)."""
        return EffectiveState(self.beta if beta is None else beta, self.R if R is None else R, self.W_out, self.b_out)

    def orthogonality_error(self) -> float:
        """``max_l max |R_l^T R_l - 1|``."""
        return float(orthogonality_errors(self.R).max())


def make_state(
    beta: Any, R: Any, W_out: Any = None, b_out: Any = None, *, atol: float = ORTHOGONALITY_TOL, dtype: torch.dtype = torch.float64
) -> EffectiveState:
    """Validate and build an :class:`EffectiveState` of ``dtype`` (float64 by default) on ``beta``'s device.

    beta: ``(L, Q)``; R: ``(L, Q, Q)`` with every ``R_l`` orthogonal to ``atol``;
    W_out: ``(Q, Q)`` invertible (default identity); b_out: ``(Q,)`` (default 0, as in the paper).
    """
    where = "make_state"
    b = check_finite(as_tensor(beta, "beta", where, dtype=dtype), "beta", where)
    if b.ndim != 2:
        raise ShapeError(f"{where}: beta must be (L, Q), got shape {tuple(b.shape)}")
    L, Q = b.shape
    r = check_finite(as_tensor(R, "R", where, dtype=dtype, device=b.device), "R", where)
    if r.shape != (L, Q, Q):
        raise ShapeError(f"{where}: R must be (L, Q, Q) = ({L}, {Q}, {Q}) to match beta, got {tuple(r.shape)}")
    err = orthogonality_errors(r)
    if bool((err > atol).any()):
        l = int(torch.argmax(err))
        raise AssumptionError(
            f"{where}: R_{l + 1} is not orthogonal (max |R^T R - 1| = {float(err[l]):.3g} > {atol:g}); "
            "pass an orthogonal matrix (for a general weight use the R of its polar decomposition, core.geometry.polar)"
        )
    W = torch.eye(Q, dtype=dtype, device=b.device) if W_out is None else check_finite(as_tensor(W_out, "W_out", where, dtype=dtype, device=b.device), "W_out", where)
    if W.shape != (Q, Q):
        raise ShapeError(f"{where}: W_out must be ({Q}, {Q}), got {tuple(W.shape)}")
    s = torch.linalg.svdvals(W)
    if float(s[-1]) <= 1e3 * torch.finfo(dtype).eps * float(s[0]) * Q:
        raise SingularError(f"{where}: W_out is singular (smallest singular value {float(s[-1]):.3g}); the pulled-back labels need an invertible W^(L+1)")
    bo = torch.zeros(Q, dtype=dtype, device=b.device) if b_out is None else check_finite(as_tensor(b_out, "b_out", where, dtype=dtype, device=b.device), "b_out", where)
    if bo.shape != (Q,):
        raise ShapeError(f"{where}: b_out must be ({Q},), got {tuple(bo.shape)}")
    return EffectiveState(b, r, W, bo)


def random_state(depth: int, width: int, *, beta_scale: float = 0.1, seed: int = 0, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> EffectiveState:
    """A random state: Haar-like ``R_l`` (QR of Gaussians, sign-fixed), ``beta ~ beta_scale N(0, 1)``, identity output.

    Drawn on the CPU from ``seed`` and then moved to ``device``, so a seed gives the same state everywhere.
    """
    check_param("depth", depth, Interval(int, 1), "random_state")
    check_param("width", width, Interval(int, 1), "random_state")
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(depth, width, width, generator=g, dtype=dtype)
    Qm, Rm = torch.linalg.qr(A)
    Qm = Qm * torch.sign(torch.diagonal(Rm, dim1=1, dim2=2)).unsqueeze(1)
    beta = beta_scale * torch.randn(depth, width, generator=g, dtype=dtype)
    return make_state(beta.to(device), Qm.to(device))


def pulled_back_labels(state: EffectiveState, Y: torch.Tensor) -> torch.Tensor:
    """``ỹ_j = (W^(L+1))^{-1} (y_j - b^(L+1))`` for every row ``y_j`` of ``Y (Q, Q)``; returns ``(Q, Q)``.

    Chen 2025 (3.19)/(1.15) take ``b^(L+1) = 0``; keeping the output bias is our generalisation (docs/theory/effective-flow.md).
    """
    if Y.ndim != 2 or Y.shape[1] != state.width:
        raise ShapeError(f"pulled_back_labels: Y must be (Q, {state.width}), got {tuple(Y.shape)}")
    return torch.linalg.solve(state.W_out, (Y - state.b_out).T).T


def state_to_network(state: EffectiveState) -> ReLUNet:
    """The aligned ReLU network (widths ``[Q] * (L + 2)``) of a state (docs/theory/effective-flow.md)."""
    R, beta = state.R, state.beta
    layers = [(R[0], R[0] @ beta[0])]
    for l in range(1, state.depth):
        W = R[l] @ R[l - 1].T
        layers.append((W, R[l] @ (beta[l] - beta[l - 1])))
    layers.append((state.W_out @ R[-1].T, state.b_out - state.W_out @ beta[-1]))
    return from_layers(layers)


def state_from_network(net: ReLUNet, *, rtol: float = 1e-10) -> EffectiveState:
    """Inverse of :func:`state_to_network` for any network whose cumulative weights are aligned.

    Every width must equal the input width ``Q``; every ``W^(l)`` must be aligned (Chen 2025
    Def 2.2: ``|W^(l)|`` diagonal positive), else :class:`AssumptionError` names the layer.
    ``beta^(l) = (W^(l))^{-1} b^(l)`` and ``R_l`` is the orthogonal polar factor.
    """
    where = "state_from_network"
    widths = net.widths
    Q = widths[0]
    if any(w != Q for w in widths) or len(widths) < 3:
        raise ShapeError(f"{where}: the effective flow needs square layers of one width Q and at least one hidden layer, got widths {widths}")
    with torch.no_grad():
        cum = cumulative_weights([(W.detach(), b.detach()) for W, b in net.weights()])
        betas, Rs = [], []
        for l, (W, b) in enumerate(cum[:-1]):
            if not is_aligned(W, rtol=rtol):
                raise AssumptionError(
                    f"{where}: cumulative weight W^({l + 1}) is not aligned with the activation (|W| not positive diagonal, Chen 2025 Def 2.2); "
                    "the (beta, R) parametrisation applies to aligned networks only"
                )
            betas.append(cumulative_beta(W, b))
            Rs.append(polar(W)[1])
        W_out, b_out = cum[-1]
        return make_state(torch.stack(betas), torch.stack(Rs), W_out, b_out, atol=max(1e-8, rtol))
