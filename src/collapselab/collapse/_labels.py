"""Boundary checks for batches of features and labels, and the label map.

Labels that are not ``0..C-1`` (say ``{3, 7, 9}``) are mapped onto ``0..C-1`` in
increasing order of their values: class ``k`` is the ``k``-th smallest label value,
and row ``k`` of a classifier belongs to it. The original values are kept as
``classes`` and reported with every result.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.data import as_label_tensor
from ..core.errors import LabelError, ShapeError
from ..core.validation import as_tensor, check_finite

__all__ = ["check_features", "check_batch_labels", "map_labels", "as_classes"]


def check_features(features: Any, where: str, *, finite: bool = True) -> torch.Tensor:
    """Return ``features`` as a 2-D floating tensor ``(N, d)`` (dtype and device kept;
    integers become float64), finite unless ``finite=False`` (the caller checks it more
    cheaply). Raises ShapeError (1-D, empty) or NonFiniteError."""
    t = features if isinstance(features, torch.Tensor) else as_tensor(features, "features", where, dtype=None)
    if not t.is_floating_point():
        t = as_tensor(t, "features", where, dtype=torch.float64)
    if t.ndim != 2:
        hint = "; reshape a single feature to (N, 1) or flatten feature maps to (N, -1)" if t.ndim in (1, 3, 4) else ""
        raise ShapeError(f"{where}: features must be 2-D of shape (N, d), got shape {tuple(t.shape)}{hint}")
    if t.shape[1] == 0:
        raise ShapeError(f"{where}: features must have at least one column, got shape {tuple(t.shape)}")
    return check_finite(t, "features", where) if finite else t


def as_classes(classes: Any, where: str) -> torch.Tensor:
    """Return ``classes`` (distinct integer label values) as a sorted int64 CPU tensor."""
    c = as_label_tensor(classes, where)
    s = torch.sort(c).values.cpu()
    if s.numel() == 0:
        raise LabelError(f"{where}: classes is empty; give at least one label value")
    if bool((s[1:] == s[:-1]).any()):
        raise LabelError(f"{where}: classes has repeated values; give each label value once")
    return s


def check_batch_labels(
    labels: Any, num_samples: int, num_classes: int, classes: torch.Tensor | None, device: torch.device, where: str
) -> torch.Tensor:
    """Return int64 labels in ``[0, C)`` on ``device`` for one batch (classes may be missing).

    With ``classes`` (sorted label values), labels are mapped through it and a value not in
    it is a LabelError; without, labels must already lie in ``[0, C)``.
    """
    lab = as_label_tensor(labels, where)
    if lab.shape[0] != num_samples:
        raise ShapeError(f"{where}: labels has length {lab.shape[0]} but features has {num_samples} rows; pass one label per sample")
    lab = lab.to(device)
    if lab.numel() == 0:
        return lab
    if classes is not None:
        cls = classes.to(device)
        idx = torch.searchsorted(cls, lab).clamp_(max=cls.numel() - 1)
        bad = cls[idx] != lab
        if bool(bad.any()):
            raise LabelError(
                f"{where}: label {int(lab[bad][0])} is not among the {cls.numel()} declared classes; "
                "add it to classes or drop those samples"
            )
        return idx
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= num_classes:
        bad_value = lo if lo < 0 else hi
        raise LabelError(
            f"{where}: labels must lie in [0, {num_classes}), found {bad_value}; pass classes=... to map other label values"
        )
    return lab


def map_labels(labels: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map arbitrary integer labels onto ``0..K-1`` by increasing value.

    Returns ``(mapped (N,) int64, classes (K,) int64 on CPU)`` with ``classes[mapped] == labels``.
    """
    lab = as_label_tensor(labels, where)
    if lab.numel() == 0:
        raise ShapeError(f"{where}: no samples (labels is empty)")
    classes, mapped = torch.unique(lab, sorted=True, return_inverse=True)
    return mapped, classes.cpu()
