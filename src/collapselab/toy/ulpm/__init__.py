"""The unconstrained layer-peeled model (ULPM) with cross-entropy (Ji et al. 2022; docs/theory/ulpm.md).

Loss and closed-form gradients, gradient descent (optionally noisy) and gradient flow,
trajectory diagnostics (the Figure 2 quantities, NC margin and Lemma 3.1's bound, the
alignment beta with its sign fixed, approximate KKT values), Theorem 3.3's optimum on a
sphere and Example 3.1 with its corrected gradient coefficient and escape family.

Every function whose value depends on how the loss is reduced takes ``reduction`` as a required
keyword: ``"sum"`` is eq. 4 as printed (Example 3.1 and Theorem 3.3 state it), ``"mean"``
divides by ``N = n K`` (the paper's lr-5 descent converges only with it). There is no default,
so one point has one loss whichever function computes it:
``ulpm_loss(*example31_point(c), reduction=r) == example31_loss(c, reduction=r)``.
"""

from ._descent import ULPMTrajectory, log_spaced_steps, ulpm_descent, ulpm_flow, ulpm_step
from ._diagnostics import FIGURE_QUANTITIES, alignment, approximate_kkt, figure_quantities, nc_margin, nc_margin_bound, ulpm_diagnostics
from ._landscape import (
    SphereSearch,
    collapsed_point,
    example31_escape_gain,
    example31_escape_point,
    example31_escape_threshold,
    example31_gradient_coefficient,
    example31_loss,
    example31_point,
    minimise_on_sphere,
    sphere_descent,
    sphere_minimum,
)
from ._loss import ulpm_gradients, ulpm_labels, ulpm_loss, ulpm_targets

__all__ = [
    "FIGURE_QUANTITIES",
    "SphereSearch",
    "ULPMTrajectory",
    "alignment",
    "approximate_kkt",
    "collapsed_point",
    "example31_escape_gain",
    "example31_escape_point",
    "example31_escape_threshold",
    "example31_gradient_coefficient",
    "example31_loss",
    "example31_point",
    "figure_quantities",
    "log_spaced_steps",
    "minimise_on_sphere",
    "sphere_descent",
    "nc_margin",
    "nc_margin_bound",
    "sphere_minimum",
    "ulpm_descent",
    "ulpm_diagnostics",
    "ulpm_flow",
    "ulpm_gradients",
    "ulpm_labels",
    "ulpm_loss",
    "ulpm_step",
    "ulpm_targets",
]
