"""The result of an explicit construction: a real ``nn.Module`` plus its explanation.

Every construction of :mod:`collapselab.construct` returns a :class:`ConstructedNetwork`:

* ``module``: a :class:`~collapselab.core.network.ReLUNet` (plain PyTorch; ``module(X)``
  reproduces ``cost``);
* ``cumulative``: the cumulative parameters ``[(W^(1), b^(1)), ..., (W^(L+1), b^(L+1))]``
  (CE23 (2.43),(2.45); docs/theory/notation.md);
* ``layers``: per hidden layer a :class:`LayerExplanation` (the class it collapses, the
  point it collapses it to, ``mu``, the cone angle and axis);
* the metric decision rule (CE23 (2.61)/(2.62)):
  ``j(x) = argmin_j |G (tau(x) - a_j)|`` with ``tau`` the composed truncation map of the
  hidden layers, ``a_j`` the class anchors (collapse points) and ``G`` the metric matrix
  (``Y (X_0^red[mu])^{-1}`` for CE23). :meth:`ConstructedNetwork.classify` applies it.

Shapes: rows are points. ``anchors`` is ``(Q, M)``, ``metric`` is ``(P, M)`` (``P`` the
output dimension, the number of columns of ``Y``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.cost import mean_l2, weighted_l2
from ..core.geometry import truncation_sequence
from ..core.network import ReLUNet, num_parameters
from ..core.errors import ParameterError
from ..core.validation import check_matrix

__all__ = ["LayerExplanation", "ConstructedNetwork", "ce23_cost", "ce24_cost", "check_output_dtype"]

OUTPUT_DTYPES = (torch.float64, torch.float32)


def check_output_dtype(dtype: Any, where: str) -> torch.dtype:
    """The ``dtype`` argument of a construction: float64 or float32 (the dtype of the returned
    network; the construction itself always runs in float64)."""
    if dtype not in OUTPUT_DTYPES:
        raise ParameterError(f"{where}: dtype must be torch.float64 or torch.float32 (the returned network's dtype), got {dtype!r}")
    return dtype


def ce23_cost(outputs: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """CE23's cost, a norm (not squared): ``C_N = (sum_j 1/N_j sum_i |x_{j,i} - y_j|^2)^{1/2}`` (CE23 (2.35)/(2.36)).

    outputs: ``(N, P)``; labels: ``(N,)``; Y: ``(Q, P)``.
    """
    return weighted_l2(outputs, labels, Y).sqrt()


def ce24_cost(outputs: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """CE24's cost, unweighted and squared: ``C = 1/2 |X^(L) - Y^ext|_F^2`` (CE24 (2.11)).

    outputs: ``(N, P)``; labels: ``(N,)``; Y: ``(Q, P)``.
    """
    return outputs.shape[0] * mean_l2(outputs, labels, Y)  # N (1/2N)|x - y|^2


def _vector(t: torch.Tensor | None) -> list[float] | None:
    return None if t is None else [float(v) for v in t.detach().cpu().reshape(-1)]


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def _finite(v: float) -> float | None:
    """A JSON number, or null for an infinite interval end."""
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class LayerExplanation:
    """What one hidden layer does (CE23 Thm 2.3 step 3, CE24 Thm 5.2 step 5).

    * ``collapses_class``: the class whose data this layer maps to a single point (``None``: the
      layer acts as the identity on the training data, e.g. the extra layers for ``L > Q``
      or a class kept by the local-minimum families of CE23 Thms 2.4/2.5).
    * ``collapse_point``: ``(M,)`` the point ``p_l`` the class is collapsed to (cone apex).
    * ``mu``: the position parameter of the apex: CE23's signed distance ``mu_l`` (``p_l = x̄_l - mu_l f_l``),
      CE24 Thm 5.2's ``mu_l`` in ``(0, 1)`` (``p_l = x̄_l + mu_l (x̄ - x̄_l)``), CE24 Prop 4.1's
      ``mu_l`` (``p_l = x̄_l + mu_l f_l``).
    * ``cone_angle``: the aperture ``theta_l`` of the forward cone ``p_l + C_theta[h_l]``.
    * ``cone_axis``: ``(M,)`` the unit axis ``h_l`` of the forward cone.
    """

    collapses_class: int | None = None
    collapse_point: torch.Tensor | None = None
    mu: float | None = None
    cone_angle: float | None = None
    cone_axis: torch.Tensor | None = None

    def astype(self, dtype: torch.dtype) -> "LayerExplanation":
        """This explanation with its points in ``dtype``."""
        return dataclasses.replace(self, collapse_point=_cast(self.collapse_point, dtype), cone_axis=_cast(self.cone_axis, dtype))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``collapses_class``, ``collapse_point``, ``mu``, ``cone_angle``, ``cone_axis``."""
        return {
            "collapses_class": self.collapses_class,
            "collapse_point": _vector(self.collapse_point),
            "mu": None if self.mu is None else float(self.mu),
            "cone_angle": None if self.cone_angle is None else float(self.cone_angle),
            "cone_axis": _vector(self.cone_axis),
        }


