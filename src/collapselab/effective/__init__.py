"""Effective gradient-flow equations and dynamical truncation of training data (Chen 2025, arXiv:2501.07400).

The network is parametrised by aligned cumulative weights ``(beta^(l), R_l)``, ``R_l`` in
``O(Q)``, at fixed output weights (docs/theory/effective-flow.md), and trained by the gradient flow of the
Euclidean input-space loss without backpropagation. Where the paper (slides) is wrong this
package follows the corrected statement (docs/theory/errata.md) and says so: the rotation generator ``Omega`` of Thm 3.2 (erratum
E1), the second moments of Cor 3.5 (E2), and the fully-truncated equilibria of Prop 4.1 (E3).

* state: :class:`EffectiveState`, :func:`make_state`, :func:`state_from_network`, :func:`state_to_network`,
  :func:`orthogonality_errors`;
* right-hand sides: :class:`SeparatedFlow` (Thm 3.2 corrected), :class:`MomentFlow` (Cor 3.5
  corrected), :class:`GeneralFlow` (Thm 5.1), :func:`check_cluster_separated`
  (exact, with a certificate from cluster bounds :func:`separation_bounds`,
  :func:`separation_certificate`);
* integration on ``O(Q)`` with events: :func:`integrate`, :class:`EventKind`;
* exact bias flow at fixed ``R`` (§4.3): :func:`exact_bias_flow`;
* standard loss (§8, §9): :func:`integrate_collapsed`, :func:`balancedness`, :func:`clustered_closed_form`;
* equilibria (Prop 4.1 + E3): :func:`classify_equilibrium`.
"""

from ._bias import ExactBiasFlow, PiecewiseExponential, exact_bias_coordinate, exact_bias_flow
from ._equilibrium import EquilibriumKind, classify_equilibrium
from ._field import EffectiveField, Flow
from ._forward import ForwardPass, forward_pass, input_space_loss, sample_weights
from ._general import GeneralFlow
from ._integrate import Event, EventKind, Trajectory, event_indicators, integrate, lie_step
from ._moments import MomentFlow, SectorMoments, free_moments, moment_field, moment_loss, sector_moments
from ._separated import ClusterBlocks, SeparatedFlow, check_cluster_separated, separation_bounds, separation_certificate, separation_violations
from ._standard import (
    ClusteredSolution,
    CollapsedSolution,
    balancedness,
    check_untruncated,
    clustered_closed_form,
    collapsed_field,
    collapsed_initial,
    collapsed_loss,
    integrate_collapsed,
    spectral_gap,
)
from ._state import EffectiveState, make_state, orthogonality_errors, pulled_back_labels, random_state, state_from_network, state_to_network

__all__ = [
    "EffectiveState",
    "make_state",
    "orthogonality_errors",
    "random_state",
    "pulled_back_labels",
    "state_from_network",
    "state_to_network",
    "EffectiveField",
    "Flow",
    "ForwardPass",
    "forward_pass",
    "input_space_loss",
    "sample_weights",
    "ClusterBlocks",
    "SeparatedFlow",
    "separation_bounds",
    "separation_certificate",
    "separation_violations",
    "check_cluster_separated",
    "SectorMoments",
    "sector_moments",
    "free_moments",
    "moment_field",
    "moment_loss",
    "MomentFlow",
    "GeneralFlow",
    "EventKind",
    "Event",
    "Trajectory",
    "integrate",
    "lie_step",
    "event_indicators",
    "PiecewiseExponential",
    "exact_bias_coordinate",
    "ExactBiasFlow",
    "exact_bias_flow",
    "collapsed_loss",
    "collapsed_field",
    "balancedness",
    "spectral_gap",
    "collapsed_initial",
    "integrate_collapsed",
    "CollapsedSolution",
    "check_untruncated",
    "ClusteredSolution",
    "clustered_closed_form",
    "EquilibriumKind",
    "classify_equilibrium",
]
