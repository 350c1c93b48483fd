"""The right-hand side of the effective flow and the protocol every flow follows.

The effective flow is the gradient flow of the Euclidean input-space loss on the manifold
``(R^Q x O(Q))^L`` (Chen 2025 Thm 3.2 / Thm 5.1, docs/theory/effective-flow.md):
``d beta^(l)/ds = dbeta[l]`` and ``d R_l/ds = -Omega_l R_l`` with ``Omega_l`` antisymmetric.
Since it is a gradient flow, ``dC/ds = -(sum_l |dbeta_l|^2 + ||Omega_l||_F^2)`` (docs/theory/effective-flow.md
(3.27)-(3.29)), which :meth:`EffectiveField.dissipation` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ._state import EffectiveState

__all__ = ["EffectiveField", "Flow"]


@dataclass(frozen=True)
class EffectiveField:
    """``dbeta (L, Q)`` and antisymmetric ``omega (L, Q, Q)``: ``beta' = dbeta``, ``R' = -omega R``."""

    dbeta: torch.Tensor
    omega: torch.Tensor

    def dissipation(self) -> torch.Tensor:
        """``dC/ds = -(sum_l |dbeta_l|^2 + ||Omega_l||_F^2)`` along the flow (a 0-d tensor)."""
        return -(self.dbeta.square().sum() + self.omega.square().sum())


class Flow(Protocol):
    """What :func:`collapselab.effective.integrate` needs from a flow."""

    def pattern(self, state: EffectiveState) -> torch.Tensor:
        """The activation pattern (bool tensor) on which the field depends discontinuously."""

    def field(self, state: EffectiveState, pattern: torch.Tensor | None = None) -> EffectiveField:
        """The right-hand side at ``state`` (with ``pattern`` frozen if given)."""

    def loss(self, state: EffectiveState) -> torch.Tensor:
        """The loss the flow descends (0-d tensor)."""

    def validate(self, state: EffectiveState) -> None:
        """Raise if the flow's assumptions fail at ``state`` (called by the integrator)."""
