"""Small named checks used at public boundaries (scikit-learn's ``check_*`` style).

Each check either returns a normalised value or raises a :class:`CollapseLabError`
subclass whose message names the function, the argument, what was found and what
was expected. Library code below a boundary does not re-check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch

from .errors import NonFiniteError, ParameterError, ShapeError

__all__ = [
    "as_tensor",
    "check_finite",
    "check_matrix",
    "check_param",
    "Interval",
    "OneOf",
]


def as_tensor(
    value: Any,
    name: str,
    where: str,
    *,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert ``value`` (tensor, ndarray, list) to a tensor of ``dtype``; keep its device
    unless ``device`` is given. ``dtype=None`` keeps the input's dtype."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise ParameterError(
                f"{where}: {name} must be array-like of numbers, got {type(value).__name__} ({exc})"
            ) from None
    if dtype is not None and t.dtype != dtype:
        if t.dtype.is_complex or (t.dtype == torch.bool and dtype.is_floating_point):
            raise ParameterError(f"{where}: {name} has dtype {t.dtype}; expected real numbers")
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    return t


def check_finite(t: torch.Tensor, name: str, where: str) -> torch.Tensor:
    """Raise :class:`NonFiniteError` naming the first bad entry if ``t`` has NaN or Inf."""
    if t.is_floating_point() or t.is_complex():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            idx = tuple(int(i) for i in torch.nonzero(bad)[0])
            kind = "NaN" if bool(torch.isnan(t[idx])) else "Inf"
            n_bad = int(bad.sum())
            raise NonFiniteError(
                f"{where}: {name} has {n_bad} non-finite entr{'y' if n_bad == 1 else 'ies'}, "
                f"first {kind} at index {idx}; remove or impute them before calling"
            )
    return t


def check_matrix(
    value: Any,
    name: str,
    where: str,
    *,
    shape: tuple[int | None, int | None] | None = None,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``value`` as a finite 2-D tensor; ``shape`` entries of ``None`` are free."""
    t = as_tensor(value, name, where, dtype=dtype, device=device)
    if t.ndim != 2:
        raise ShapeError(f"{where}: {name} must be 2-D, got shape {tuple(t.shape)}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(t.shape, shape)):
            if want is not None and got != want:
                raise ShapeError(
                    f"{where}: {name} must have shape {_fmt_shape(shape)}, got {tuple(t.shape)} "
                    f"(axis {axis}: {got} != {want})"
                )
    return check_finite(t, name, where)


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


class Interval:
    """Numeric constraint ``low <= x <= high`` (bounds optional, ``closed`` per side)."""

    def __init__(
        self,
        kind: type,
        low: float | None = None,
        high: float | None = None,
        closed: str = "both",
    ) -> None:
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            return False
        if self.kind is int and not float(x).is_integer():
            return False
        if not np.isfinite(float(x)):
            return False
        lo_ok = self.low is None or (x >= self.low if self.closed in ("both", "left") else x > self.low)
        hi_ok = self.high is None or (x <= self.high if self.closed in ("both", "right") else x < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{self.kind.__name__} in {left}{lo}, {hi}{right}"


class OneOf:
    """Constraint: the value is one of a fixed collection of options."""

    def __init__(self, options: Collection[Any]) -> None:
        self.options = tuple(options)

    def accepts(self, x: Any) -> bool:
        return x in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


def check_param(name: str, value: Any, constraint: Interval | OneOf | Callable[[Any], bool], where: str) -> Any:
    """Raise :class:`ParameterError` unless ``constraint`` accepts ``value``.

    Example: ``check_param("width", width, Interval(int, 1), "ReLUNet")``.
    """
    ok = constraint.accepts(value) if hasattr(constraint, "accepts") else bool(constraint(value))
    if not ok:
        raise ParameterError(f"{where}: {name} must be {constraint}, got {value!r}")
    return value
