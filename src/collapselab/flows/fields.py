"""Vector fields in parameter space and the output-space flows they induce.

Chen & Munoz Ewald 2024 §2-3 and docs/theory/adapted-flow.md, with ``C = (1/2N)|x - y|^2`` (``core.cost.mean_l2``),
``g = grad_x C = (x - y)/N``, ``G = D D^T`` and ``P`` the projector onto ``ran G``. Every
field here is ``d theta/ds = D^T phi`` for an output covector ``phi`` (``QN``), so the
induced output velocity is ``dx/ds = G phi`` (Chen & Munoz Ewald 2024 (2.15); the slides' minus sign
in ``dx/ds = -D dtheta/ds`` is a typo, erratum E9, docs/theory/errata.md):

====================  ===========================================  ==========================================
field                 ``d theta / ds``                             ``dx / ds``
====================  ===========================================  ==========================================
``standard``          ``-grad_theta C = -D^T g``                   ``-G g`` (Chen & Munoz Ewald 2024 (2.18))
``adapted``           ``-(D^T D)^+ grad_theta C = -D^T G^+ g``     ``-P g`` (Lemma 2.2, (2.27)-(2.28))
``homotopy(alpha)``   ``-(alpha (D^T D)^+ + (1 - alpha)) D^T g``    ``-(alpha + (1 - alpha) G) P g`` (Thm 2.3)
``prescribed(path)``  ``D^+ xdot(s) = D^T G^+ xdot(s)``             ``P xdot(s)`` (§3.1, (3.2)-(3.5))
====================  ===========================================  ==========================================

The adapted row covers all three cases with one formula: full rank
(``G^+ = G^{-1}``, Thm C'24), rank loss (``psi = G^+ g`` is the minimum-norm solution of
the DAE ``G psi = P g``, Chen & Munoz Ewald 2024 (2.21)-(2.22)) and the underparametrised case
``K < QN`` (``D^T G^+ = (D^T D)^{-1} D^T = D^+`` when ``rank D = K``); all equal ``D^+ g``.
:func:`parameter_form_adapted` computes the underparametrised form ``(D^T D)^+ grad_theta C``
from a dense ``D`` (``K x K``, cheaper when ``K < QN``), a second algorithm for tests.
The slides' ``Pen[D] Pen[D^T] = (D D^T)^+`` must read ``(D^T D)^+`` (erratum E9, docs/theory/errata.md).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.errors import ShapeError, UnknownNameError
from ..core.types import Matrix, Theta, Vector
from ..core.validation import Interval, check_param
from .jacobian import OutputMap
from .linalg import GramSolve

__all__ = [
    "VectorField",
    "StandardField",
    "AdaptedField",
    "HomotopyField",
    "PrescribedPath",
    "FieldEval",
    "evaluate_field",
    "adapted_field",
    "parameter_form_adapted",
    "FIELDS",
    "make_field",
]


class VectorField(ABC):
    """A field ``d theta/ds = D^T phi``; subclasses define ``phi`` and the requested ``dx/ds``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def covector(self, s: float, grad_x: Vector, solve: GramSolve) -> Vector:
        """``phi`` (``QN``) at flow time ``s`` given ``g = grad_x C``."""

    def requested(self, s: float, grad_x: Vector) -> Vector:
        """The output velocity the field aims for; its part outside ``ran G`` is the defect."""
        return -grad_x


@dataclass(frozen=True)
class StandardField(VectorField):
    """``d theta/ds = -grad_theta C`` (Chen & Munoz Ewald 2024 (2.3)): gradient descent in the limit of small steps."""

    name: ClassVar[str] = "standard"

    def covector(self, s: float, grad_x: Vector, solve: GramSolve) -> Vector:
        return -grad_x


