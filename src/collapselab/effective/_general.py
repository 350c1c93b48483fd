"""General effective flow without cluster separation: Chen 2025 Thm 5.1 (docs/theory/effective-flow.md).

For ``x`` in cluster ``j``: ``y_0 = x``, ``z_k = R_k (y_{k-1} + beta^(k))``, ``y_k = tau^(k)(y_{k-1})``,
``P_k = R_k^T H(z_k) R_k`` (the Jacobian of ``tau^(k)``), residual ``e = y_L - ỹ_j``, and the
back-propagated residuals ``g_L = e``, ``g_{k-1} = P_k g_k`` (so ``g_k = Pi_k^T e`` with
``Pi_k = P_L ... P_{k+1}``). With ``ẽ_k = R_k g_k``:

* (5.4) ``d beta^(k)/ds = sum_j 1/N_j sum_i R_k^T H^perp(z_k) ẽ_k``;
* (5.5)-(5.7) ``dR_k/ds = -Omega_k R_k``,
  ``Omega_k = Pi_A( sum_j 1/N_j sum_i [sigma(z_k) ẽ_k^T + H(z_k) ẽ_k z_k^T] )``.

These are exact chain-rule formulas for the gradient of the input-space loss on
``(R^Q x O(Q))^L``; the backward sweep uses only the activation patterns, no autograd.
Under cluster separation (L = Q) they reduce to :class:`SeparatedFlow` (Chen 2025 (5.11)-(5.13); docs/theory/effective-flow.md).
"""

from __future__ import annotations

import torch

from ..core.data import ClassificationData
from ._field import EffectiveField
from ._forward import check_flow_data, forward_pass, input_space_loss, sample_weights
from ._state import EffectiveState, pulled_back_labels

__all__ = ["GeneralFlow"]


class GeneralFlow:
    """The multi-layer effective flow of Thm 5.1 for any number ``L`` of layers of width ``Q``.

    ``data``: inputs in ``R^Q`` and targets ``Y (Q, Q)``. Cost per field evaluation:
    ``O(L N Q^2)`` (one forward and one backward sweep).
    """

    def __init__(self, data: ClassificationData) -> None:
        self.data = data
        self.weights = sample_weights(data)

    def validate(self, state: EffectiveState) -> None:
        """Raise ShapeError unless the data live in ``R^Q`` of the state (no other assumption to check)."""
        check_flow_data(state, self.data, "GeneralFlow")

    def pattern(self, state: EffectiveState) -> torch.Tensor:
        """``(L, N, Q)`` bool activation pattern ``z_l > 0`` of every point at every layer."""
        return forward_pass(state, self.data.X).zs > 0

    def field(self, state: EffectiveState, pattern: torch.Tensor | None = None) -> EffectiveField:
        """The right-hand side; a given ``pattern`` replaces ``h(z_l)`` everywhere (forward and backward)."""
        fp = forward_pass(state, self.data.X, pattern)
        g = fp.ys[-1] - pulled_back_labels(state, self.data.Y)[self.data.labels]
        w = self.weights.unsqueeze(1)
        dbeta, omega = [], []
        for k in range(state.depth - 1, -1, -1):
            R, z = state.R[k], fp.zs[k]
            h = (z > 0 if pattern is None else pattern[k]).to(z.dtype)
            et = g @ R.T  # ẽ_k = R_k g_k, rows
            dbeta.append(((w * (1 - h) * et).sum(0)) @ R)
            G = (h * z * w).T @ et + (w * h * et).T @ z
            omega.append(0.5 * (G - G.T))
            g = (h * et) @ R  # g_{k-1} = P_k g_k
        return EffectiveField(torch.stack(dbeta[::-1]), torch.stack(omega[::-1]))

    def loss(self, state: EffectiveState) -> torch.Tensor:
        """The input-space loss ``C~_N`` (Chen 2025 (2.26)), :func:`input_space_loss`."""
        return input_space_loss(state, self.data)
