"""The papers' costs (Chen 2025; docs/theory/notation.md). Each says which it is.

* :func:`weighted_l2`: ``sum_j (1/N_j) sum_i |x_{j,i} - y_j|^2`` (CE23's squared
  ``L^2_N`` norm; Chen 2025 multiplies it by 1/2; CE23's cost is its square root).
* :func:`mean_l2`: ``(1/2N) |x - y|^2`` (the adapted-flow cost of Chen & Munoz Ewald 2024; docs/theory/adapted-flow.md).
* :func:`cross_entropy`: mean cross-entropy of logits.
* :func:`l2_split`: the exact split ``weighted_l2 = within-class variance + mean mismatch``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .errors import ShapeError

__all__ = ["weighted_l2", "mean_l2", "cross_entropy", "l2_split", "L2Split", "COSTS"]


def _check(outputs: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor | None, where: str) -> torch.Tensor:
    if outputs.ndim != 2:
        raise ShapeError(f"{where}: outputs must be (N, Q), got shape {tuple(outputs.shape)}")
    if labels.ndim != 1 or labels.shape[0] != outputs.shape[0]:
        raise ShapeError(f"{where}: labels must have shape ({outputs.shape[0]},), got {tuple(labels.shape)}")
    if Y is None:
        return torch.eye(outputs.shape[1], dtype=outputs.dtype, device=outputs.device)
    if Y.ndim != 2 or Y.shape[1] != outputs.shape[1]:
        raise ShapeError(f"{where}: Y must be (Q, {outputs.shape[1]}), got {tuple(Y.shape)}")
    return Y


def _class_weights(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=num_classes).to(dtype)
    return (1.0 / counts)[labels]  # only classes that occur are indexed


def weighted_l2(outputs: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j (1/N_j) sum_{i in class j} |x_i - y_j|^2`` (squared CE23 (2.35)/(2.36)).

    outputs: ``(N, Q)``; labels: ``(N,)``; Y: ``(Q, Q)`` (identity if None).
    """
    Y = _check(outputs, labels, Y, "weighted_l2")
    r2 = (outputs - Y[labels]).pow(2).sum(1)
    return (r2 * _class_weights(labels, Y.shape[0], outputs.dtype)).sum()


def mean_l2(outputs: torch.Tensor, labels_or_targets: torch.Tensor, Y: torch.Tensor | None = None) -> torch.Tensor:
    """``C = (1/2N) |x - y|^2`` summed over all ``QN`` entries (Chen & Munoz Ewald 2024; docs/theory/adapted-flow.md).

    The second argument is either labels ``(N,)`` (targets ``Y[labels]``) or targets ``(N, Q)``.
    """
    if labels_or_targets.ndim == 2:
        if labels_or_targets.shape != outputs.shape:
            raise ShapeError(f"mean_l2: targets must have the shape of outputs {tuple(outputs.shape)}, got {tuple(labels_or_targets.shape)}")
        target = labels_or_targets
    else:
        target = _check(outputs, labels_or_targets, Y, "mean_l2")[labels_or_targets]
    return 0.5 * (outputs - target).pow(2).sum() / outputs.shape[0]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``(1/N) sum_i -log softmax(x_i)_{label_i}``."""
    _check(logits, labels, None, "cross_entropy")
    return F.cross_entropy(logits, labels)


class L2Split(NamedTuple):
    """``weighted_l2 = within + mismatch`` (CE23 2.1; slides)."""

    within: torch.Tensor
    """``sum_j (1/N_j) sum_i |x_{j,i} - x̄_j|^2``: within-class variance."""
    mismatch: torch.Tensor
    """``sum_j |x̄_j - y_j|^2``: class-mean mismatch."""

    @property
    def total(self) -> torch.Tensor:
        return self.within + self.mismatch


def l2_split(outputs: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor | None = None) -> L2Split:
    """Exact split of :func:`weighted_l2` into within-class variance plus mean mismatch."""
    Y = _check(outputs, labels, Y, "l2_split")
    q = Y.shape[0]
    counts = torch.bincount(labels, minlength=q).to(outputs.dtype)
    sums = torch.zeros(q, outputs.shape[1], dtype=outputs.dtype, device=outputs.device).index_add_(0, labels, outputs)
    present = counts > 0
    means = sums[present] / counts[present, None]
    full_means = torch.zeros_like(sums)
    full_means[present] = means
    within = ((outputs - full_means[labels]).pow(2).sum(1) * _class_weights(labels, q, outputs.dtype)).sum()
    mismatch = (means - Y[present]).pow(2).sum()
    return L2Split(within, mismatch)


COSTS = {"weighted_l2": weighted_l2, "mean_l2": mean_l2, "cross_entropy": cross_entropy}
"""Costs by name."""