@dataclass(frozen=True)
class AdaptedField(VectorField):
    """``d theta/ds = -(D^T D)^+ grad_theta C``; then ``dx/ds = -P grad_x C`` (Chen & Munoz Ewald 2024 Lemma 2.2, (2.27)).

    With full rank the outputs follow ``x(s) = y + e^{-s/N}(x_0 - y)`` and
    ``C(s) = e^{-2s/N} C(0)`` (Thm C'24; docs/theory/adapted-flow.md).
    """

    name: ClassVar[str] = "adapted"

    def covector(self, s: float, grad_x: Vector, solve: GramSolve) -> Vector:
        return -solve.pinv(grad_x)


@dataclass(frozen=True)
class HomotopyField(VectorField):
    """``V_alpha = -(alpha (D^T D)^+ + (1 - alpha) 1) grad_theta C``, ``alpha`` in ``[0, 1]`` (Chen & Munoz Ewald 2024 (2.31)-(2.32)).

    ``alpha = 0`` is the standard field, ``alpha = 1`` the adapted one; all share their
    zeros (Thm 2.3), and ``D V_alpha = -(alpha + (1 - alpha) D D^T) P grad_x C``.
    """

    alpha: float = 0.5
    name: ClassVar[str] = "homotopy"

    def __post_init__(self) -> None:
        check_param("alpha", self.alpha, Interval(float, 0.0, 1.0), "HomotopyField")

    def covector(self, s: float, grad_x: Vector, solve: GramSolve) -> Vector:
        return -(self.alpha * solve.pinv(grad_x) + (1.0 - self.alpha) * grad_x)


@dataclass(frozen=True)
class PrescribedPath(VectorField):
    """Follow a prescribed output path: ``d theta/ds = D(s)^+ xdot(s)`` (Chen & Munoz Ewald 2024 (3.2), (3.5)).

    ``velocity(s)`` returns ``xdot(s)`` (``QN``). The path is realisable only while
    ``xdot(s)`` lies in ``ran D(s)`` (3.3); the reported defect ``|P^perp xdot|`` measures
    the violation, and the realised output velocity is ``P xdot``.
    """

    velocity: Callable[[float], Vector]
    name: ClassVar[str] = "prescribed"

    @classmethod
    def linear(cls, x0: Vector, y: Vector, duration: float) -> "PrescribedPath":
        """The straight line ``x(s) = x0 + (s / T)(y - x0)``, ``s`` in ``[0, T]`` (Chen & Munoz Ewald 2024 (2.51), (3.7))."""
        check_param("duration", duration, Interval(float, 0.0, closed="neither"), "PrescribedPath.linear")
        step = (y - x0) / duration
        return cls(lambda s: step)

    def covector(self, s: float, grad_x: Vector, solve: GramSolve) -> Vector:
        return solve.pinv(self.velocity(s))

    def requested(self, s: float, grad_x: Vector) -> Vector:
        return self.velocity(s)


FIELDS: dict[str, type[VectorField]] = {f.name: f for f in (StandardField, AdaptedField, HomotopyField, PrescribedPath)}
"""Fields by name."""


def make_field(name: str, **kwargs: object) -> VectorField:
    """The field called ``name`` (``alpha=`` for ``homotopy``, ``velocity=`` for ``prescribed``)."""
    if name not in FIELDS:
        raise UnknownNameError(f"unknown flow field {name!r}; known: {', '.join(FIELDS)}")
    return FIELDS[name](**kwargs)


