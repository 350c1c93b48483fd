"""The ULPM cross-entropy and its closed-form gradients (Ji et al. 2022, eq. 4; docs/theory/ulpm.md).

Layout (the paper's): classifier ``W`` ``(K, d)``, features ``H`` ``(d, N)`` with ``N = n K``
columns ordered class by class (``h_{1,1..n}, h_{2,1..n}, ...``). Logits ``Z = W H`` ``(K, N)``.
``reduction="sum"`` is eq. 4 as printed, ``sum_{k,i} -log softmax(Z)_{k,(k,i)}``;
``reduction="mean"`` divides by ``N`` (the paper's lr-5 experiment only converges with it).
``reduction`` is a required keyword in every ULPM function (no default: the two differ by ``N``).
With ``G = softmax(Z) - Y`` (softmax over classes, ``Y`` one-hot ``(K, N)``):
``grad_W = s G H^T``, ``grad_H = s W^T G`` with ``s = 1/N`` (mean) or 1 (sum).
"""

from __future__ import annotations

import torch

from ...core.errors import ShapeError
from ...core.validation import check_matrix
from .._common import check_reduction, loss_scale

__all__ = ["ulpm_labels", "ulpm_targets", "check_ulpm", "ulpm_loss", "ulpm_gradients", "scaled_residual", "residual_gradients"]


def ulpm_labels(num_classes: int, per_class: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``(K n,)`` class-major labels ``0,..,0,1,..,1,...`` of the ULPM's feature columns."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def ulpm_targets(num_classes: int, per_class: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """One-hot targets ``Y`` ``(K, K n)``: column ``(k, i)`` is ``e_k``."""
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    return eye.repeat_interleave(per_class, dim=1)


def check_ulpm(W: torch.Tensor, H: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``W (K, d)`` and ``H (d, n K)`` (float64, finite); return them and ``n``."""
    W = check_matrix(W, "W", where)
    H = check_matrix(H, "H", where, shape=(W.shape[1], None), device=W.device)
    K, N = W.shape[0], H.shape[1]
    if K < 2 or N == 0 or N % K != 0:
        raise ShapeError(f"{where}: H must have n*K columns (K={K} classes, balanced, class-major) and K >= 2, got {N} columns")
    return W, H, N // K


def scaled_residual(W: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G = scale (softmax(W H) - Y), per-column CE (N,))``: the one place the softmax is taken."""
    logp = torch.log_softmax(W @ H, dim=0)
    return (logp.exp() - Y) * scale, -(Y * logp).sum(dim=0)


def residual_gradients(W: torch.Tensor, H: torch.Tensor, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_W, grad_H) = (G H^T, W^T G)`` for the residual ``G`` of :func:`scaled_residual`
    (chain rule through the logits ``W H``): the one place the gradient is assembled."""
    return G @ H.T, W.T @ G


def _residual(W: torch.Tensor, H: torch.Tensor, reduction: str, where: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Shape-checked ``(G, per-column CE, scale)`` shared by :func:`ulpm_loss` and :func:`ulpm_gradients`."""
    check_reduction(reduction, where)
    K, N = W.shape[0], H.shape[1]
    if K < 2 or N == 0 or N % K != 0 or H.shape[0] != W.shape[1]:
        raise ShapeError(f"{where}: need W (K, d) and H (d, n*K) with K >= 2, got W {tuple(W.shape)} and H {tuple(H.shape)}")
    Y = ulpm_targets(K, N // K, dtype=W.dtype, device=W.device)
    s = loss_scale(reduction, N)
    G, per = scaled_residual(W, H, Y, s)
    return G, per, s


def ulpm_loss(W: torch.Tensor, H: torch.Tensor, *, reduction: str) -> torch.Tensor:
    """Cross-entropy of the ULPM (Ji et al. 2022 eq. 4), summed or averaged over the ``N`` columns."""
    _, per, s = _residual(W, H, reduction, "ulpm_loss")
    return per.sum() * s


def ulpm_gradients(W: torch.Tensor, H: torch.Tensor, *, reduction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, grad_W (K, d), grad_H (d, N))`` in closed form (module docstring); no autograd.

    W: ``(K, d)``, H: ``(d, n K)`` float64 (differentiable inputs are fine: the outputs then
    carry a graph, which the tests use to compare with autograd).
    """
    G, per, s = _residual(W, H, reduction, "ulpm_gradients")
    return (per.sum() * s, *residual_gradients(W, H, G))
