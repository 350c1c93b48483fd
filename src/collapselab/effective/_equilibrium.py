"""Equilibria of the cluster-separated flow: Chen 2025 Prop 4.1 with the caveat of erratum E3 (docs/theory/errata.md).

* untruncated (support of ``mu~_l`` inside the open ``R^Q_+``): ``J0perp = 0``, ``Omega = 0``: an equilibrium;
* fully truncated (support in the closed ``R^Q_-``) **and** ``beta = -ỹ``: an equilibrium;
* fully truncated with ``beta != -ỹ``: **not** an equilibrium (E3): ``R`` is frozen and
  ``beta + ỹ`` decays like ``e^{-s}``; the paper's (4.5) may omit this condition;
* anything else (partially truncated cluster): neither.

The open/closed choice follows ``h(0) = 0``: a point on a wall of ``R^Q_+`` is already truncated there.
"""

from __future__ import annotations

import enum

from ..core.data import ClassificationData
from ._separated import SeparatedFlow, check_cluster_separated
from ._state import EffectiveState, pulled_back_labels

__all__ = ["EquilibriumKind", "classify_equilibrium"]


class EquilibriumKind(str, enum.Enum):
    """What Prop 4.1 (corrected) says about one cluster and its layer."""

    UNTRUNCATED = "untruncated"
    FULLY_TRUNCATED_AT_LABEL = "fully_truncated_at_label"
    FULLY_TRUNCATED_DECAYING = "fully_truncated_decaying"
    NEITHER = "neither"

    @property
    def is_equilibrium(self) -> bool:
        """True where the field vanishes (Prop 4.1 with erratum E3), that is untruncated, or fully truncated at ``beta = -ỹ``."""
        return self in (EquilibriumKind.UNTRUNCATED, EquilibriumKind.FULLY_TRUNCATED_AT_LABEL)


def classify_equilibrium(state: EffectiveState, data: ClassificationData, *, atol: float = 1e-10) -> list[EquilibriumKind]:
    """One :class:`EquilibriumKind` per cluster ``l`` (with its layer ``l``); ``beta = -ỹ`` means ``|beta + ỹ| <= atol (1 + |ỹ|)``.

    Raises AssumptionError if the truncations are not cluster separated (Prop 4.1's setting).
    """
    flow = SeparatedFlow(data, check=False)
    check_cluster_separated(state, data, "classify_equilibrium", flow.blocks)
    z, mask = flow.pre_activations(state), flow.blocks.mask
    yt = pulled_back_labels(state, data.Y)
    out = []
    for l in range(state.depth):
        zl = z[l][mask[l]]
        if bool((zl > 0).all()):
            out.append(EquilibriumKind.UNTRUNCATED)
        elif bool((zl <= 0).all()):
            at_label = float((state.beta[l] + yt[l]).norm()) <= atol * (1 + float(yt[l].norm()))
            out.append(EquilibriumKind.FULLY_TRUNCATED_AT_LABEL if at_label else EquilibriumKind.FULLY_TRUNCATED_DECAYING)
        else:
            out.append(EquilibriumKind.NEITHER)
    return out

