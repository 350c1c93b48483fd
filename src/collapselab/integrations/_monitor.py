"""The framework-independent part of the neural-collapse callbacks: options, schedule, the
measurement loader, the history and its state.

:class:`CollapseMonitor` decides at which epochs to measure (log-spaced like
:func:`collapselab.train.log_spaced_epochs`, every ``k`` epochs, or a given list), builds this
rank's share of the measurement loader (:func:`shard`), runs :func:`~._measure.measure_layers`
and keeps every result as a row of :attr:`CollapseMonitor.history`. The Lightning and Hugging
Face callbacks only translate their framework's hooks, ranks and loggers into these calls.

"Without augmentation" (the default loader): the callback builds a new loader over the
training *dataset* of the framework's training loader, with its batch size and collate
function, in order, without shuffling, without ``drop_last`` and without the padding of a
``DistributedSampler`` (every sample exactly once over all ranks), and runs the model in
``eval()`` mode (dropout off, batch norm on running statistics). Random transforms that the
dataset applies in ``__getitem__`` cannot be removed from outside: pass ``loader=`` (a
``DataLoader`` over the same samples without those transforms) when the dataset augments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..collapse import CollapseReport
from ..core.errors import ParameterError
from ..core.validation import Interval, check_param
from ._measure import Layer, measure_layers, resolve_layers, split_batch

__all__ = ["CollapseMonitor", "shard", "scalars"]

# report entries that describe the measurement rather than measure collapse (not logged)
_METADATA = frozenset({"num_classes", "num_samples", "dim", "rtol", "global_mean", "weights_centred", "classes", "counts"})


def scalars(report: CollapseReport) -> dict[str, float]:
    """The numeric metrics of a report (entries that could not be measured, ``None``, are left out)."""
    return {
        k: float(v)
        for k, v in report.as_dict().items()
        if k not in _METADATA and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def shard(loader: Any, rank: int, world: int, *, batch_size: int | None = None) -> Iterable[Any]:
    """Rank ``rank``'s share of the samples of ``loader`` for a measurement.

    A ``DataLoader`` over a map-style dataset gives a new loader over ``dataset[rank::world]``
    in order (its collate function and workers; ``batch_size`` or its own): the shares are
    disjoint and cover every sample once, which the all-reduced sums need. Any other iterable
    is taken to be this rank's share already (on one process: all the data)."""
    if not isinstance(loader, DataLoader):
        return loader
    data = loader.dataset
    if isinstance(data, IterableDataset) or not isinstance(data, Dataset):
        if world > 1:
            raise ParameterError(
                "NeuralCollapseCallback: the loader reads an IterableDataset, which cannot be split by rank here; pass loader= an iterable of this rank's share"
            )
        return loader
    size = batch_size or loader.batch_size
    if size is None:
        raise ParameterError("NeuralCollapseCallback: the loader has no batch_size (a custom batch_sampler); pass measure_batch_size=")
    indices = range(rank, len(data), world)
    return DataLoader(
        Subset(data, indices), batch_size=size, shuffle=False, drop_last=False, collate_fn=loader.collate_fn, num_workers=loader.num_workers
    )


