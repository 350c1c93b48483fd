"""Truncation geometry of ReLU networks (docs/theory/notation.md, effective-flow.md and minimizers.md).

Rows are points: ``X`` is ``(N, n)`` and an affine map acts as ``X W^T + b``.

* Cumulative parameters (CE23 (2.43),(2.45); slides eq (1)):
  ``W^(l) = W_l ... W_1``, ``b^(l) = W_l b^(l-1) + b_l``, ``beta^(l) = (W^(l))^{-1} b^(l)``,
  and back ``W_l = W^(l) (W^(l-1))^+``, ``b_l = b^(l) - W_l b^(l-1)``.
* Truncation map (CE23 Def 2.1, CE24 Def 3.1): ``tau_{W,b}(x) = W^+ (relu(W x + b) - b)``;
  for invertible ``W`` it is ``W^{-1} relu(W (x + beta)) - beta``.
* Composition identity (CE23 Prop 2.2, CE24 Prop 3.2): ``x^(l) = W^(l) x^(tau,l) + b^(l)``
  with ``x^(tau,l) = tau_{W^(l),b^(l)}(x^(tau,l-1))``, valid for square invertible layers
  and for non-increasing widths with surjective ``W_l``.
* Sectors and truncation states (Chen 2025 (2.12), Def 2.1).
* Polar decomposition and weights aligned with the activation (Chen 2025 Def 2.2).
* Polyhedral-cone form (Muñoz Ewald 2025, Lemma 2.1; docs/theory/minimizers.md).
* Cones ``C_theta[h]``, the aperture ``theta_n`` and the shrink matrix ``W_theta`` (CE23 (4.27)-(4.29)).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import torch

from .errors import ParameterError, ShapeError, SingularError

__all__ = [
    "cumulative_weights",
    "layer_weights",
    "cumulative_beta",
    "affine",
    "truncation",
    "truncation_sequence",
    "TruncationState",
    "truncation_state",
    "set_truncation_state",
    "truncated_directions",
    "polar",
    "is_aligned",
    "cone_form_truncation",
    "angle",
    "cone_aperture",
    "cone_shrink",
    "cone_weight",
    "rotation_to",
]

Params = Sequence[tuple[torch.Tensor, torch.Tensor]]


def _rel_tol(dtype: torch.dtype) -> float:
    return 1e3 * torch.finfo(dtype).eps


def cumulative_weights(params: Params) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(W^(1), b^(1)), ..., (W^(k), b^(k))]`` for the given layers ``[(W_1, b_1), ...]``.

    ``W^(l) = W_l W^(l-1)``, ``b^(l) = W_l b^(l-1) + b_l`` (CE23 (2.43),(2.45)).
    """
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i, (W, b) in enumerate(params):
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ShapeError(f"cumulative_weights: layer {i + 1} has W {tuple(W.shape)} and b {tuple(b.shape)}; need b of shape ({W.shape[0]},)")
        if out:
            Wc, bc = out[-1]
            if W.shape[1] != Wc.shape[0]:
                raise ShapeError(f"cumulative_weights: layer {i + 1} takes {W.shape[1]} inputs but layer {i} gives {Wc.shape[0]}")
            out.append((W @ Wc, W @ bc + b))
        else:
            out.append((W, b))
    return out


