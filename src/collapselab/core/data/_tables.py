"""Bundled tables (scikit-learn) and generated data (MNIST-1D): data sets that need no file."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

from ..errors import MissingDependencyError, ParameterError, UnknownNameError
from ..validation import Interval, OneOf, check_param
from ._check import ClassificationData, check_data
from ._common import _check_dtype

__all__ = ["SKLEARN_DATASETS", "load_breast_cancer", "load_digits", "load_iris", "load_sklearn", "load_wine", "make_mnist1d"]

logger = logging.getLogger(__name__)

SKLEARN_DATASETS = ("breast_cancer", "digits", "iris", "wine")
"""The scikit-learn tables :func:`load_sklearn` knows (all bundled, no download)."""


def load_sklearn(name: str, *, dtype: torch.dtype = torch.float64) -> ClassificationData:
    """One of scikit-learn's bundled tables, unscaled, as stored by scikit-learn.

    ``digits``: (1797, 64), pixel values 0..16, Q = 10; ``iris``: (150, 4), Q = 3;
    ``wine``: (178, 13), Q = 3; ``breast_cancer``: (569, 30), Q = 2. Unknown names
    raise :class:`UnknownNameError` listing the known ones.
    """
    where = "load_sklearn"
    if name not in SKLEARN_DATASETS:
        raise UnknownNameError(f"{where}: unknown data set {name!r}; known: {', '.join(SKLEARN_DATASETS)}")
    _check_dtype(dtype, where)
    from sklearn import datasets  # deferred: importing scikit-learn costs about a second

    bunch = getattr(datasets, f"load_{name}")()
    data = check_data(bunch.data, bunch.target, dtype=dtype, name=name, where=f"{where}({name})")
    logger.info("loaded %s: N=%d, M=%d, Q=%d", name, data.num_samples, data.dim, data.num_classes)
    return data


def load_digits(*, dtype: torch.dtype = torch.float64) -> ClassificationData:
    """scikit-learn digits: ``X (1797, 64)`` with values 0..16, Q = 10."""
    return load_sklearn("digits", dtype=dtype)


def load_iris(*, dtype: torch.dtype = torch.float64) -> ClassificationData:
    """scikit-learn iris: ``X (150, 4)``, Q = 3."""
    return load_sklearn("iris", dtype=dtype)


def load_wine(*, dtype: torch.dtype = torch.float64) -> ClassificationData:
    """scikit-learn wine: ``X (178, 13)``, Q = 3."""
    return load_sklearn("wine", dtype=dtype)


def load_breast_cancer(*, dtype: torch.dtype = torch.float64) -> ClassificationData:
    """scikit-learn breast cancer: ``X (569, 30)``, Q = 2."""
    return load_sklearn("breast_cancer", dtype=dtype)


# -- MNIST-1D --------------------------------------------------------------------------


def make_mnist1d(
    num_samples: int = 5000,
    *,
    seed: int = 42,
    split: str = "all",
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """MNIST-1D (Greydanus 2020, PyPI ``mnist1d``) generated locally: ``X (N, 40)``, Q = 10.

    Calls ``mnist1d.data.make_dataset(get_dataset_args())`` with ``num_samples`` and
    ``seed`` replaced; never ``get_dataset``, whose default downloads a pickle. The
    defaults (5000 samples, seed 42) are the package's, i.e. the published data set.
    ``num_samples`` must be a multiple of 10 (the package makes ``num_samples // 10``
    per class); ``split`` is ``"all"`` (N = num_samples, balanced), ``"train"`` (the
    package's first 80%) or ``"test"`` (the last 20%). The signals are standardised by
    the package (global mean 0, standard deviation 1 before the split).

    mnist1d seeds Python's and numpy's global generators; both are restored afterwards,
    so callers' random streams are unaffected (not thread-safe while it runs).
    """
    where = "make_mnist1d"
    check_param("num_samples", num_samples, Interval(int, 10), where)
    if int(num_samples) % 10:
        raise ParameterError(f"{where}: num_samples must be a multiple of 10 (the package makes num_samples // 10 per class), got {num_samples}")
    check_param("seed", seed, Interval(int, 0, 2**32 - 1), where)
    check_param("split", split, OneOf(("all", "train", "test")), where)
    _check_dtype(dtype, where)
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise MissingDependencyError(f"{where}: the mnist1d package is not installed; pip install 'collapselab[mnist1d]'") from None
    args = get_dataset_args()
    args.num_samples, args.seed = int(num_samples), int(seed)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if split == "all":
        X, labels = np.concatenate([raw["x"], raw["x_test"]]), np.concatenate([raw["y"], raw["y_test"]])
    elif split == "train":
        X, labels = raw["x"], raw["y"]
    else:
        X, labels = raw["x_test"], raw["y_test"]
    return check_data(X, labels, num_classes=10, dtype=dtype, name=f"mnist1d({split})", where=where)
