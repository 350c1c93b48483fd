"""The output map ``theta -> x[theta]`` on fixed training inputs and its Jacobian ``D``.

Chen & Munoz Ewald 2024 (2.9), (2.12); docs/theory/adapted-flow.md. For inputs ``X`` of shape ``(N, M)`` and a
model ``f(theta, X) -> (N, Q)``, the stacked outputs ``x[theta]`` in ``R^{QN}`` list the
``Q`` outputs of every sample, sample by sample (row-major flattening of ``(N, Q)``),
and ``D = dx/dtheta`` is ``(QN, K)``. The NTK Gram matrix ``D D^T`` is ``(QN, QN)``;
its ``(i, j)`` block of size ``Q x Q`` is the neural tangent kernel ``Theta(x_i, x_j)``
(Chen & Munoz Ewald 2024 (3.15)).

Three ways to use ``D``, by cost:

* matrix-free :meth:`OutputMap.jvp` (``D v``) and :meth:`OutputMap.vjp` (``D^T u``):
  one forward plus one forward- or reverse-mode pass, no ``(QN, K)`` storage;
* dense :meth:`OutputMap.jacobian` via ``torch.func.jacrev`` (``jacfwd`` when
  ``K < QN``), ``QN * K`` numbers of memory;
* the Gram :meth:`OutputMap.gram`: ``"structured"`` (ReLU MLPs only, assembled layer by
  layer without forming ``D``; see :mod:`collapselab.flows.gram`) or ``"dense"``
  (``D D^T`` from the dense Jacobian, the slow reference the structured one is tested
  against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..core.errors import ParameterError, ShapeError
from ..core.network import ReLUNet, forward, functional, num_parameters, unflatten_params
from ..core.types import Inputs, Matrix, Theta, Vector
from ..core.validation import OneOf, check_matrix, check_param
from .gram import relu_gram

__all__ = ["OutputMap", "mlp_widths", "GRAM_METHODS"]

GRAM_METHODS = ("auto", "structured", "dense")
"""``gram=`` options of :meth:`OutputMap.gram`: ``auto`` is ``structured`` for ReLU MLPs, else ``dense``."""


def mlp_widths(module: nn.Module) -> list[int] | None:
    """``[M, d_1, ..., d_L, Q]`` if ``module`` is a ReLU MLP, else ``None``.

    A ReLU MLP is a :class:`~collapselab.core.network.ReLUNet` or an ``nn.Sequential`` of
    ``Linear, ReLU, Linear, ReLU, ..., Linear`` with biases. For both, the flat
    parameter order of ``named_parameters`` is the papers' order ``W_1, b_1, W_2, ...``
    used by :func:`collapselab.core.network.unflatten_params`.
    """
    if isinstance(module, ReLUNet):
        return list(module.widths)
    if not isinstance(module, nn.Sequential) or len(module) % 2 == 0:
        return None
    layers = list(module)
    linear_ok = all(isinstance(m, nn.Linear) and m.bias is not None for m in layers[0::2])
    relu_ok = all(isinstance(m, nn.ReLU) for m in layers[1::2])
    chained = all(a.out_features == b.in_features for a, b in zip(layers[0:-2:2], layers[2::2])) if linear_ok else False
    if not (linear_ok and relu_ok and chained):
        return None
    return [layers[0].in_features] + [m.out_features for m in layers[0::2]]


class OutputMap:
    """``theta -> x[theta]`` in ``R^{QN}`` for a model on fixed inputs ``X (N, M)``.

    ``f(theta, X)`` must return ``(N, Q)``. ``widths`` (set by :meth:`from_module` for
    ReLU MLPs, or :meth:`from_widths`) enables the structured Gram. Build one with
    :meth:`from_module` (any ``nn.Module``, through ``torch.func.functional_call``) or
    :meth:`from_widths` (the papers' ReLU network on a flat ``theta``).
    """

    def __init__(self, f: Callable[[Theta, Inputs], torch.Tensor], X: Inputs, *, widths: Sequence[int] | None = None) -> None:
        self.f = f
        self.X = check_matrix(X, "X", "OutputMap", dtype=None)
        self.widths = None if widths is None else [int(w) for w in widths]

    @classmethod
    def from_module(cls, module: nn.Module, X: Inputs) -> tuple["OutputMap", Theta]:
        """The output map of any module and its current flat parameters ``theta0``."""
        theta0, f = functional(module)
        return cls(f, X, widths=mlp_widths(module)), theta0

    @classmethod
    def from_widths(cls, widths: Sequence[int], X: Inputs) -> "OutputMap":
        """The papers' ReLU network ``widths = [M, d_1, ..., Q]`` on a flat ``theta``."""
        widths = [int(w) for w in widths]
        num_parameters(widths)  # validates the widths

        def f(theta: Theta, X: Inputs) -> torch.Tensor:
            return forward(unflatten_params(theta, widths), X)

        return cls(f, X, widths=widths)

    @property
    def num_samples(self) -> int:
        """``N``."""
        return int(self.X.shape[0])

    @property
    def is_mlp(self) -> bool:
        """Whether the structured Gram is available."""
        return self.widths is not None

    def _fn(self, theta: Theta) -> torch.Tensor:
        return self.f(theta, self.X).reshape(-1)

    def outputs(self, theta: Theta) -> Vector:
        """``x[theta]``: ``(QN,)``."""
        return self._fn(theta)

    def jvp(self, theta: Theta, v: Theta) -> tuple[Vector, Vector]:
        """``(x[theta], D v)``: forward-mode, no Jacobian stored. ``v``: ``(K,)``."""
        return torch.func.jvp(self._fn, (theta,), (v,))

    def vjp(self, theta: Theta, u: Vector) -> tuple[Vector, Theta]:
        """``(x[theta], D^T u)``: reverse-mode, no Jacobian stored. ``u``: ``(QN,)``."""
        out, pull = torch.func.vjp(self._fn, theta)
        if u.shape != out.shape:
            raise ShapeError(f"OutputMap.vjp: u must have shape {tuple(out.shape)} (QN,), got {tuple(u.shape)}")
        return out, pull(u)[0]

    def jacobian(self, theta: Theta, *, chunk_size: int | None = None) -> Matrix:
        """Dense ``D`` of shape ``(QN, K)``.

        Sample by sample when the model treats samples independently: ``vmap`` over the rows of
        ``X`` of the Jacobian of one sample's ``Q`` outputs (``jacrev``; ``jacfwd`` if ``K < Q``),
        ``N Q`` products of one sample each instead of the ``QN`` products of the whole batch
        that ``jacrev`` of the stacked map takes: ``N`` times less work (the adapted-flow benchmark
        net: 0.56 s -> 0.04 s). Whether the model is samplewise is checked on every call
        against one Jacobian-vector product of the batched map (batch statistics, as in a
        BatchNorm layer in training mode, couple the samples; relative tolerance ``sqrt(eps)``);
        if it is not, or if ``vmap`` cannot run the model on one sample, ``D`` comes from the
        stacked map (``jacrev``; ``jacfwd`` if ``K < QN``). Memory ``QN * K`` numbers plus one
        batch of ``chunk_size`` (default all) samples or products.
        """
        k = theta.shape[0]
        # one product of the batched map: the output size QN, and the check of the per-sample D
        v = torch.randn(k, generator=torch.Generator().manual_seed(0), dtype=theta.dtype).to(theta.device)
        batched = self.jvp(theta, v)[1]
        per_sample = self._per_sample_jacobian(theta, v, batched, chunk_size)
        if per_sample is not None:
            return per_sample
        if k < batched.shape[0]:  # forward mode: K Jacobian-vector products (jacfwd, chunked)
            basis = torch.eye(k, dtype=theta.dtype, device=theta.device)
            return torch.func.vmap(lambda u: self.jvp(theta, u)[1], chunk_size=chunk_size)(basis).T
        return torch.func.jacrev(self._fn, chunk_size=chunk_size)(theta)

    def _per_sample_jacobian(self, theta: Theta, v: Theta, batched: Vector, chunk_size: int | None) -> Matrix | None:
        """``D`` sample by sample, or ``None`` if the model is not samplewise: ``vmap`` cannot run
        it on one sample, or the result misses ``batched = D v`` of the batched map (see :meth:`jacobian`)."""

        def one(th: Theta, x: torch.Tensor) -> torch.Tensor:
            return self.f(th, x.unsqueeze(0)).reshape(-1)

        k, q = theta.shape[0], batched.shape[0] // self.num_samples
        transform = torch.func.jacfwd if k < q else torch.func.jacrev
        try:
            D = torch.func.vmap(transform(one), in_dims=(None, 0), chunk_size=chunk_size)(theta, self.X).reshape(-1, k)
        except Exception:  # noqa: BLE001 - data-dependent control flow, a layer that needs a batch
            # (BatchNorm in training mode), ...: the stacked map runs the model on the whole batch
            # instead, and a genuine error in the model is raised there
            return None
        tol = torch.finfo(theta.dtype).eps ** 0.5 * float(torch.linalg.vector_norm(batched))
        return D if D.shape[0] == batched.shape[0] and float(torch.linalg.vector_norm(D @ v - batched)) <= tol else None

    def gram(self, theta: Theta, method: str = "auto") -> Matrix:
        """The NTK Gram ``D D^T``: ``(QN, QN)``.

        ``method``: ``"structured"`` (ReLU MLPs: ``O((QN)^2 sum_l d_l)`` time, ``2 (QN)^2``
        memory, never forms ``D``), ``"dense"`` (``O(QN^2 K)`` time, ``QN K`` memory; the
        reference), ``"auto"`` (structured when available).
        """
        check_param("method", method, OneOf(GRAM_METHODS), "OutputMap.gram")
        if method == "auto":
            method = "structured" if self.is_mlp else "dense"
        if method == "structured":
            if self.widths is None:
                raise ParameterError("OutputMap.gram: method='structured' needs a ReLU MLP (ReLUNet or Sequential of Linear/ReLU); use method='dense'")
            return relu_gram(unflatten_params(theta, self.widths), self.X)
        D = self.jacobian(theta)
        return D @ D.T