def layer_weights(cumulative: Params, *, rtol: float | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inverse of :func:`cumulative_weights`: ``W_l = W^(l) (W^(l-1))^+``, ``b_l = b^(l) - W_l b^(l-1)``.

    Uses the inverse for square matrices and the pseudo-inverse when widths do not
    increase. The formula is exact only if ``ker W^(l-1) ⊂ ker W^(l)`` (erratum
    E6, docs/theory/errata.md); this is checked (``|W^(l) P^(l-1) - W^(l)| <= rtol |W^(l)|``) and a violation
    raises :class:`SingularError` naming the layer, never a silently wrong network.
    """
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    prev_W: torch.Tensor | None = None
    prev_b: torch.Tensor | None = None
    for i, (Wc, bc) in enumerate(cumulative):
        tol = _rel_tol(Wc.dtype) if rtol is None else rtol
        if prev_W is None:
            W, b = Wc, bc
        else:
            if Wc.shape[1] != prev_W.shape[1]:
                raise ShapeError(f"layer_weights: W^({i + 1}) acts on R^{Wc.shape[1]} but W^({i}) on R^{prev_W.shape[1]}")
            _check_rank(prev_W, f"W^({i})", "layer_weights")
            pinv = torch.linalg.pinv(prev_W)
            W = Wc @ pinv
            resid = torch.linalg.matrix_norm(W @ prev_W - Wc) / torch.linalg.matrix_norm(Wc).clamp_min(torch.finfo(Wc.dtype).tiny)
            if float(resid) > max(tol, 1e-10 if Wc.dtype == torch.float64 else 1e-4):
                raise SingularError(
                    f"layer_weights: W^({i + 1}) is not a product W_{i + 1} W^({i}): ker W^({i}) is not contained in ker W^({i + 1}) "
                    f"(relative residual {float(resid):.3g}); use constant widths or project the data first (erratum E6, docs/theory/errata.md)"
                )
            b = bc - W @ prev_b
        out.append((W, b))
        prev_W, prev_b = Wc, bc
    return out


def _check_rank(W: torch.Tensor, name: str, where: str) -> None:
    """Raise SingularError unless ``W`` has full row rank (surjective)."""
    s = torch.linalg.svdvals(W)
    full = min(W.shape)
    if W.shape[0] > W.shape[1]:
        raise SingularError(f"{where}: {name} has shape {tuple(W.shape)}; widths must not increase (W must be surjective)")
    if float(s[-1]) <= _rel_tol(W.dtype) * float(s[0]) * max(W.shape) or float(s[0]) == 0.0:
        raise SingularError(
            f"{where}: {name} is singular (rank < {full}, smallest singular value {float(s[-1]):.3g} vs largest {float(s[0]):.3g}); "
            "a truncation map needs a surjective cumulative weight"
        )


def cumulative_beta(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``beta = W^{-1} b`` for square invertible ``W`` (Chen 2025 (2.6)); raises SingularError otherwise."""
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ShapeError(f"cumulative_beta: W must be square, got {tuple(W.shape)}; for surjective W use p = -W^+ b (cone_form_truncation)")
    _check_rank(W, "W", "cumulative_beta")
    return torch.linalg.solve(W, b)


def affine(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a(x) = W x + b`` for every row of ``X`` (Chen 2025 (2.8))."""
    if X.ndim != 2 or X.shape[1] != W.shape[1]:
        raise ShapeError(f"affine: X must be (N, {W.shape[1]}) to match W {tuple(W.shape)}, got {tuple(X.shape)}")
    return X @ W.T + b


def truncation(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """``tau_{W,b}(x) = W^+ (relu(W x + b) - b)`` for every row of ``X`` (CE23 Def 2.1, CE24 Def 3.1).

    ``W`` must be surjective (``m <= n``, full row rank); ``check=False`` skips that test
    for hot loops whose caller already knows it.
    """
    if check:
        _check_rank(W, "W", "truncation")
    rhs = torch.relu(affine(X, W, b)) - b
    if W.shape[0] == W.shape[1]:
        return torch.linalg.solve(W, rhs.T).T  # backward stable; an explicit inverse loses digits
    return rhs @ torch.linalg.pinv(W).T


def truncation_sequence(X: torch.Tensor, cumulative: Params) -> list[torch.Tensor]:
    """``[x^(tau,1), ..., x^(tau,k)]`` with ``x^(tau,l) = tau_{W^(l),b^(l)}(x^(tau,l-1))``, ``x^(tau,0) = X``.

    With the composition identity, ``x^(l) = W^(l) x^(tau,l) + b^(l)`` for hidden layers.
    """
    out, cur = [], X
    for W, b in cumulative:
        cur = truncation(cur, W, b)
        out.append(cur)
    return out


class TruncationState(enum.IntEnum):
    """Chen 2025 Def 2.1: where a point lies relative to the sectors ``S_+``, ``S_-``."""

    UNTRUNCATED = 0
    """In ``S_+`` (all coordinates of ``a(x)`` >= 0): ``tau(x) = x``."""
    PARTIALLY_TRUNCATED = 1
    """In neither sector, so truncated in some directions only."""
    FULLY_TRUNCATED = 2
    """In ``S_-`` (all coordinates <= 0): ``tau(x) = -beta``, independent of ``x``."""


def truncated_directions(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, m)`` bool: point ``i`` is truncated in direction ``a`` iff ``(W x_i + b)_a < 0``."""
    return affine(X, W, b) < 0


def truncation_state(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N,)`` int64 :class:`TruncationState` of every point (closed orthants, Chen 2025 (2.12))."""
    z = affine(X, W, b)
    state = torch.full((X.shape[0],), int(TruncationState.PARTIALLY_TRUNCATED), dtype=torch.int64, device=X.device)
    state[(z >= 0).all(1)] = int(TruncationState.UNTRUNCATED)
    state[(z <= 0).all(1) & ~(z >= 0).all(1)] = int(TruncationState.FULLY_TRUNCATED)
    return state


def set_truncation_state(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> TruncationState:
    """State of a set: untruncated (fully truncated) if all its points are, else partially truncated."""
    s = truncation_state(X, W, b)
    if bool((s == TruncationState.UNTRUNCATED).all()):
        return TruncationState.UNTRUNCATED
    if bool((s == TruncationState.FULLY_TRUNCATED).all()):
        return TruncationState.FULLY_TRUNCATED
    return TruncationState.PARTIALLY_TRUNCATED


def polar(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Polar decomposition ``W = |W| R`` with ``|W| = (W W^T)^{1/2}`` and ``R`` orthogonal (Chen 2025 1.4).

    Computed from the SVD ``W = U S V^T``: ``|W| = U S U^T``, ``R = U V^T``.
    """
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ShapeError(f"polar: W must be square, got {tuple(W.shape)}")
    U, S, Vh = torch.linalg.svd(W)
    return (U * S) @ U.T, U @ Vh


def is_aligned(W: torch.Tensor, *, rtol: float = 1e-10) -> bool:
    """Chen 2025 Def 2.2: ``W`` is aligned with the activation iff ``|W|`` is diagonal with
    positive entries, i.e. ``W = W_* R`` with ``W_*`` positive diagonal, ``R`` orthogonal.

    Then ``tau_{W,b} = tau_{R, R beta}`` and ``W_*`` drops out.
    """
    P, _ = polar(W)
    off = P - torch.diag(torch.diagonal(P))
    scale = float(torch.linalg.matrix_norm(P))
    return float(torch.linalg.matrix_norm(off)) <= rtol * max(scale, 1.0) and bool((torch.diagonal(P) > rtol * scale).all())


def cone_form_truncation(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Polyhedral-cone form of ``tau_{W,b}`` (Muñoz Ewald 2025, Lemma 2.1; docs/theory/minimizers.md).

    For surjective ``W`` (``m x n``): ``p = -W^+ b``, ``v_i = W^+ e_i``, ``a = W (x - p)``,
    ``tau(x) = W^+ W p + sum_{a_i > 0} a_i v_i``. Independent of :func:`truncation`'s
    algebra; the two must agree.
    """
    _check_rank(W, "W", "cone_form_truncation")
    Wp = torch.linalg.pinv(W)  # (n, m): columns are the v_i
    p = -(Wp @ b)
    a = (X - p) @ W.T  # (N, m): coordinates along the v_i
    base = Wp @ (W @ p)
    return base + torch.where(a > 0, a, torch.zeros_like(a)) @ Wp.T


def angle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle in ``[0, pi]`` between ``u`` and ``v`` along the last axis (stable atan2 form)."""
    cross = torch.linalg.vector_norm(u * v.norm(dim=-1, keepdim=True) - v * u.norm(dim=-1, keepdim=True), dim=-1)
    along = torch.linalg.vector_norm(u * v.norm(dim=-1, keepdim=True) + v * u.norm(dim=-1, keepdim=True), dim=-1)
    return 2 * torch.atan2(cross, along)


def cone_aperture(n: int) -> float:
    """``theta_n = 2 arccos sqrt((n-1)/n)``: the largest aperture of a cone around ``u_n`` inside ``R^n_+`` (CE23 (4.27))."""
    return 2.0 * math.acos(math.sqrt((n - 1) / n))


def cone_shrink(theta: float, n: int) -> float:
    """``lambda(theta, theta_n) = tan(theta_n/2) / tan(theta/2)`` if ``theta > theta_n`` else 1 (CE23 (4.29))."""
    tn = cone_aperture(n)
    return math.tan(tn / 2) / math.tan(theta / 2) if theta > tn else 1.0


def cone_weight(theta: float, n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """``W_theta = lambda 1 + (1 - lambda) û û^T`` with ``û = u_n / sqrt(n)`` (docs/theory/notation.md).

    Maps ``C_theta[u_n]`` into ``C_{theta_n}[u_n] ⊂ R^n_+``, fixes ``u_n``, operator norm 1.
    """
    lam = cone_shrink(theta, n)
    u = torch.full((n,), 1.0 / math.sqrt(n), dtype=dtype, device=device)
    return lam * torch.eye(n, dtype=dtype, device=device) + (1 - lam) * torch.outer(u, u)


def rotation_to(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A rotation ``R`` in ``SO(n)`` with ``R h/|h| = target/|target|`` (product of two Householder reflections).

    Each reflection is built from a vector of length at least ``sqrt(2)`` (the two cases
    below), so the result is accurate for parallel and antiparallel inputs alike.
    """
    a = h / h.norm()
    c = target / target.norm()
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)

    def householder(v: torch.Tensor) -> torch.Tensor:
        v = v / v.norm()
        return eye - 2 * torch.outer(v, v)

    if float(a @ c) >= 0:
        # a -> -a, then -a -> c (v = x - y reflects x to y when |x| = |y|; here |-a - c| >= sqrt 2)
        return householder(-a - c) @ householder(a)
    if a.shape[0] == 1:
        raise ParameterError("rotation_to: in R^1 no rotation maps h to -h; use n >= 2")
    # a -> c directly (|a - c| >= sqrt 2), then a reflection fixing c restores det = +1
    w = eye[int(torch.argmin(c.abs()))]
    w = w - (w @ c) * c
    return householder(w) @ householder(a - c)
