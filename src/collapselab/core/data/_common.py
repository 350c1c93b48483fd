"""What every loader shares: the dtype and path checks, class selection and the user-array contract.

:func:`select_classes` keeps a subset of classes (relabelled ``0..k-1`` in the order given) and at
most ``limit_per_class`` samples of each; :func:`_user_data` puts arrays from a user's file
under the label contract (:mod:`._contract`) before :func:`check_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MissingFileError, ParameterError
from ..validation import Interval, check_param
from ._check import ClassificationData, check_class_labels, check_data

__all__ = ["select_classes"]


def _check_dtype(dtype: Any, where: str) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ParameterError(f"{where}: dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return dtype


def _existing_file(path: str | Path, where: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        state = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise MissingFileError(f"{where}: {what} {p} {state}; check the path")
    return p


def _selection(labels: np.ndarray, classes: Sequence[int] | None, limit_per_class: int | None, where: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(index, new_labels, Q)``: which samples to keep, their labels, the class count.

    ``classes`` keeps the listed original classes and relabels ``classes[k] -> k``;
    ``limit_per_class`` keeps the first ``n`` samples of each class (in sample order).
    ``Q`` is ``len(classes)``, or ``None`` (left to :func:`check_data`) without ``classes``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    index = np.arange(labels.shape[0])
    q = None
    if classes is not None:
        cls = list(classes)
        if not cls:
            raise ParameterError(f"{where}: classes must list at least one class, got {classes!r}")
        for i, c in enumerate(cls):
            check_param(f"classes[{i}]", c, Interval(int, 0), where)
        cls = [int(c) for c in cls]
        if len(set(cls)) != len(cls):
            raise ParameterError(f"{where}: classes must be distinct, got {cls}")
        lookup = np.full(max(max(cls), int(labels.max(initial=-1))) + 1, -1, dtype=np.int64)
        lookup[cls] = np.arange(len(cls))
        new = lookup[np.clip(labels, 0, None)]
        new[labels < 0] = -1
        keep = new >= 0
        missing = sorted(set(cls) - set(np.unique(labels[keep]).tolist()))
        if missing:
            raise ParameterError(f"{where}: classes {missing} have no samples in this data (its labels are {np.unique(labels).tolist()}); pick classes that occur")
        index, labels, q = index[keep], new[keep], len(cls)
    if limit_per_class is not None:
        check_param("limit_per_class", limit_per_class, Interval(int, 1), where)
        # rank of every sample within its class, by a stable sort: no per-sample loop
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        rank = np.empty_like(order)
        rank[order] = np.arange(order.shape[0]) - np.searchsorted(sorted_labels, sorted_labels, side="left")
        keep = rank < int(limit_per_class)
        index, labels = index[keep], labels[keep]
    return index, labels, q


def select_classes(
    data: ClassificationData,
    classes: Sequence[int] | None = None,
    limit_per_class: int | None = None,
    *,
    Y: Any | None = None,
) -> ClassificationData:
    """Keep the samples of ``classes`` (relabelled ``classes[k] -> k``) and at most
    ``limit_per_class`` of each class (the first ones, in sample order).

    Without ``classes`` the result keeps ``data.Y``; with ``classes`` its ``Y`` is the
    ``k x k`` identity unless given (pass ``data.Y[classes]`` to keep the original
    reference outputs). Example: ``select_classes(digits, [3, 8])``
    is the 3-versus-8 problem with labels 0 (for 3) and 1 (for 8).
    """
    where = "select_classes"
    index, labels, q = _selection(data.labels.cpu().numpy(), classes, limit_per_class, where)
    idx = torch.as_tensor(index, device=data.X.device)
    lab = torch.as_tensor(labels, device=data.X.device)
    if Y is None and classes is None:
        Y = data.Y
    return check_data(data.X[idx], lab, Y, num_classes=q if q is not None else data.num_classes, dtype=data.X.dtype, name=data.name, where=where)


def _user_data(X: Any, labels: Any, Y: Any | None, *, dtype: torch.dtype, name: str, where: str, num_classes: int | None = None) -> ClassificationData:
    """User arrays under the label contract (:mod:`._contract`: labels in ``[0, C)``, every class
    present, nothing remapped), then :func:`check_data`."""
    if num_classes is None and Y is not None and np.ndim(Y) >= 1:
        num_classes = int(np.shape(Y)[0])
    check_class_labels(labels, where, num_classes=num_classes)
    return check_data(X, labels, Y, num_classes=num_classes, dtype=dtype, name=name, where=where)
