"""MNIST-format IDX files (gzip or raw), MNIST-format folders, and Fashion-MNIST from its Debian package."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFileError, MissingFileError
from ..validation import OneOf, check_param
from ._check import ClassificationData
from ._common import _check_dtype, _existing_file, _selection, _user_data

__all__ = ["FASHION_MNIST_ROOT", "load_fashion_mnist", "load_idx", "load_idx_folder", "read_idx"]

logger = logging.getLogger(__name__)

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs its four IDX files."""

# IDX type codes (third byte of the magic number) and their big-endian numpy types.
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


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
