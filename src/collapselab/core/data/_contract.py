"""The one label and array contract of user data: ``metrics``, ``construct``, ``train``, ``load_dataset``.

Arrays (an ``.npz`` archive, a ``.pt`` dict, or arrays passed in):

* inputs ``X`` ``(N, M)``, one row per sample; ``features`` is accepted for ``X`` and ``X`` for
  ``features`` (:data:`ARRAY_ALIASES`), so one file serves every command;
* ``labels`` ``(N,)``; optional reference outputs ``Y`` ``(Q, P)`` (construct, train, loaders) or
  a classifier ``weights`` ``(C, d)`` and ``bias`` ``(C,)`` (metrics).

Inputs are real, finite numbers (converted to float64; ``train --dtype`` picks float32 or
float64 for training). Labels are integers (an integer array, or floats with integral values;
booleans are refused) in ``[0, C)`` with every class present, where ``C`` is the number of rows
of ``Y`` or ``weights`` when given and ``max(labels) + 1`` otherwise. Other label values (``-1``,
``{3, 7, 9}``, a missing class) are refused, never mapped silently: :func:`check_class_labels`
names the values found and the remapping ``labels = np.unique(labels, return_inverse=True)[1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import EmptyClassError, LabelError, ShapeError
from ._check import as_label_tensor

__all__ = ["ARRAY_ALIASES", "REMAP_HINT", "check_class_labels", "resolve_aliases"]

ARRAY_ALIASES: Mapping[str, tuple[str, ...]] = {"X": ("features",), "features": ("X",)}
"""Other names accepted for an array, tried in order when the array itself is absent."""

REMAP_HINT = "remap them to 0..C-1 with labels = np.unique(labels, return_inverse=True)[1]"


def resolve_aliases(keys: Sequence[str], wanted: Sequence[str], where: str, source: str) -> dict[str, str]:
    """``{wanted name: name present in keys}`` for each wanted name that is present itself or
    through :data:`ARRAY_ALIASES`; a file holding both a name and its alias is refused (which is meant?)."""
    found: dict[str, str] = {}
    for name in wanted:
        present = [k for k in (name, *ARRAY_ALIASES.get(name, ())) if k in keys]
        if len(present) > 1:
            raise ShapeError(f"{where}: {source} holds both {present[0]!r} and {present[1]!r}; keep one of them (they name the same array)")
        if present:
            found[name] = present[0]
    return found


def _values(lab: torch.Tensor, limit: int = 8) -> str:
    values = torch.unique(lab).tolist()
    shown = ", ".join(str(v) for v in values[:limit])
    return "{" + shown + (", ..." if len(values) > limit else "") + "}"


def check_class_labels(labels: Any, where: str, *, num_samples: int | None = None, num_classes: int | None = None) -> tuple[torch.Tensor, int]:
    """``(labels as int64 (N,), C)`` under the contract of the module docstring.

    ``num_classes``: ``C`` when fixed by ``Y`` or ``weights`` (else ``max(labels) + 1``).
    Raises ShapeError (length, empty), LabelError (non-integers, values outside ``[0, C)``)
    or EmptyClassError (a class without samples), each naming the values and the remapping.
    """
    lab = as_label_tensor(labels, where)
    if num_samples is not None and lab.shape[0] != num_samples:
        raise ShapeError(f"{where}: labels has length {lab.shape[0]} but there are {num_samples} samples; give one label per sample")
    if lab.numel() == 0:
        raise ShapeError(f"{where}: no samples (labels is empty)")
    lo, hi = int(lab.min()), int(lab.max())
    C = hi + 1 if num_classes is None else int(num_classes)
    if lo < 0 or hi >= C:
        bad = lo if lo < 0 else hi
        fixed = "" if num_classes is None else f" (C = {C} classes given)"
        raise LabelError(f"{where}: labels must be integers in [0, {C}){fixed}, found {bad} among the values {_values(lab)}; {REMAP_HINT}")
    counts = torch.bincount(lab.cpu(), minlength=C)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise EmptyClassError(
            f"{where}: classes must be 0..{C - 1} with every class present, but class {empty[0]} has no samples "
            f"(label values {_values(lab)}); {REMAP_HINT}, or add samples of class {empty[0]}"
        )
    return lab, C