@dataclass(frozen=True)
class ConstructedNetwork:
    """An explicitly constructed ReLU network and the explanation of every layer.

    * ``kind``: ``"clustered"`` (CE23 Thm 2.3 and its local families), ``"clustered-wide"``
      (CE24 Prop 4.1 at constant width), ``"sequential"`` (CE24 Thm 5.2) or ``"shallow"``.
    * ``module``: the network; ``module(X)`` gives ``(N, P)`` outputs.
    * ``cumulative``: ``[(W^(l), b^(l))]`` for ``l = 1..L+1`` (cumulative weights and biases).
    * ``layers``: one :class:`LayerExplanation` per hidden layer (``L`` entries).
    * ``anchors``: ``(Q, M)`` the points ``a_j`` the decision rule measures from (collapse points).
    * ``metric``: ``(P, M)`` the metric matrix ``G`` of the decision rule (CE23 (2.61)).
    * ``cost``: the training cost on the data, as defined by ``cost_definition``, computed from the
      construction's verified geometry (e.g. every class reaches the output at its collapse
      point); evaluating ``module`` on the data with :func:`ce23_cost`/:func:`ce24_cost`
      reproduces it up to rounding (an independent check the tests make).
    * ``cost_definition``: which cost (``"CE23 (2.35): L2_N norm"`` or ``"CE24 (2.11): 1/2 squared Frobenius"``).
    * ``delta_P``: ``sup_{j,i} |(X_0^red)^+ Δx_{0,j,i}|``: the noise of the inputs in barycentric
      coordinates (CE23 (2.56) with ``tau = id``; the shallow paper's ``delta_P``).
    * ``bound``: a proven upper bound on ``cost`` (shallow: ``sqrt(Q) |Y|_op delta_P``), else ``None``.
    * ``descriptive_parameters``: how many numbers describe the network geometrically
      (CE24 Thm 5.2: ``Q(M+2)``: per hidden layer a cone angle, an axis and a position).
    * ``order``: the class handled by hidden layers ``1..Q`` in turn.
    * ``delta``: ``sup_{j,i} |Δx_{0,j,i}|``, the cluster radius (CE23 (2.14)); clustered kinds only.
    * ``theta_interval``: ``(lo, pi)``, the open interval of admissible apertures ``theta_*`` (CE23
      (4.24)/(4.25): ``lo = max_j theta_{*,j}``; CE24 Prop 4.1: ``lo = max(max_j theta_{*,j}, pi/2)``);
      clustered kinds only.
    * ``mu_intervals``: per class ``j`` the open interval of admissible ``mu_j`` at this network's
      aperture: CE23 (4.26) ``(-D_j, -2 delta sqrt(Q))`` for a collapsed class (from
      :func:`~collapselab.construct.admissible_mu`) and ``I_1 = (2 delta sqrt(Q), inf)`` for a kept
      one (Thms 2.4/2.5); CE24 Prop 4.1 ``(2 delta, 3 delta)``; ``None`` for the other kinds.

    Precision: every construction runs in float64 (float32 inputs are upcast exactly, so no datum
    is rounded); ``dtype=torch.float32`` rounds the finished network's parameters once. ``cost``,
    ``delta_P``, ``bound`` and the intervals are the float64 construction's; a float32 network
    reproduces ``cost`` to float32 rounding. :meth:`astype` casts a result.
    """

    kind: str
    module: ReLUNet
    cumulative: list[tuple[torch.Tensor, torch.Tensor]]
    layers: list[LayerExplanation]
    anchors: torch.Tensor
    metric: torch.Tensor
    cost: float
    cost_definition: str
    delta_P: float
    descriptive_parameters: int
    order: tuple[int, ...]
    bound: float | None = None
    delta: float | None = None
    theta_interval: tuple[float, float] | None = None
    mu_intervals: tuple[tuple[float, float], ...] | None = None

    @property
    def num_parameters(self) -> int:
        """``K``, the number of weights and biases of ``module``."""
        return num_parameters(self.module.widths)

    def astype(self, dtype: torch.dtype) -> "ConstructedNetwork":
        """This network with its module, parameters, anchors, metric and layer points in ``dtype``
        (a copy; the float64 construction's numbers ``cost``, ``delta_P``, ... are kept)."""
        if dtype == self.metric.dtype:
            return self
        return dataclasses.replace(
            self,
            module=copy.deepcopy(self.module).to(dtype),
            cumulative=[(W.to(dtype), b.to(dtype)) for W, b in self.cumulative],
            layers=[layer.astype(dtype) for layer in self.layers],
            anchors=self.anchors.to(dtype),
            metric=self.metric.to(dtype),
        )

    def truncate(self, X: Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
        """``tau(x)``: the composed truncation maps of the hidden layers (CE23 Prop 2.2), ``(N, M)``.

        The composition identity gives ``x^(L+1) = W^(L+1) tau(x) + b^(L+1)``.
        """
        W1 = self.cumulative[0][0]
        Xt = check_matrix(X, "X", "ConstructedNetwork.truncate", shape=(None, W1.shape[1]), dtype=W1.dtype, device=W1.device)
        return truncation_sequence(Xt, self.cumulative[:-1])[-1]

    def classify(self, X: Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
        """The metric decision rule (CE23 (2.61)/(2.62)): ``j(x) = argmin_j |G (tau(x) - a_j)|``, ``(N,)`` int64.

        For the zero-loss constructions ``G a_j + b^(L+1) = y_j`` and ``G = W^(L+1)``, so the rule
        coincides with ``argmin_j |x^(L+1)(x) - y_j|``; for the local-minimum families it is the
        paper's metric ``|Y (X_0^red[mu])^{-1} (x - x')|`` with the truncated reduced matrix.
        """
        tau = self.truncate(X)
        z = tau @ self.metric.T  # (N, P)
        a = self.anchors @ self.metric.T  # (Q, P)
        return torch.cdist(z, a).argmin(dim=1)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``collapselab construct``: ``kind``, ``cost``, ``cost_definition``, ``layers``,
        ``delta_P``, ``bound``, ``num_parameters``, ``descriptive_parameters``, ``widths``, ``order``,
        ``delta``, ``theta_interval``, ``mu_intervals`` (an infinite end is ``null``)."""
        return {
            "kind": self.kind,
            "cost": float(self.cost),
            "cost_definition": self.cost_definition,
            "layers": [layer.as_dict() for layer in self.layers],
            "delta_P": float(self.delta_P),
            "bound": None if self.bound is None else float(self.bound),
            "num_parameters": self.num_parameters,
            "descriptive_parameters": int(self.descriptive_parameters),
            "widths": list(self.module.widths),
            "order": list(self.order),
            "delta": None if self.delta is None else float(self.delta),
            "theta_interval": None if self.theta_interval is None else [_finite(v) for v in self.theta_interval],
            "mu_intervals": None if self.mu_intervals is None else [[_finite(a), _finite(b)] for a, b in self.mu_intervals],
        }
