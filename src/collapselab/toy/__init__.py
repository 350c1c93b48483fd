"""Toy models that explain neural collapse: the square-loss dynamics of Rangamani et al. 2021 and the ULPM of Ji et al. 2022.

Conventions (docs/theory/square-loss.md), stated again in every docstring:
``reduction="mean"`` divides a data loss by ``N``, ``"sum"`` does not; the square-loss toy
model's summed loss with ``lam`` equals ``N`` times its mean loss with ``lam / N``; PyTorch
``weight_decay=wd`` on a mean loss is the paper's ``lam = wd / 2`` (penalty ``lam |W|^2``).

- :mod:`.normalisation`: ``rho``, ``(V_k, rho_k)`` of any Linear/Conv/BatchNorm module; the
  margins and their moments are :mod:`collapselab.collapse`'s (re-exported here).
- :mod:`.square_loss`: closed forms (``rho_eq``, Lemmas 2, 9, 10, the exact GD recursion).
- :mod:`.dynamics`: normalised (Lagrange) and unnormalised toy-model gradient flows.
- :mod:`.ridge`: Theorem 3 at the last layer (with its bias correction) and the MSE
  unconstrained-features optimum.
- :mod:`.ulpm`: the unconstrained layer-peeled model with cross-entropy.
"""

from ..collapse import MarginStats, margin_stats, margins  # a measurement (collapselab.collapse), re-exported for the square-loss theory
from . import ulpm
from ._common import lambda_from_weight_decay
from .normalisation import (
    BATCH_NORMS,
    WEIGHT_LAYERS,
    Normalisation,
    NormalisedLayers,
    normalise_layers,
    normalised_parametrisation,
    radial_derivatives,
    rho,
    scale_invariant_layers,
)
from .ridge import Theorem3Check, UFMOptimum, collapsed_ridge, theorem3_check, ufm_mse_loss, ufm_mse_optimum, ufm_mse_point
from .square_loss import (
    Lemma2Case,
    equal_growth,
    lemma2_equal_margins,
    lemma2_stuck_points,
    lemma9_loss,
    mean_lambda,
    recursion_factor,
    recursion_regime,
    rho_eq,
    rho_flow_solution,
    rho_recursion,
    toy_loss,
    unnormalised_rho_rate,
)
from .dynamics import ToyTrajectory, bias_free_forward, output_gradients, toy_flow, unnormalised_flow
from .ulpm import (
    FIGURE_QUANTITIES,
    SphereSearch,
    ULPMTrajectory,
    alignment,
    approximate_kkt,
    collapsed_point,
    example31_escape_gain,
    example31_escape_point,
    example31_escape_threshold,
    example31_gradient_coefficient,
    example31_loss,
    example31_point,
    figure_quantities,
    log_spaced_steps,
    minimise_on_sphere,
    sphere_descent,
    nc_margin,
    nc_margin_bound,
    sphere_minimum,
    ulpm_descent,
    ulpm_diagnostics,
    ulpm_flow,
    ulpm_gradients,
    ulpm_labels,
    ulpm_loss,
    ulpm_step,
    ulpm_targets,
)

__all__ = [
    "BATCH_NORMS",
    "WEIGHT_LAYERS",
    "Lemma2Case",
    "MarginStats",
    "Normalisation",
    "NormalisedLayers",
    "Theorem3Check",
    "ToyTrajectory",
    "UFMOptimum",
    "bias_free_forward",
    "collapsed_ridge",
    "equal_growth",
    "lambda_from_weight_decay",
    "lemma2_equal_margins",
    "lemma2_stuck_points",
    "lemma9_loss",
    "margin_stats",
    "margins",
    "mean_lambda",
    "normalise_layers",
    "normalised_parametrisation",
    "output_gradients",
    "radial_derivatives",
    "recursion_factor",
    "recursion_regime",
    "rho",
    "rho_eq",
    "rho_flow_solution",
    "rho_recursion",
    "scale_invariant_layers",
    "theorem3_check",
    "toy_flow",
    "toy_loss",
    "ufm_mse_loss",
    "ufm_mse_optimum",
    "ufm_mse_point",
    "ulpm",
    "unnormalised_flow",
    "unnormalised_rho_rate",
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