class CollapseMonitor:
    """Options, schedule and history shared by the callbacks (see the module docstring).

    Args:
        num_classes: ``C``.
        layers: ``None`` (the input of the last ``nn.Linear``, with it as the classifier), a
            module name, a :class:`~collapselab.integrations.Layer`, or a sequence of those
            (several layers are measured from the same forward passes).
        capture, pool, feature_fn: defaults for layers given by name (see ``Layer``).
        loader: the measurement data (default: the training set, see the module docstring).
        every: measure every ``every`` epochs (and at the last); ``epochs``: at these epochs
            (1-based: after that many training epochs); default: ``count`` log-spaced epochs
            in ``[1, max_epochs]``, always with 1 and ``max_epochs``.
        classes: label values when they are not ``0..C-1``.
        measure_batch_size: batch size of the measurement loader (default the loader's).
        cache_bytes: feature budget that lets one forward pass serve both passes.
        batch_fn: ``batch -> (inputs, labels)`` (default: tuples, or mappings with ``"labels"``).
        prefix: metric names are ``f"{prefix}/{layer}/{metric}"``.
        process_group: the group to reduce over (default: the framework's, i.e. the default
            group when it runs several processes).
        rtol, global_mean, center_weights: options of
            :func:`collapselab.collapse.collapse_report`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        layers: str | Layer | Sequence[str | Layer] | None = None,
        capture: str = "input",
        pool: str = "flatten",
        feature_fn: Callable[[Any], torch.Tensor] | None = None,
        loader: Iterable[Any] | None = None,
        every: int | None = None,
        epochs: Sequence[int] | None = None,
        count: int = 10,
        classes: Any | None = None,
        measure_batch_size: int | None = None,
        cache_bytes: int = 2**28,
        batch_fn: Callable[[Any], tuple[Any, Any]] = split_batch,
        prefix: str = "nc",
        process_group: Any | None = None,
        rtol: float | None = None,
        global_mean: str = "unweighted",
        center_weights: bool = False,
    ) -> None:
        where = "NeuralCollapseCallback"
        check_param("num_classes", num_classes, Interval(int, 1), where)
        check_param("count", count, Interval(int, 1), where)
        check_param("cache_bytes", cache_bytes, Interval(int, 0), where)
        if every is not None and epochs is not None:
            raise ParameterError(f"{where}: give every= or epochs=, not both")
        if every is not None:
            check_param("every", every, Interval(int, 1), where)
        if epochs is not None:
            epochs = sorted({int(check_param("epochs", e, Interval(int, 1), where)) for e in epochs})
        if measure_batch_size is not None:
            check_param("measure_batch_size", measure_batch_size, Interval(int, 1), where)
        self.num_classes = int(num_classes)
        self._layer_spec = dict(layers=layers, capture=capture, pool=pool, feature_fn=feature_fn)
        self.loader, self.every, self.epochs, self.count = loader, every, epochs, count
        self.classes, self.measure_batch_size, self.cache_bytes = classes, measure_batch_size, cache_bytes
        self.batch_fn, self.prefix, self.process_group = batch_fn, prefix, process_group
        self.options = dict(rtol=rtol, global_mean=global_mean, center_weights=center_weights)
        self.history: list[dict[str, Any]] = []
        self.reports: dict[str, CollapseReport] = {}

    # ------------------------------------------------------------------ schedule
    def schedule(self, max_epochs: int | None) -> list[int]:
        """The epochs (1-based) at which to measure, for a run of ``max_epochs`` epochs."""
        known = max_epochs is not None and max_epochs > 0
        if self.epochs is not None:
            return [e for e in self.epochs if not known or e <= max_epochs]
        if not known:
            raise ParameterError(
                "NeuralCollapseCallback: the run has no epoch limit (max_epochs unset), so log-spaced or every-k epochs are undefined; pass epochs=[...]"
            )
        if self.every is not None:
            return sorted({*range(self.every, max_epochs + 1, self.every), max_epochs})
        from ..train import log_spaced_epochs

        return log_spaced_epochs(max_epochs, self.count)

    def due(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether to measure after ``epoch`` (1-based) training epochs and not measured yet."""
        return epoch in self.schedule(max_epochs) and not any(row["epoch"] == epoch for row in self.history)

    def check(self, model: nn.Module, max_epochs: int | None) -> None:
        """Fail at the start of training, not at the first measurement: the layers must name
        modules of ``model`` and the schedule must be defined."""
        resolve_layers(model, **self._layer_spec)
        self.schedule(max_epochs)

    # ------------------------------------------------------------------ measurement
    def measure(
        self, model: nn.Module, default_loader: Any, *, epoch: int, step: int, device: Any, rank: int = 0, world: int = 1
    ) -> dict[str, float]:
        """Measure ``model`` on this rank's share, record a history row and return the flat
        metrics ``{f"{prefix}/{layer}/{metric}": value}`` (identical on every rank)."""
        source = self.loader if self.loader is not None else default_loader
        if source is None:
            raise ParameterError("NeuralCollapseCallback: no training loader to measure on; pass loader=")
        layers = resolve_layers(model, **self._layer_spec)
        self.reports = measure_layers(
            model, shard(source, rank, world, batch_size=self.measure_batch_size), self.num_classes, layers,
            device=device, distributed=world > 1, group=self.process_group, classes=self.classes,
            cache_bytes=self.cache_bytes, batch_fn=self.batch_fn, **self.options,
        )
        row = {"epoch": int(epoch), "step": int(step), "layers": {key: scalars(rep) for key, rep in self.reports.items()}}
        self.history.append(row)
        return self.flat(row)

    def flat(self, row: dict[str, Any]) -> dict[str, float]:
        """One history row as ``{f"{prefix}/{layer}/{metric}": value}`` (the logged names)."""
        return {f"{self.prefix}/{key}/{name}": value for key, metrics in row["layers"].items() for name, value in metrics.items()}

    def from_flat(self, metrics: dict[str, Any], *, epoch: int, step: int) -> dict[str, Any] | None:
        """The history row of logged ``metrics`` (the inverse of :meth:`flat`), None without any."""
        layers: dict[str, dict[str, float]] = {}
        head = self.prefix + "/"
        for name, value in metrics.items():
            if name.startswith(head) and isinstance(value, (int, float)) and "/" in name[len(head):]:
                key, metric = name[len(head):].rsplit("/", 1)
                layers.setdefault(key, {})[metric] = float(value)
        return {"epoch": int(epoch), "step": int(step), "layers": layers} if layers else None

    def series(self, layer: str, metric: str) -> tuple[list[int], list[float]]:
        """``(epochs, values)`` of one metric of one layer over the history (NaN where missing)."""
        rows = [row for row in self.history if layer in row["layers"]]
        return [row["epoch"] for row in rows], [row["layers"][layer].get(metric, math.nan) for row in rows]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The history (plain lists, dicts and floats), for checkpoints."""
        return {"history": [{**row, "layers": {k: dict(v) for k, v in row["layers"].items()}} for row in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s history (a resumed run does not measure those epochs again)."""
        if not isinstance(state, dict) or not isinstance(state.get("history"), list):
            raise ParameterError("NeuralCollapseCallback.load_state_dict: expected the dict of state_dict() with a 'history' list")
        self.history = [{**row, "layers": {k: dict(v) for k, v in row["layers"].items()}} for row in state["history"]]
