"""Forward pass of an aligned network in input space and the Euclidean input-space loss.

Aligned truncation map (Chen 2025 (3.20)-(3.21), docs/theory/effective-flow.md):
``tau^(l)(y) = R_l^T relu(R_l (y + beta^(l))) - beta^(l)``, with ``z_l = R_l (y + beta^(l))``.
Composition ``y_0 = x``, ``y_l = tau^(l)(y_{l-1})`` (docs/theory/effective-flow.md (2.16)).
Euclidean input-space loss (Chen 2025 (2.26)=(1.10), docs/theory/effective-flow.md), at fixed output weights:
``C~_N = 1/2 sum_j 1/N_j sum_i |y_L(x_{j,i}) - ỹ_j|^2``.
Rows are points: ``X`` is ``(N, Q)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.cost import weighted_l2
from ..core.data import ClassificationData
from ..core.errors import ShapeError
from ._state import EffectiveState, pulled_back_labels

__all__ = ["ForwardPass", "forward_pass", "input_space_loss", "sample_weights", "check_flow_data"]


@dataclass(frozen=True)
class ForwardPass:
    """``ys (L+1, N, Q)`` with ``ys[0] = X`` and ``ys[l] = y_l``; ``zs (L, N, Q)`` with ``zs[l-1] = z_l``."""

    ys: torch.Tensor
    zs: torch.Tensor


def forward_pass(state: EffectiveState, X: torch.Tensor, pattern: torch.Tensor | None = None) -> ForwardPass:
    """All intermediate points ``y_l`` and pre-activations ``z_l`` of ``X (N, Q)`` (docs/theory/effective-flow.md step 2).

    ``pattern (L, N, Q)`` bool, if given, replaces ``relu(z)`` by ``pattern * z`` (the smooth
    extension of one activation region, used by the integrator within a step).
    """
    ys, zs = [X], []
    for l, (R, beta) in enumerate(zip(state.R, state.beta)):
        z = (ys[-1] + beta) @ R.T
        zs.append(z)
        ys.append((torch.relu(z) if pattern is None else pattern[l] * z) @ R - beta)
    return ForwardPass(torch.stack(ys), torch.stack(zs))


def sample_weights(data: ClassificationData) -> torch.Tensor:
    """``(N,)``: ``1 / N_{label(i)}``, the weights of the per-cluster averages."""
    return (1.0 / data.class_counts.to(data.X.dtype))[data.labels]


def check_flow_data(state: EffectiveState, data: ClassificationData, where: str) -> None:
    """Raise ShapeError unless inputs, labels and targets all live in ``R^Q`` of the state."""
    Q = state.width
    if data.dim != Q or data.Y.shape != (data.num_classes, Q):
        raise ShapeError(
            f"{where}: the effective flow needs inputs and labels in R^Q with Q = {Q} (the state's width), "
            f"got X {tuple(data.X.shape)} and Y {tuple(data.Y.shape)}; embed the data in R^Q first"
        )


def input_space_loss(state: EffectiveState, data: ClassificationData) -> torch.Tensor:
    """``C~_N`` of Chen 2025 (2.26) through the full composition of truncation maps (0-d tensor).

    ``C~_N = 1/2 weighted_l2(y_L, labels, ỹ)`` (:func:`collapselab.core.cost.weighted_l2`).
    """
    check_flow_data(state, data, "input_space_loss")
    return 0.5 * weighted_l2(forward_pass(state, data.X).ys[-1], data.labels, pulled_back_labels(state, data.Y))
