"""Moment form of the cluster-separated flow: Chen 2025 Defs 3.3-3.4, Cor 3.5, **corrected** (docs/theory/effective-flow.md; erratum E2, docs/theory/errata.md).

Sectors ``R^Q_s = {z : s_a z_a > 0}`` for sign patterns ``s`` (a zero coordinate counts as
negative, ``h(0) = 0``); ``H_s`` is constant on each. Sector-constrained moments of the
pushed-forward cluster law ``mu~``: ``m_{0,s} = mu~(R^Q_s)``, ``m_{1,s} = int_s z mu~``, and
``m_{2,s} = int_s z z^T mu~``, which the corrected rotation needs. Then (3.39)-(3.41), corrected:

* ``J0perp = sum_s m_{0,s} H_s^perp`` and ``d(beta + ỹ)/ds = -R^T J0perp R (beta + ỹ)``;
* ``Omega = sum_{s mixed} [H_s, m_{2,s}/2 - (m_{1,s} v^T + v m_{1,s}^T)/2]``.

The paper's remark that the flow depends on the data only through moments of order 0 and 1
holds for ``beta`` but **not** for ``R``: the second moments in the mixed sectors enter.
Free moments (3.32): ``m_0 = 1``, ``m_1 = int x mu``, ``m_2 = int x x^T mu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ParameterError, ShapeError
from ._field import EffectiveField
from ._separated import SeparatedFlow
from ._state import EffectiveState

__all__ = ["SectorMoments", "sector_moments", "free_moments", "moment_field", "moment_loss", "MomentFlow"]


@dataclass(frozen=True)
class SectorMoments:
    """Moments of one law per occupied sector: ``positive (S, Q)`` bool (``h`` of the sector),
    ``m0 (S,)``, ``m1 (S, Q)``, ``m2 (S, Q, Q)``."""

    positive: torch.Tensor
    m0: torch.Tensor
    m1: torch.Tensor
    m2: torch.Tensor

    @property
    def mixed(self) -> torch.Tensor:
        """``(S,)`` bool: sectors that are neither ``R^Q_+`` nor ``R^Q_-``."""
        return self.positive.any(1) & ~self.positive.all(1)


def sector_moments(Z: torch.Tensor, weights: torch.Tensor | None = None, positive: torch.Tensor | None = None) -> SectorMoments:
    """Sector moments of the law ``sum_i w_i delta_{z_i}`` (``Z (n, Q)``, ``weights (n,)``, default ``1/n``).

    ``positive (n, Q)`` bool assigns points to sectors instead of ``Z > 0`` (frozen patterns).
    Only occupied sectors are listed (at most ``n``, never ``2^Q``); one ``index_add`` per order.
    """
    if Z.ndim != 2:
        raise ShapeError(f"sector_moments: Z must be (n, Q), got {tuple(Z.shape)}")
    n, Q = Z.shape
    if Q > 62:
        raise ParameterError(f"sector_moments: sign patterns are packed in int64, so Q must be <= 62, got {Q}")
    w = torch.full((n,), 1.0 / n, dtype=Z.dtype, device=Z.device) if weights is None else weights
    pos = Z > 0 if positive is None else positive
    bits = 2 ** torch.arange(Q, device=Z.device, dtype=torch.int64)
    keys, inv = torch.unique((pos.to(torch.int64) * bits).sum(1), return_inverse=True)
    S = keys.shape[0]
    m0 = torch.zeros(S, dtype=Z.dtype, device=Z.device).index_add_(0, inv, w)
    m1 = torch.zeros(S, Q, dtype=Z.dtype, device=Z.device).index_add_(0, inv, w.unsqueeze(1) * Z)
    m2 = torch.zeros(S, Q, Q, dtype=Z.dtype, device=Z.device).index_add_(0, inv, w[:, None, None] * Z.unsqueeze(2) * Z.unsqueeze(1))
    positive = ((keys.unsqueeze(1) & bits) != 0)
    return SectorMoments(positive, m0, m1, m2)


def free_moments(X: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Free moments ``(m_0, m_1, m_2)`` of ``sum_i w_i delta_{x_i}`` (Chen 2025 (3.32); ``m_2`` added)."""
    n = X.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=X.dtype, device=X.device) if weights is None else weights
    return w.sum(), w @ X, (w.unsqueeze(1) * X).T @ X


def moment_field(m: SectorMoments, v: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dbeta (Q,), Omega (Q, Q))`` of one layer from its sector moments (Cor 3.5, corrected).

    ``v = R (beta + ỹ)``; ``dbeta = -R^T J0perp v``. ``[H_s, A]_{ab} = (h_a - h_b) A_{ab}``.
    """
    h = m.positive.to(v.dtype)
    jperp = (m.m0.unsqueeze(1) * (1 - h)).sum(0)
    A = 0.5 * m.m2 - 0.5 * (m.m1.unsqueeze(2) * v + v.unsqueeze(1) * m.m1.unsqueeze(1))
    comm = (h.unsqueeze(2) - h.unsqueeze(1)) * A  # vanishes on R^Q_+ and R^Q_-
    return -(R.T @ (jperp * v)), comm.sum(0)


def moment_loss(m: SectorMoments, v: torch.Tensor) -> torch.Tensor:
    """``1/2 int mu~ |sigma(z) - v|^2 = 1/2 sum_s [tr(H_s m_{2,s}) - 2 v^T H_s m_{1,s} + m_{0,s} |v|^2]``."""
    h = m.positive.to(v.dtype)
    diag = torch.diagonal(m.m2, dim1=1, dim2=2)
    return 0.5 * ((h * diag).sum() - 2 * (h * m.m1 * v).sum() + m.m0.sum() * v.dot(v))


class MomentFlow(SeparatedFlow):
    """The cluster-separated flow evaluated through sector moments (Cor 3.5, corrected).

    Same assumptions, checks and result as :class:`SeparatedFlow` (which it extends); it
    exists to show (and test) that the field depends on the data only through the moments
    of orders 0, 1, 2 in the sectors. Per cluster it groups points by sector (``O(N Q^2)``).
    """

    def field(self, state: EffectiveState, pattern: torch.Tensor | None = None) -> EffectiveField:
        """The right-hand side from the sector moments (same as :meth:`SeparatedFlow.field` up to rounding)."""
        z, v = self._frame(state)
        parts = [moment_field(m, v[l], state.R[l]) for l, m in enumerate(self._moments(z, pattern))]
        omega = torch.stack([p[1] for p in parts])
        return EffectiveField(torch.stack([p[0] for p in parts]), torch.zeros_like(omega) if self.frozen_rotation else omega)

    def moments(self, state: EffectiveState, pattern: torch.Tensor | None = None) -> list[SectorMoments]:
        """Sector moments of every cluster in its own layer's frame (sectors from ``pattern`` if given)."""
        return self._moments(self.pre_activations(state), pattern)

    def _moments(self, z: torch.Tensor, pattern: torch.Tensor | None) -> list[SectorMoments]:
        mask = self.blocks.mask
        return [sector_moments(z[l][mask[l]], self.blocks.w[l][mask[l]], None if pattern is None else pattern[l][mask[l]]) for l in range(z.shape[0])]


