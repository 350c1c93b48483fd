"""User arrays: ``.npz`` archives, ``torch.save`` files and any ``torch.utils.data.Dataset``.

Each goes through the label contract (:mod:`._contract`) and :func:`check_data`; nothing is
unpickled (``allow_pickle=False``, ``weights_only=True``).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import CollapseLabError, DataFileError, ParameterError, ShapeError
from ..validation import Interval, check_param
from ._check import ClassificationData
from ._common import _check_dtype, _existing_file, _user_data
from ._contract import ARRAY_ALIASES, resolve_aliases

__all__ = ["from_dataset", "load_npz", "load_pt", "read_npz"]

# What zipfile and zlib raise for a damaged archive: a bad header, directory or CRC, a cut or
# garbled compressed stream, a version or compression method it does not know.
_DAMAGED_ZIP = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)


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
