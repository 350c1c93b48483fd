"""The canonical classification data container and its one boundary check.

Conventions (docs/datasets.md): inputs ``X`` of shape ``(N, M)``, one row per sample (the
papers use columns); integer ``labels`` in ``[0, Q)``; reference outputs ``Y`` of
shape ``(Q, P)``, row ``j`` is ``y_j`` (default: the ``Q x Q`` identity). Class order
is never assumed: samples are grouped with index arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from ..errors import EmptyClassError, LabelError, ShapeError
from ..validation import as_tensor, check_finite, check_matrix

__all__ = ["REMAP_HINT", "ClassificationData", "as_label_tensor", "check_class_labels", "check_data"]

REMAP_HINT = "remap them to 0..C-1 with labels = np.unique(labels, return_inverse=True)[1]"


def as_label_tensor(labels: Any, where: str) -> torch.Tensor:
    """``labels`` as a 1-D int64 tensor (same device); refuse non-integer values, NaN and booleans.

    No range check: :func:`check_class_labels` adds it, and the collapse package maps arbitrary values.
    """
    if isinstance(labels, torch.Tensor):
        lab = labels
    else:
        arr = np.asarray(labels)
        if arr.dtype.kind not in "biuf":
            raise LabelError(f"{where}: labels must be integers, got dtype {arr.dtype}")
        lab = torch.as_tensor(arr)
    if lab.ndim != 1:
        raise ShapeError(f"{where}: labels must be 1-D of length N, got shape {tuple(lab.shape)}")
    if lab.dtype == torch.bool:
        raise LabelError(f"{where}: labels must be integers, got booleans")
    if lab.is_floating_point():
        check_finite(lab, "labels", where)
        if not bool((lab == lab.round()).all()):
            raise LabelError(f"{where}: labels must be integers, got non-integral values such as {float(lab[lab != lab.round()][0])}")
    return lab.to(torch.int64)


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


@dataclass(frozen=True)
class ClassificationData:
    """Validated classification data: ``X (N, M)`` float64, ``labels (N,)`` int64, ``Y (Q, P)``.

    Build it with :func:`check_data` (or a generator/loader), never directly from
    unchecked arrays.
    """

    X: torch.Tensor
    labels: torch.Tensor
    Y: torch.Tensor
    name: str = "data"

    @property
    def num_samples(self) -> int:
        """``N``."""
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        """``M``, the input dimension."""
        return int(self.X.shape[1])

    @property
    def num_classes(self) -> int:
        """``Q``."""
        return int(self.Y.shape[0])

    @cached_property
    def class_counts(self) -> torch.Tensor:
        """``(Q,)`` int64: ``N_j``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    @cached_property
    def class_indices(self) -> list[torch.Tensor]:
        """Index arrays, one per class, in sample order."""
        return [torch.nonzero(self.labels == j).flatten() for j in range(self.num_classes)]

    @cached_property
    def class_means(self) -> torch.Tensor:
        """``(Q, M)``: row ``j`` is the class mean ``x̄_{0,j}``."""
        sums = torch.zeros(self.num_classes, self.dim, dtype=self.X.dtype, device=self.X.device)
        sums.index_add_(0, self.labels, self.X)
        return sums / self.class_counts.to(self.X.dtype).unsqueeze(1)

    @property
    def targets(self) -> torch.Tensor:
        """``(N, P)``: the reference output ``y_{label(i)}`` of every sample."""
        return self.Y[self.labels]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ClassificationData":
        """Copy to another device and/or floating dtype (labels stay int64)."""
        return ClassificationData(
            self.X.to(device=device, dtype=dtype), self.labels.to(device=device), self.Y.to(device=device, dtype=dtype), self.name
        )

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> "ClassificationData":
        """The samples at ``index`` (every class must keep at least one sample)."""
        idx = torch.as_tensor(index, dtype=torch.int64, device=self.X.device)
        return check_data(self.X[idx], self.labels[idx], self.Y, name=self.name, where="ClassificationData.subset")

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Arrays ``X``, ``labels``, ``Y`` as numpy (the ``.npz`` layout the CLI reads)."""
        return {"X": self.X.cpu().numpy(), "labels": self.labels.cpu().numpy(), "Y": self.Y.cpu().numpy()}


def check_data(
    X: Any,
    labels: Any,
    Y: Any | None = None,
    *,
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    name: str = "data",
    where: str = "check_data",
) -> ClassificationData:
    """Validate and normalise classification data once, at the boundary.

    Returns float ``X (N, M)``, int64 ``labels`` in ``[0, Q)`` and ``Y (Q, P)`` (identity
    if omitted), all on ``device`` (default: the device of ``X``). Raises ShapeError,
    NonFiniteError, LabelError or EmptyClassError naming the problem.
    """
    Xt = as_tensor(X, "X", where, dtype=dtype, device=device)
    if Xt.ndim != 2:
        hint = " (reshape a single feature to (N, 1))" if Xt.ndim == 1 else ""
        raise ShapeError(f"{where}: X must be 2-D of shape (N, M), got shape {tuple(Xt.shape)}{hint}")
    if Xt.shape[0] == 0 or Xt.shape[1] == 0:
        raise ShapeError(f"{where}: X must have at least one sample and one feature, got shape {tuple(Xt.shape)}")
    check_finite(Xt, "X", where)
    if Y is not None and num_classes is None:
        y_rows = np.shape(Y)[0] if np.ndim(Y) >= 1 else None
        num_classes = y_rows
    lab, q = check_class_labels(labels, where, num_samples=Xt.shape[0], num_classes=num_classes)
    lab = lab.to(Xt.device)
    if Y is None:
        Yt = torch.eye(q, dtype=Xt.dtype, device=Xt.device)
    else:
        Yt = check_matrix(Y, "Y", where, shape=(q, None), dtype=Xt.dtype, device=Xt.device)
    return ClassificationData(Xt, lab, Yt, name)
