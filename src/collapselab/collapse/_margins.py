"""Square-loss margins of a network's outputs and their moments (Rangamani et al. 2021, CBMM
Memo 117, secs. 3.3-3.4.1; docs/theory/square-loss.md).

Normalised margins ``m_n = (f_{y_n}(x_n) - max_{c != y_n} f_c(x_n)) / rho``; for two classes
this is the authors' ``y_n (out_0 - out_1) / rho`` with ``y_n = +1`` for class 0 and ``-1`` for
class 1. ``rho`` is typically :func:`collapselab.toy.rho` of the model (product of the layer
norms, divided by the batch-norm running-std norms as in the authors' code). A measurement, so
it lives here; :mod:`collapselab.toy` re-exports ``margins``, ``margin_stats`` and
``MarginStats`` for the square-loss theory that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import LabelError, ParameterError, ShapeError
from ..core.validation import as_tensor, check_finite

__all__ = ["MarginStats", "margin_statistics", "margin_stats", "margins"]


def margins(outputs: torch.Tensor, labels: torch.Tensor, rho: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Normalised margins ``(f_{y_n} - max_{c != y_n} f_c) / rho``, shape ``(N,)``, float64.

    outputs: ``(N, Q)`` with ``Q >= 2`` (any float dtype; gradients flow through);
    labels: ``(N,)`` integers in ``[0, Q)``; rho: scalar (e.g. :func:`collapselab.toy.rho` of the model).
    For ``Q = 2`` this is Rangamani et al. 2021's ``y_n f_n`` with ``y = +1`` for class 0 (the authors'
    ``y_n (out_0 - out_1) / rho``). Seed 002, sec. 3.4.1.
    """
    where = "margins"
    out = as_tensor(outputs, "outputs", where)
    if out.ndim != 2 or out.shape[1] < 2:
        raise ShapeError(f"{where}: outputs must have shape (N, Q) with Q >= 2, got {tuple(out.shape)}")
    check_finite(out.detach(), "outputs", where)
    lab = as_tensor(labels, "labels", where, dtype=None, device=out.device)
    if lab.ndim != 1 or lab.shape[0] != out.shape[0]:
        raise ShapeError(f"{where}: labels must have shape ({out.shape[0]},) to match outputs, got {tuple(lab.shape)}")
    if lab.is_floating_point() or lab.dtype == torch.bool:
        raise LabelError(f"{where}: labels must be integers, got dtype {lab.dtype}; cast them with .long()")
    lab = lab.long()
    q = out.shape[1]
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= q):
        raise LabelError(f"{where}: labels must lie in [0, {q}) for outputs with {q} columns, got range [{int(lab.min())}, {int(lab.max())}]")
    r = as_tensor(rho, "rho", where, device=out.device)
    if r.numel() != 1 or not bool(r.reshape(()) > 0):
        raise ParameterError(f"{where}: rho must be a positive scalar, got {rho!r}")
    own = out.gather(1, lab[:, None]).squeeze(1)
    others = out.scatter(1, lab[:, None], float("-inf")).amax(dim=1)
    return (own - others) / r.reshape(())


@dataclass(frozen=True)
class MarginStats:
    """Seed 002 sec. 3.4.1: ``mu = mean m_n``, ``second_moment M = mean m_n^2``,
    ``sigma = sqrt(M - mu^2)`` (population variance, divisor N); ``minimum = min m_n``."""

    mu: float
    second_moment: float
    sigma: float
    minimum: float


def margin_stats(margin: torch.Tensor) -> MarginStats:
    """Mean, second moment, standard deviation and minimum of margins ``(N,)`` (float64)."""
    where = "margin_stats"
    m = as_tensor(margin, "margin", where).detach()
    if m.ndim != 1 or m.numel() == 0:
        raise ShapeError(f"{where}: margin must be a non-empty 1-D tensor, got shape {tuple(m.shape)}")
    check_finite(m, "margin", where)
    mu = float(m.mean())
    second = float(m.square().mean())
    sigma = float((m - mu).square().mean().sqrt())
    return MarginStats(mu, second, sigma, float(m.min()))


def margin_statistics(outputs: Any, labels: Any, *, rho: float = 1.0) -> MarginStats:
    """Mean ``mu``, second moment ``M``, population std ``sigma`` and minimum of the normalised
    margins ``(f_{y_n} - max_{c != y_n} f_c) / rho`` of outputs ``(N, C)``, ``C >= 2``:
    ``margin_stats(margins(outputs, labels, rho))``."""
    return margin_stats(margins(outputs, labels, rho))
