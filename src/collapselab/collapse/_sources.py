"""Feeding the exact two-pass measurement from data that need not fit in memory.

The measurement is the one of :func:`~collapselab.collapse.collapse_report`: a first pass
accumulates counts and class sums (the class means ``mu_c``), a second pass accumulates the
statistics shifted by those means (``Sigma_W`` on the span of the centred means, the
per-sample rules), so nothing cancels (Chan, Golub & LeVeque 1983; Papyan, Han & Donoho 2020,
Sec. 3; docs/theory/neural-collapse.md). Here the rows come from

* a ``.npy`` file (read in blocks with ``readinto`` into one reused buffer: neither the
  features nor the page cache of the file count towards the process's memory),
* an array in memory or memory-mapped (``np.load(path, mmap_mode="r")``; blocks are copied),
* any re-iterable of ``(features, labels)`` batches (a ``DataLoader``, a list, or a callable
  returning a fresh iterator: two passes need the data twice),

so memory is ``O(B d + C d + d^2)`` (``O(B d + C d + C^2)`` on the span) whatever the number
of samples ``N``. With ``all_reduce=True`` every process reads its share and both passes are
summed over the process group (:meth:`CollapseStatistics.all_reduce`), which gives the
statistics of all rows up to float64 rounding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..core.data import as_label_tensor
from ..core.errors import DataFileError, MissingFileError, NonFiniteError, ParameterError, ShapeError
from ..core.validation import Interval, check_param
from ._accumulate import check_all_classes
from ._labels import as_classes
from ._report import CollapseReport
from ._streaming import CollapseStatistics

__all__ = ["stream_report", "stream_statistics", "label_values", "resolve_classes", "batch_rows", "Progress"]

Batch = tuple[Any, Any]

# Rows per block: the (C, B) work matrices of the per-sample rules hold at most this many
# entries (32 MiB in float64), at most 2048 rows (C = 100, d = 512: 2048 rows per update take
# 0.8 s per 10^5 samples where 8192 take 0.9 s, MKL, one thread).
_BLOCK_ENTRIES = 1 << 22
_MAX_ROWS = 2048


class Progress(Protocol):
    """A progress bar: ``progress(iterable, desc=..., total=...)`` returns an iterable over the
    same items (``collapselab.experiments.progress``, or ``tqdm.tqdm``)."""

    def __call__(self, iterable: Iterable[Any], *, desc: str, total: int | None) -> Iterable[Any]: ...


def batch_rows(num_classes: int) -> int:
    """Default rows per block for ``C`` classes: ``min(2048, 2^22 / C)``, at least 64."""
    return max(64, min(_MAX_ROWS, _BLOCK_ENTRIES // max(1, num_classes)))


class _Rows:
    """Rows ``[start, stop)`` of a 1-D or 2-D array: a ``.npy`` path (read block by block into a
    reused buffer), a numpy array or memmap, or a torch tensor."""

    def __init__(self, source: Any, name: str, where: str, rows: tuple[int, int] | None) -> None:
        self._file = None
        self._where = where
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                state = "is a folder, not a file" if path.is_dir() else "does not exist"
                raise MissingFileError(f"{where}: {name} file {path} {state}; check the path")
            try:
                mm = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataFileError(f"{where}: cannot read {name} from {path} ({e}); give a .npy file written by numpy.save") from e
            if not isinstance(mm, np.memmap):
                raise DataFileError(f"{where}: {path} is not a .npy array file; give {name} as a .npy file (numpy.save)")
            self._array: Any = mm
            if mm.flags.c_contiguous:
                self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
                self._offset = int(mm.offset)
        elif isinstance(source, (np.ndarray, torch.Tensor)):
            self._array = source
        else:
            raise ParameterError(f"{where}: {name} must be a .npy path, a numpy array or a tensor, got {type(source).__name__}")
        self.dtype = self._array.dtype
        shape = tuple(self._array.shape)
        if len(shape) != (2 if name == "features" else 1):
            raise ShapeError(f"{where}: {name} must be {'2-D (N, d)' if name == 'features' else '1-D (N,)'}, got shape {shape}")
        self.row_shape = shape[1:]
        n = shape[0]
        start, stop = (0, n) if rows is None else rows
        if not 0 <= start <= stop <= n:
            raise ParameterError(f"{where}: rows=({start}, {stop}) is not a range of the {n} rows of {name}; give 0 <= start <= stop <= {n}")
        self.start, self.stop = int(start), int(stop)
        self._buffer: np.ndarray | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self, a: int, b: int) -> Any:
        """Rows ``[start + a, start + b)``: a numpy array (valid until the next read) or a tensor."""
        a, b = self.start + a, self.start + b
        if self._file is None:
            block = self._array[a:b]
            return np.array(block) if isinstance(block, np.memmap) else block
        shape = (b - a, *self.row_shape)
        if self._buffer is None or self._buffer.size < int(np.prod(shape)):
            self._buffer = np.empty(int(np.prod(shape)), dtype=self.dtype)
        out = self._buffer[: int(np.prod(shape))].reshape(shape)
        row_bytes = out.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        view, done = memoryview(out).cast("B"), 0
        while done < view.nbytes:
            got = os.preadv(self._file.fileno(), [view[done:]], self._offset + a * row_bytes + done)
            if got == 0:
                raise DataFileError(f"{self._where}: {self._file.name} ends before row {b}; the file is truncated")
            done += got
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def label_values(labels: Any, *, rows: tuple[int, int] | None = None, batch: int = 1 << 20, where: str = "label_values") -> torch.Tensor:
    """Sorted distinct values (int64, CPU) of a label array or ``.npy`` path (its ``rows``
    ``(start, stop)``, default all), read in blocks."""
    reader = _Rows(labels, "labels", where, rows)
    try:
        seen = torch.empty(0, dtype=torch.int64)
        for a in range(0, len(reader), batch):
            block = as_label_tensor(reader.read(a, min(a + batch, len(reader))), where)
            seen = torch.unique(torch.cat([seen, torch.unique(block.cpu())]))
        return seen
    finally:
        reader.close()


def _array_batches(features: _Rows, labels: _Rows, rows: int, where: str) -> Callable[[], Iterator[Batch]]:
    if len(labels) != len(features):
        raise ShapeError(f"{where}: labels has {len(labels)} rows but features has {len(features)}; pass one label per sample")

    def gen() -> Iterator[Batch]:
        for a in range(0, len(features), rows):
            b = min(a + rows, len(features))
            yield features.read(a, b), labels.read(a, b)

    return gen


def _iterable_batches(source: Any, where: str) -> Callable[[], Iterator[Batch]]:
    if callable(source):
        return lambda: iter(source())
    if iter(source) is source:
        raise ParameterError(
            f"{where}: the batches are a one-shot iterator ({type(source).__name__}), but the exact measurement reads "
            "the data twice; pass a list, a DataLoader, or a function returning a fresh iterator"
        )
    return lambda: iter(source)


def _run_pass(stats: CollapseStatistics, batches: Iterator[Batch], progress: Progress | None, desc: str, total: int | None, where: str) -> CollapseStatistics:
    it: Iterable[Batch] = batches if progress is None else progress(batches, desc=desc, total=total)
    seen = 0
    for k, batch in enumerate(it):
        try:
            h, y = batch
        except (TypeError, ValueError) as e:
            raise ParameterError(f"{where}: batch {k} is not a (features, labels) pair; yield (features, labels) tuples") from e
        try:
            stats.update(h, y)
        except NonFiniteError as e:
            raise NonFiniteError(f"{where}: batch {k} (rows {seen} to {seen + len(h) - 1}): {e}") from e
        seen += len(h)
    return stats


def stream_statistics(
    batches: Callable[[], Iterator[Batch]],
    num_classes: int,
    *,
    classes: Any | None = None,
    dim: int | None = None,
    weights: Any | None = None,
    bias: Any | None = None,
    per_sample: bool = True,
    covariance: bool | str = "span",
    device: Any | None = None,
    progress: Progress | None = None,
    total: int | None = None,
    all_reduce: bool = False,
    group: Any | None = None,
    where: str = "stream_statistics",
) -> CollapseStatistics:
    """The exact two passes over ``batches()`` (called once per pass): means (counts and sums
    only), then statistics shifted by them (``covariance="span"``: ``Sigma_W`` on the span of
    the centred means, all that the report needs; ``True``: all of it), reduced over ``group``
    after each pass when ``all_reduce``. ``total``: batches per pass, for the progress bar."""
    first = CollapseStatistics(num_classes, classes=classes, dim=dim, covariance=False, device=device)
    _run_pass(first, batches(), progress, "pass 1/2: class means", total, where)
    if all_reduce:
        first.all_reduce(group)
    check_all_classes(first.counts, first.classes, where)
    second = CollapseStatistics(
        num_classes, classes=classes, means=first.means(), weights=weights, bias=bias, per_sample=per_sample, covariance=covariance
    )
    _run_pass(second, batches(), progress, "pass 2/2: statistics", total, where)
    if all_reduce:
        second.all_reduce(group)
    return second


def stream_report(
    features: Any,
    labels: Any | None = None,
    weights: Any | None = None,
    bias: Any | None = None,
    *,
    num_classes: int | None = None,
    classes: Any | None = None,
    rows: tuple[int, int] | None = None,
    batch_size: int | None = None,
    device: Any | None = None,
    progress: Progress | None = None,
    all_reduce: bool = False,
    group: Any | None = None,
    rtol: float | None = None,
    global_mean: str = "unweighted",
    center_weights: bool = False,
) -> CollapseReport:
    """Every metric (:class:`CollapseReport`, the same as :func:`collapse_report`) of features
    that need not fit in memory, in two exact passes with memory ``O(B d + C d + d^2)``.

    features: a ``.npy`` path (N, d) with ``labels`` a ``.npy`` path or array (N,); a numpy
    array, memmap (``np.load(path, mmap_mode="r")``) or tensor (N, d) with labels (N,); or,
    with ``labels=None``, a re-iterable of ``(features, labels)`` batches (or a function
    returning a fresh iterator of them) and ``num_classes`` or ``classes`` given.
    weights, bias: optional classifier (C, d), (C,). num_classes / classes: as in
    :class:`CollapseStatistics`; for arrays, by default the sorted distinct label values are
    the classes (as :func:`collapse_report`), found in one extra pass over the labels only.
    rows: ``(start, stop)``, this process's share of an array's rows (with ``all_reduce``).
    batch_size: rows per block (default ``batch_rows(num_classes)``: ``min(2048, 2^22 / C)`` rows). device: where the float64
    accumulators live (default: the batches'). progress: a progress bar
    (``collapselab.experiments.progress``; None for none). all_reduce, group: sum both passes
    over a ``torch.distributed`` process group; then every process must give ``num_classes``
    or ``classes``. rtol, global_mean, center_weights: as in :func:`collapse_report`.
    """
    where = "stream_report"
    if batch_size is not None:
        check_param("batch_size", batch_size, Interval(int, 1), where)
    if num_classes is not None:
        check_param("num_classes", num_classes, Interval(int, 1), where)
    if classes is not None:
        classes = as_classes(classes, where)
        num_classes = int(classes.numel()) if num_classes is None else num_classes
    readers: list[_Rows] = []
    try:
        dim = total = None
        if labels is None:
            if rows is not None:
                raise ParameterError(f"{where}: rows= selects rows of an array; give batches of this process's share instead")
            if num_classes is None:
                raise ParameterError(f"{where}: batches need num_classes (labels in [0, C)) or classes (the label values)")
            batches = _iterable_batches(features, where)
            total = len(features) if hasattr(features, "__len__") else None
        else:
            feats, labs = _Rows(features, "features", where, rows), _Rows(labels, "labels", where, rows)
            readers += [feats, labs]
            if num_classes is None:
                if all_reduce:
                    raise ParameterError(f"{where}: with all_reduce every process needs the same classes; give num_classes or classes")
                num_classes, classes = resolve_classes(label_values(labels, rows=rows, where=where), weights, where)
            B = batch_size or batch_rows(num_classes)
            batches = _array_batches(feats, labs, B, where)
            dim, total = int(feats.row_shape[0]), -(-len(feats) // B)
        stats = stream_statistics(
            batches, num_classes, classes=classes, dim=dim, weights=weights, bias=bias, device=device,
            progress=progress, total=total, all_reduce=all_reduce, group=group, where=where,
        )
    finally:
        for r in readers:
            r.close()
    return stats.report(rtol=rtol, global_mean=global_mean, center_weights=center_weights)


def resolve_classes(values: torch.Tensor, weights: Any | None, where: str) -> tuple[int, torch.Tensor | None]:
    """``(C, classes)`` for the sorted distinct label values: the values are the classes
    (``classes`` returned for the label map), except when a classifier has more rows and the
    labels lie in ``[0, rows)``: then they index its rows (``classes`` None) and a row
    without samples is reported as an empty class."""
    if values.numel() == 0:
        raise ShapeError(f"{where}: no samples (labels is empty)")
    rows = None
    if weights is not None:
        shape = tuple(weights.shape) if hasattr(weights, "shape") else np.shape(weights)
        rows = shape[0] if len(shape) == 2 else None
    if rows is None or rows == values.numel():
        return int(values.numel()), values
    if int(values[0]) >= 0 and int(values[-1]) < rows:
        return rows, None
    raise ShapeError(
        f"{where}: labels contain {values.numel()} distinct classes but weights has {rows} rows; pass a classifier with one row per class"
    )
