"""Shared conventions of the toy models: loss reduction, scalar/count/time-grid checks, thread pinning.

Conventions (fixed once for the whole ``toy`` package):

- ``reduction="mean"`` divides a data loss by the number of samples ``N``;
  ``reduction="sum"`` does not. For the square-loss toy model (Rangamani et al. 2021) the summed loss
  ``sum_n (1 - rho f_n)^2 + lam rho^2`` equals ``N`` times the mean loss with
  ``lam / N``, so a summed-loss ``lam`` is a mean-loss ``lam / N`` (docs/theory/square-loss.md,
  conventions).
- PyTorch's ``weight_decay=wd`` on a mean loss corresponds to the paper's ``lam = wd / 2``
  for a penalty ``lam * |W|^2`` (see :func:`lambda_from_weight_decay`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..core.errors import ParameterError, ShapeError
from ..core.validation import Interval, OneOf, as_tensor, check_finite, check_param

__all__ = ["REDUCTIONS", "check_reduction", "loss_scale", "check_scalar", "check_count", "check_times", "lambda_from_weight_decay", "single_thread"]

REDUCTIONS = ("mean", "sum")


def check_reduction(reduction: str, where: str) -> str:
    """Return ``reduction`` if it is ``"mean"`` or ``"sum"``, else raise :class:`ParameterError`."""
    return check_param("reduction", reduction, OneOf(REDUCTIONS), where)


def loss_scale(reduction: str, num_samples: int) -> float:
    """``1/N`` for ``reduction="mean"``, ``1`` for ``"sum"`` (the factor in front of ``sum_n``)."""
    return 1.0 / num_samples if reduction == "mean" else 1.0


def check_scalar(name: str, value: float, where: str, *, low: float | None = None, high: float | None = None, closed: str = "both") -> float:
    """``value`` as a finite float in the given interval, or :class:`ParameterError`."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ParameterError(f"{where}: {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = float(value)
    check_param(name, value, Interval(float, low, high, closed), where)
    return float(value)


def check_count(name: str, value: int, where: str, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (``high=None``: no upper bound), or :class:`ParameterError`.

    The one integer check of the package (sizes, step counts); :class:`Interval` decides.
    """
    if not Interval(int, low, high).accepts(value):
        wanted = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ParameterError(f"{where}: {name} must be an int {wanted}, got {value!r}")
    return int(value)


def check_times(t: torch.Tensor, where: str, device: torch.device | str | None = None) -> torch.Tensor:
    """``t`` as a finite, strictly increasing float64 grid of at least 2 times on ``device``, or :class:`ShapeError`."""
    t = check_finite(as_tensor(t, "t", where, device=device), "t", where)
    if t.ndim != 1 or t.numel() < 2 or not bool((t[1:] > t[:-1]).all()):
        raise ShapeError(f"{where}: t must be an increasing 1-D grid of at least 2 times, got shape {tuple(t.shape)}; pass e.g. torch.linspace(0, T, n)")
    return t


def lambda_from_weight_decay(weight_decay: float) -> float:
    """The paper's ``lam`` (penalty ``lam |W|^2`` on a mean loss) for PyTorch's ``weight_decay``.

    SGD with ``weight_decay=wd`` adds ``wd * W`` to the gradient, the gradient of
    ``(wd / 2) |W|^2``; hence ``lam = wd / 2`` (docs/theory/square-loss.md, Conventions).
    """
    wd = check_scalar("weight_decay", weight_decay, "lambda_from_weight_decay", low=0.0)
    return wd / 2.0


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op CPU thread, restoring the previous count afterwards.

    Why: the toy models multiply matrices of a few hundred entries, where the thread
    pool's fan-out costs far more than the arithmetic; on a loaded 2-core machine a
    10^4-step ULPM run took 16 s with the default pool and 0.15 s with one thread.
    CUDA work is unaffected.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


