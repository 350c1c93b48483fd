"""Loaders: real and user data as :class:`ClassificationData` (docs/datasets.md).

Every loader ends in :func:`check_data`, so its result has ``X (N, M)`` of the requested
float ``dtype`` (float64 by default), int64 ``labels`` in ``[0, Q)`` and ``Y`` the
``Q x Q`` identity unless the source supplies reference outputs. Nothing here touches the
network: the machines this library runs on reach only package archives.

* scikit-learn's bundled tables: :func:`load_sklearn` (``digits`` 1797 x 64, ``iris``
  150 x 4, ``wine`` 178 x 13, ``breast_cancer`` 569 x 30) and one thin function per name.
* :func:`make_mnist1d`: MNIST-1D (Greydanus 2020) generated locally, ``(N, 40)``, Q = 10.
* MNIST-format IDX files (gzip or raw): :func:`read_idx`, :func:`load_idx`,
  :func:`load_idx_folder`, and :func:`load_fashion_mnist` for the Debian package
  ``dataset-fashion-mnist`` (``(N, 784)`` in ``[0, 1]``, Q = 10).
* User arrays: :func:`load_npz`, :func:`load_pt`, and :func:`from_dataset` for any
  ``torch.utils.data.Dataset`` yielding ``(input, label)``.
* :func:`select_classes` keeps a subset of classes (relabelled ``0..k-1`` in the order
  given) and at most ``limit_per_class`` samples of each (the first ones, in order).
* :data:`LOADERS` names the data sets that need no path; :func:`load_dataset` takes such a
  name or a path (folder of IDX files, ``.npz``, ``.pt``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import DataFileError, MissingFileError, UnknownNameError
from ._check import ClassificationData
from ._common import select_classes
from ._files import from_dataset, load_npz, load_pt, read_npz
from ._idx import FASHION_MNIST_ROOT, load_fashion_mnist, load_idx, load_idx_folder, read_idx
from ._tables import SKLEARN_DATASETS, load_breast_cancer, load_digits, load_iris, load_sklearn, load_wine, make_mnist1d

__all__ = [
    "FASHION_MNIST_ROOT",
    "LOADERS",
    "SKLEARN_DATASETS",
    "from_dataset",
    "load_breast_cancer",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "load_idx_folder",
    "load_iris",
    "load_npz",
    "load_pt",
    "load_sklearn",
    "load_wine",
    "make_mnist1d",
    "read_idx",
    "read_npz",
    "select_classes",
]


LOADERS: Mapping[str, Callable[..., ClassificationData]] = MappingProxyType(
    {
        "breast_cancer": load_breast_cancer,
        "digits": load_digits,
        "fashion_mnist": load_fashion_mnist,
        "iris": load_iris,
        "mnist1d": make_mnist1d,
        "wine": load_wine,
    }
)
"""Data sets that need no path, by name (read-only)."""


def load_dataset(source: str | Path, **kwargs: Any) -> ClassificationData:
    """A name from :data:`LOADERS` or a path: a folder of IDX files (:func:`load_idx_folder`),
    an ``.npz`` (:func:`load_npz`) or a ``.pt``/``.pth`` file (:func:`load_pt`).

    ``kwargs`` go to that loader. Example: ``load_dataset("fashion_mnist", split="test")``,
    ``load_dataset("features.npz", dtype=torch.float32)``.
    """
    where = "load_dataset"
    key = str(source)
    if key in LOADERS:
        return LOADERS[key](**kwargs)
    p = Path(source)
    if p.is_dir():
        return load_idx_folder(p, **kwargs)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz(p, **kwargs)
    if suffix in (".pt", ".pth"):
        return load_pt(p, **kwargs)
    if p.exists():
        raise DataFileError(f"{where}: {p} has suffix {p.suffix!r}; expected a folder of IDX files, .npz, .pt or .pth")
    if suffix or "/" in key or "\\" in key:
        raise MissingFileError(f"{where}: {p} does not exist; check the path")
    raise UnknownNameError(f"{where}: unknown data set {key!r}; known: {', '.join(LOADERS)}, or a path to an IDX folder, .npz or .pt file")