@dataclass(frozen=True)
class FieldEval:
    """A field evaluated at ``(s, theta)``; every vector is a tensor on ``theta``'s device.

    ``velocity`` ``(K,)``: ``d theta/ds``; ``output_velocity`` ``(QN,)``: ``D d theta/ds = G phi``;
    ``outputs`` ``(QN,)``: ``x[theta]``; ``residual``: ``x - y``; ``cost``: ``(1/2N)|x - y|^2``;
    ``solve``: the factorised Gram (rank, projector); ``epsilon``: the trapping quantity
    ``|grad_theta C| / |grad_x C|`` (Prop C'24, docs/theory/adapted-flow.md); ``defect``: ``|P^perp v|``
    for the requested output velocity ``v`` (``-grad_x C``, or ``xdot`` for a prescribed path).
    """

    s: float
    velocity: Theta
    output_velocity: Vector
    outputs: Vector
    residual: Vector
    cost: float
    solve: GramSolve
    epsilon: float
    defect: float
    num_samples: int

    @property
    def rank(self) -> int:
        """Numerical rank of ``D D^T`` (= rank of ``D``)."""
        return self.solve.rank

    @property
    def grad_x(self) -> Vector:
        """``grad_x C = (x - y)/N``."""
        return self.residual / self.num_samples

    def projector(self) -> Matrix:
        """``P``, the orthogonal projector onto ``ran(D D^T)`` (``QN x QN``)."""
        return self.solve.projector()


def evaluate_field(field: VectorField, omap: OutputMap, theta: Theta, y: Vector, *, s: float = 0.0, gram: str = "auto", rtol: float | None = None) -> FieldEval:
    """Evaluate ``field`` at ``theta`` for stacked targets ``y`` (``QN``).

    One forward/reverse pass (``torch.func.vjp``) plus one Gram (``gram`` method of
    :meth:`OutputMap.gram`) and its ``eigh``; ``rtol`` is the relative rank cutoff of
    :class:`GramSolve`.
    """
    out, pull = torch.func.vjp(omap.outputs, theta)
    if y.shape != out.shape:
        raise ShapeError(f"evaluate_field: y must be the stacked targets of shape {tuple(out.shape)} (QN,), got {tuple(y.shape)}")
    n = omap.num_samples
    residual = (out - y).detach()
    g = residual / n
    solve = GramSolve.from_gram(omap.gram(theta, gram).detach(), rtol)
    phi = field.covector(s, g, solve)
    velocity = pull(phi)[0].detach()
    gnorm = float(torch.linalg.vector_norm(g))
    grad_theta_sq = float(torch.dot(g, solve.apply(g)).clamp_min(0.0))  # |D^T g|^2 = g^T G g
    requested = field.requested(s, g)
    defect = float(torch.linalg.vector_norm(requested - solve.project(requested)))
    return FieldEval(
        s=float(s),
        velocity=velocity,
        output_velocity=solve.apply(phi),
        outputs=out.detach(),
        residual=residual,
        cost=0.5 * float(residual.square().sum()) / n,
        solve=solve,
        epsilon=math.sqrt(grad_theta_sq) / gnorm if gnorm > 0 else 0.0,
        defect=defect,
        num_samples=n,
    )


def adapted_field(omap: OutputMap, theta: Theta, y: Vector, *, gram: str = "auto", rtol: float | None = None) -> Theta:
    """``d theta/ds = -(D^T D)^+ grad_theta C = -D^T (D D^T)^+ (x - y)/N``: ``(K,)`` (Chen & Munoz Ewald 2024 (2.27)).

    Shorthand for ``evaluate_field(AdaptedField(), ...).velocity``.
    """
    return evaluate_field(AdaptedField(), omap, theta, y, gram=gram, rtol=rtol).velocity


def parameter_form_adapted(D: Matrix, grad_theta: Theta, rtol: float | None = None) -> Theta:
    """``-(D^T D)^+ grad_theta C`` from a dense ``D`` (``(QN, K)``) via a ``K x K`` factorisation.

    The underparametrised adapted flow (``K < QN``, ``rank D = K``: the gradient for the
    induced metric ``D^T D``; docs/theory/adapted-flow.md). Equal to :class:`AdaptedField` for every
    rank (Chen & Munoz Ewald 2024 (2.26)); tests use it as an independent second algorithm.
    """
    return -GramSolve.from_gram(D.T @ D, rtol).pinv(grad_theta)
