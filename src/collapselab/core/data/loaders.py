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

import dataclasses
import gzip
import logging
import math
import random
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..errors import CollapseLabError, DataFileError, MissingDependencyError, MissingFileError, ParameterError, ShapeError, UnknownNameError
from ..validation import Interval, OneOf, check_param
from ._check import ClassificationData, check_data
from ._check import check_class_labels
from ._contract import ARRAY_ALIASES, resolve_aliases

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

logger = logging.getLogger(__name__)

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs its four IDX files."""

SKLEARN_DATASETS = ("breast_cancer", "digits", "iris", "wine")
"""The scikit-learn tables :func:`load_sklearn` knows (all bundled, no download)."""

# IDX type codes (third byte of the magic number) and their big-endian numpy types.
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


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


# -- class selection -------------------------------------------------------------------


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


# -- scikit-learn ----------------------------------------------------------------------


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


# -- IDX files -------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (MNIST format), gzip-compressed or raw.

    Layout: magic number ``00 00 TT DD`` (``TT`` the element type: 08 ubyte, 09 byte,
    0B int16, 0C int32, 0D float32, 0E float64; ``DD`` the number of dimensions), then
    ``DD`` big-endian uint32 sizes, then the data, big-endian, row-major. The header and
    the data length are checked exactly; any mismatch raises :class:`DataFileError`.
    Returns an array of the stored element type, in native byte order, and the stored
    shape (read-only for ubyte, which is returned without a copy).
    """
    where = "read_idx"
    p = _existing_file(path, where, "IDX file")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFileError(f"{where}: {p} starts like gzip but does not decompress ({exc}); the file is damaged") from None
    if len(raw) < 4:
        raise DataFileError(f"{where}: {p} holds {len(raw)} bytes, too few for an IDX magic number (4 bytes)")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_TYPES or ndim == 0:
        raise DataFileError(
            f"{where}: {p} has magic number 0x{magic:08x}; an IDX file starts with 0x0000TTDD, TT a type code in "
            f"{{{', '.join(f'{c:02x}' for c in _IDX_TYPES)}}} and DD >= 1 dimensions"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{where}: {p} declares {ndim} dimensions but ends inside the header ({len(raw)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    item = _IDX_TYPES[code]
    expected = math.prod(dims) * item.itemsize  # Python ints: no overflow on absurd headers
    if len(raw) - header != expected:
        raise DataFileError(
            f"{where}: {p} declares shape {dims} of {item.name} ({expected} data bytes) but holds {len(raw) - header}; "
            "the file is truncated or not an IDX file"
        )
    # torch.from_numpy refuses big-endian arrays: convert (a no-op for bytes)
    return np.frombuffer(raw, dtype=item, offset=header).reshape(dims).astype(item.newbyteorder("="), copy=False)


def _idx_data(
    images: np.ndarray,
    labels: np.ndarray,
    images_path: Path,
    labels_path: Path,
    *,
    classes: Sequence[int] | None,
    limit_per_class: int | None,
    scale: bool,
    dtype: torch.dtype,
    name: str,
    where: str,
    num_classes: int | None = None,
) -> ClassificationData:
    """Checked IDX image/label arrays as data: flatten, select, convert, scale."""
    if images.ndim < 2:
        raise DataFileError(f"{where}: images file {images_path} holds shape {images.shape}; expected (N, ...) with at least 2 dimensions (images and labels swapped?)")
    if labels.ndim != 1:
        raise DataFileError(f"{where}: labels file {labels_path} holds shape {labels.shape}; expected (N,)")
    if labels.dtype.kind not in "iu":
        raise DataFileError(f"{where}: labels file {labels_path} holds {labels.dtype.name} values; expected an integer type (ubyte)")
    if images.shape[0] != labels.shape[0]:
        raise DataFileError(
            f"{where}: images file {images_path} holds {images.shape[0]} images but labels file {labels_path} {labels.shape[0]} labels; pair matching files"
        )
    index, lab, q = _selection(labels, classes, limit_per_class, where)
    # select before converting: a float copy of all 60000 Fashion-MNIST images is 376 MB
    X = torch.from_numpy(images.reshape(images.shape[0], -1)[index]).to(dtype)
    if scale and images.dtype == np.uint8:
        X /= 255.0
    return _user_data(X, torch.from_numpy(lab), None, num_classes=q if q is not None else num_classes, dtype=dtype, name=name, where=where)


def load_idx(
    images_path: str | Path,
    labels_path: str | Path,
    *,
    classes: Sequence[int] | None = None,
    limit_per_class: int | None = None,
    scale: bool = True,
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """Images and labels from a pair of IDX files: ``X (N, prod(image shape))``.

    ubyte images are divided by 255 (values in ``[0, 1]``) when ``scale`` is true; other
    element types are returned as stored. ``classes`` and ``limit_per_class`` act as in
    :func:`select_classes` (applied before conversion to float, to save memory).
    """
    where = "load_idx"
    _check_dtype(dtype, where)
    images, labels = read_idx(images_path), read_idx(labels_path)
    return _idx_data(images, labels, Path(images_path), Path(labels_path), classes=classes, limit_per_class=limit_per_class, scale=scale, dtype=dtype, name=Path(images_path).name, where=where)


def _find_idx(folder: Path, prefix: str, kind: str, rank: int, where: str) -> Path:
    stems = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    candidates = [folder / (s + ext) for s in stems for ext in (".gz", "")]
    for c in candidates:
        if c.is_file():
            return c
    raise MissingFileError(f"{where}: {folder} has no {kind} file; expected one of {', '.join(c.name for c in candidates)}")


def load_idx_folder(
    folder: str | Path,
    split: str = "train",
    *,
    classes: Sequence[int] | None = None,
    limit_per_class: int | None = None,
    scale: bool = True,
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """An MNIST-format folder: ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``
    for ``split="train"``, ``t10k-...`` for ``split="test"`` (``.idx3-ubyte`` spellings too).

    See :func:`load_idx` for ``classes``, ``limit_per_class`` and ``scale``.
    """
    where = "load_idx_folder"
    check_param("split", split, OneOf(("train", "test")), where)
    _check_dtype(dtype, where)
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"{where}: folder {root} does not exist; pass a folder holding MNIST-format IDX files")
    prefix = "train" if split == "train" else "t10k"
    images_path, labels_path = _find_idx(root, prefix, "images", 3, where), _find_idx(root, prefix, "labels", 1, where)
    return _idx_data(read_idx(images_path), read_idx(labels_path), images_path, labels_path, classes=classes, limit_per_class=limit_per_class, scale=scale, dtype=dtype, name=f"{root.name}({split})", where=where)


def load_fashion_mnist(
    split: str = "train",
    classes: Sequence[int] | None = None,
    limit_per_class: int | None = None,
    root: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """Fashion-MNIST (Xiao et al. 2017; MIT): ``X (N, 784)`` in ``[0, 1]``, Q = 10
    (or ``len(classes)``), N = 60000 (``"train"``) or 10000 (``"test"``), balanced.

    Reads the Debian package ``dataset-fashion-mnist`` (:data:`FASHION_MNIST_ROOT`) or
    ``root``. ``classes`` keeps those original classes, relabelled ``classes[k] -> k``
    (e.g. ``[0, 9]``: T-shirt -> 0, ankle boot -> 1); ``limit_per_class`` keeps the first
    ``n`` images of each class in file order.
    """
    where = "load_fashion_mnist"
    folder = FASHION_MNIST_ROOT if root is None else Path(root)
    if not folder.is_dir():
        raise MissingFileError(
            f"{where}: Fashion-MNIST not found at {folder}; install it with `apt-get install dataset-fashion-mnist` "
            "or pass root= a folder holding its IDX files"
        )
    data = load_idx_folder(folder, split, classes=classes, limit_per_class=limit_per_class, dtype=dtype)
    named = dataclasses.replace(data, name=f"fashion_mnist({split})")
    logger.info("loaded %s: N=%d, Q=%d", named.name, named.num_samples, named.num_classes)
    return named


# -- user arrays -----------------------------------------------------------------------


# What zipfile and zlib raise for a damaged archive: a bad header, directory or CRC, a cut or
# garbled compressed stream, a version or compression method it does not know.
_DAMAGED_ZIP = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)


def _user_data(X: Any, labels: Any, Y: Any | None, *, dtype: torch.dtype, name: str, where: str, num_classes: int | None = None) -> ClassificationData:
    """User arrays under the label contract (:mod:`._contract`: labels in ``[0, C)``, every class
    present, nothing remapped), then :func:`check_data`."""
    if num_classes is None and Y is not None and np.ndim(Y) >= 1:
        num_classes = int(np.shape(Y)[0])
    check_class_labels(labels, where, num_classes=num_classes)
    return check_data(X, labels, Y, num_classes=num_classes, dtype=dtype, name=name, where=where)


def read_npz(path: str | Path, required: Sequence[str], optional: Sequence[str] = (), *, where: str = "read_npz") -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` archive: every ``required`` one (else DataFileError
    naming the missing array and the ones present) and those ``optional`` ones it has, keyed by
    the names asked for; an array may also be stored under an alias of its name
    (:data:`~._contract.ARRAY_ALIASES`: ``features`` for ``X`` and back).
    Pickled object arrays are refused (``allow_pickle=False``); a missing file is a
    MissingFileError, a damaged archive (bad zip, wrong CRC, truncated member) a DataFileError.
    The one reader behind :func:`load_npz` and the CLI's ``.npz`` inputs.
    """
    p = _existing_file(path, where, "file")
    savez = f"np.savez(path, {'=..., '.join(required)}=...)"
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise DataFileError(f"{where}: {p} holds a single array, not an .npz archive; save with {savez}")
    if magic[:4] != b"PK\x03\x04":
        raise DataFileError(f"{where}: {p} is not an .npz archive (no zip header); save with {savez}")
    try:
        archive = np.load(p, allow_pickle=False)
    except (ValueError, *_DAMAGED_ZIP) as exc:
        raise DataFileError(f"{where}: {p} is not a readable .npz archive ({exc}); save with {savez}") from None
    with archive:
        names = resolve_aliases(list(archive.files), [*required, *optional], where, p.name)
        for key in required:
            if key not in names:
                aka = "".join(f" or {a!r}" for a in ARRAY_ALIASES.get(key, ()))
                raise DataFileError(f"{where}: {p.name} has no array {key!r}{aka} (arrays: {', '.join(archive.files) or 'none'})")
        try:
            return {key: archive[stored] for key, stored in names.items()}
        except ValueError as exc:
            if "allow_pickle" not in str(exc):
                raise DataFileError(f"{where}: {p} holds a damaged array ({exc}); save it again with {savez}") from None
            raise DataFileError(f"{where}: {p} holds an array that cannot be read without pickle ({exc}); store plain numeric arrays") from None
        except _DAMAGED_ZIP as exc:
            # members are read lazily: a wrong CRC, a cut or garbled compressed stream shows here
            raise DataFileError(f"{where}: {p} is a damaged .npz archive ({type(exc).__name__}: {exc}); save it again with {savez}") from None


def load_npz(
    path: str | Path,
    x_key: str = "X",
    labels_key: str = "labels",
    y_key: str | None = "Y",
    *,
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """Arrays ``x_key`` (N, M) and ``labels_key`` (N,) from an ``.npz`` archive, plus
    ``y_key`` (Q, P) if the archive has it (otherwise ``Y`` is the identity; ``y_key=None``
    ignores it). The layout of :meth:`ClassificationData.to_numpy`.
    """
    where = "load_npz"
    _check_dtype(dtype, where)
    arrays = read_npz(path, (x_key, labels_key), () if y_key is None else (y_key,), where=where)
    name = Path(path).name
    return _user_data(arrays[x_key], arrays[labels_key], arrays.get(y_key) if y_key else None, dtype=dtype, name=Path(path).stem, where=f"{where}({name})")


def load_pt(
    path: str | Path,
    x_key: str = "X",
    labels_key: str = "labels",
    y_key: str | None = "Y",
    *,
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """Data saved with ``torch.save``: a dict with tensors ``x_key``, ``labels_key`` and
    optionally ``y_key``, or a tuple/list ``(X, labels)`` or ``(X, labels, Y)``.

    Read with ``torch.load(weights_only=True)``: only tensors and plain containers, never
    arbitrary pickled code.
    """
    where = "load_pt"
    _check_dtype(dtype, where)
    p = _existing_file(path, where, "file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files; all mean "not loadable"
        raise DataFileError(f"{where}: {p} is not a loadable torch file of tensors ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, Mapping):
        names = resolve_aliases([k for k in obj if isinstance(k, str)], [x_key, labels_key, *([y_key] if y_key else [])], where, p.name)
        for key in (x_key, labels_key):
            if key not in names:
                raise DataFileError(f"{where}: {p} has no entry {key!r} (entries: {', '.join(map(str, obj)) or 'none'}); pass x_key=/labels_key=")
        X, labels = obj[names[x_key]], obj[names[labels_key]]
        Y = obj[names[y_key]] if y_key in names else None
    elif isinstance(obj, (tuple, list)) and len(obj) in (2, 3):
        X, labels = obj[0], obj[1]
        Y = obj[2] if len(obj) == 3 else None
    else:
        raise DataFileError(f"{where}: {p} holds a {type(obj).__name__}; expected a dict with {x_key!r} and {labels_key!r} or a tuple (X, labels[, Y])")
    return _user_data(X, labels, Y, dtype=dtype, name=p.stem, where=f"{where}({p.name})")


def from_dataset(
    dataset: torch.utils.data.Dataset,
    *,
    num_classes: int | None = None,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float64,
) -> ClassificationData:
    """All items of a ``torch.utils.data.Dataset`` (map-style or iterable) yielding
    ``(input, label)``: inputs are flattened to rows, ``X (N, prod(input shape))``.

    Items are stacked in batches of ``batch_size`` by PyTorch's default collation, so
    inputs may be tensors, arrays or numbers of one common shape (add a ``ToTensor``
    transform to image datasets) and labels integers. ``num_classes``, if given, is
    ``Q``: labels must lie in ``[0, Q)`` and every class must occur.
    """
    where = "from_dataset"
    _check_dtype(dtype, where)
    check_param("batch_size", batch_size, Interval(int, 1), where)
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(batch_size), shuffle=False)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    try:
        for batch in loader:
            if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                kind = f"{len(batch)}-tuples" if isinstance(batch, (list, tuple)) else type(batch).__name__
                raise ParameterError(f"{where}: the dataset must yield (input, label) pairs, got {kind}")
            inputs, labels = batch
            if not isinstance(inputs, torch.Tensor) or not isinstance(labels, torch.Tensor):
                raise ParameterError(f"{where}: inputs and labels must be tensors, arrays or numbers, got {type(inputs).__name__} and {type(labels).__name__}")
            if labels.ndim != 1:
                raise ShapeError(f"{where}: each label must be one integer class index, got labels of shape {tuple(labels.shape[1:])} per item (one-hot? pass argmax)")
            xs.append(inputs.reshape(inputs.shape[0], -1).to(dtype))
            ys.append(labels)
    except CollapseLabError:
        raise
    except (TypeError, RuntimeError) as exc:
        raise ShapeError(f"{where}: cannot stack the dataset's items ({str(exc).splitlines()[0]}); inputs must share one shape and be tensors/arrays (add a ToTensor transform)") from exc
    if not xs:
        raise ShapeError(f"{where}: the dataset is empty; expected at least one (input, label) item")
    name = type(dataset).__name__
    return _user_data(torch.cat(xs), torch.cat(ys), None, num_classes=num_classes, dtype=dtype, name=name, where=where)


# -- registry --------------------------------------------------------------------------

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
