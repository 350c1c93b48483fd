"""Gradient flows in parameter and output space, and the adapted flow as an optimizer.

Chen & Munoz Ewald 2024 (arXiv:2408.01517) and Chen, arXiv:2311.15487, as recovered
in docs/theory/adapted-flow.md (with errata E8, E9, docs/theory/errata.md). For a model ``f(theta, X)``, the stacked outputs
``x[theta]`` in ``R^{QN}``, the Jacobian ``D`` (``QN x K``) and the cost
``C = (1/2N)|x - y|^2`` (``core.cost.mean_l2``):

* :mod:`~collapselab.flows.jacobian`: :class:`OutputMap` (dense ``D``, ``jvp``, ``vjp``, NTK Gram);
* :mod:`~collapselab.flows.gram`: :func:`relu_gram`, ``D D^T`` of a ReLU MLP without forming ``D``;
* :mod:`~collapselab.flows.relu_products`: ``D v``, ``D^T u`` of a ReLU MLP without autograd;
* :mod:`~collapselab.flows.linalg`: rank, pseudo-inverse and projector of the Gram; Cholesky
  solves, float32 factorisations refined in float64;
* :mod:`~collapselab.flows.fields`: standard, adapted, homotopy and prescribed-path fields;
* :mod:`~collapselab.flows.interpolation`: ``t = 1 - e^{-s/N}``, the corrected Prop 2.5;
* :mod:`~collapselab.flows.integrate`: explicit Euler, scipy's and torchdiffeq's adaptive solvers -> :class:`Trajectory`;
* :mod:`~collapselab.flows.optimizer`: :class:`AdaptedFlow` / :func:`fit` for any ``nn.Module``.
"""

from .fields import (
    FIELDS,
    AdaptedField,
    FieldEval,
    HomotopyField,
    PrescribedPath,
    StandardField,
    VectorField,
    adapted_field,
    evaluate_field,
    make_field,
    parameter_form_adapted,
)
from .gram import relu_gram
from .integrate import METHODS, RANK_LOSS_POLICIES, integrate
from .interpolation import deviation_from_interpolation, deviation_rate, linear_interpolation, reparametrised_time
from .jacobian import GRAM_METHODS, OutputMap, mlp_widths
from .linalg import GramSolve, LowPrecisionCholesky, cg_solve, cholesky_solve, default_rtol, least_squares_solve, refined_pullback
from .optimizer import LINALG, PRECISIONS, AdaptedFlow, adapted_step, choose_linalg, fit, stacked_targets
from .relu_products import relu_jvp, relu_vjp
from .trajectory import Status, Trajectory, TrajectoryRecorder

__all__ = [
    "FIELDS",
    "GRAM_METHODS",
    "LINALG",
    "METHODS",
    "PRECISIONS",
    "RANK_LOSS_POLICIES",
    "AdaptedField",
    "AdaptedFlow",
    "FieldEval",
    "GramSolve",
    "HomotopyField",
    "LowPrecisionCholesky",
    "OutputMap",
    "PrescribedPath",
    "StandardField",
    "Status",
    "Trajectory",
    "TrajectoryRecorder",
    "VectorField",
    "adapted_field",
    "adapted_step",
    "cg_solve",
    "cholesky_solve",
    "choose_linalg",
    "default_rtol",
    "deviation_from_interpolation",
    "deviation_rate",
    "evaluate_field",
    "fit",
    "integrate",
    "linear_interpolation",
    "make_field",
    "least_squares_solve",
    "mlp_widths",
    "parameter_form_adapted",
    "refined_pullback",
    "relu_gram",
    "relu_jvp",
    "relu_vjp",
    "reparametrised_time",
    "stacked_targets",
]
