"""Epoch batching with a resumable shuffle and a rank shard for data parallel training.

The order of an epoch is a permutation drawn from one CPU ``torch.Generator`` whose state is
saved in every checkpoint, so a resumed run draws exactly the permutations the uninterrupted
run would have drawn (the "sampler position" is the epoch boundary: checkpoints are written
between epochs). Every rank draws the same permutation; global batch ``k`` is
``perm[k B : (k+1) B]`` and rank ``r`` of ``R`` takes its entries ``r, r + R, ...``, so the
union over ranks of one step's samples is the single-process batch. A last batch smaller
than ``R`` leaves ranks ``size, ..., R - 1`` with an empty share: they still run the step on
an empty batch (zero loss, zero gradient), so every rank joins the same collectives and the
averaged update is the single-process one.

Tensor data sets (a pair ``(X, labels)`` or a ``TensorDataset``) are indexed directly (no
DataLoader, no per-sample Python calls); any other ``Dataset`` yielding ``(input, label)``
goes through a ``DataLoader`` with the same index batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from ..core.data import as_label_tensor
from ..core.errors import LabelError, ParameterError, ShapeError

__all__ = ["EpochBatches", "as_source", "rank_shard"]


def _check_range(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """Refuse labels outside ``[0, num_classes)`` (a test set's labels must be training classes)."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise LabelError(f"{where}: labels must lie in [0, {num_classes}) like the training labels, found {lo if lo < 0 else hi}; relabel it with the training classes")


class _TensorSource:
    """Inputs ``X (N, ...)`` and labels ``(N,)`` indexed by index tensors.

    Labels go through :func:`~collapselab.core.data.as_label_tensor` (integral values, 1-D)
    before the int64 cast, so fractional labels are refused rather than truncated."""

    def __init__(self, X: torch.Tensor, labels: torch.Tensor, where: str) -> None:
        labels = as_label_tensor(labels, where)
        if X.shape[0] != labels.shape[0]:
            raise ShapeError(f"{where}: inputs have {X.shape[0]} rows but labels has shape {tuple(labels.shape)}; pass one label per input row")
        self.X, self.labels, self.where = X, labels, where

    def check_labels(self, num_classes: int) -> None:
        """Refuse labels outside ``[0, num_classes)`` (all at once)."""
        _check_range(self.labels, num_classes, self.where)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in index_batches:
            yield self.X[idx], self.labels[idx]


class _DatasetSource:
    """Any map-style ``Dataset`` yielding ``(input, label)``, read through a DataLoader.

    Labels are range-checked batch by batch once :meth:`check_labels` has set the class count
    (the items are only seen when read). An empty index batch (an empty DDP share) yields
    empty tensors shaped like the items (collating nothing is an error in PyTorch).
    """

    def __init__(self, dataset: Dataset, num_workers: int, where: str) -> None:
        self.dataset, self.num_workers, self.where = dataset, num_workers, where
        self.num_classes: int | None = None

    def check_labels(self, num_classes: int) -> None:
        """Check every batch read from now on against ``[0, num_classes)``."""
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate([self.dataset[0]])
        return x[:0], y[:0]

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = iter(DataLoader(self.dataset, batch_sampler=[b.tolist() for b in index_batches if b.numel()], num_workers=self.num_workers))
        for b in index_batches:
            x, y = next(loader) if b.numel() else self._empty()
            y = torch.as_tensor(y).to(torch.int64)
            if self.num_classes is not None:
                _check_range(y, self.num_classes, self.where)
            yield x, y


def rank_shard(num_samples: int, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s fixed share of ``num_samples`` samples: indices ``rank, rank + world, ...``
    (the shares of all ranks partition ``[0, num_samples)``; measurement and test passes)."""
    return torch.arange(rank, num_samples, world)


def as_source(data: Any, where: str, num_workers: int = 0) -> _TensorSource | _DatasetSource:
    """Normalise ``(X, labels)``, a ``TensorDataset`` or a ``Dataset`` into a batch source."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return _TensorSource(data[0], data[1], where)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return _TensorSource(data.tensors[0], data.tensors[1], where)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return _DatasetSource(data, num_workers, where)
    raise ParameterError(f"{where}: data must be (X, labels) tensors or a sized torch Dataset yielding (input, label), got {type(data).__name__}")


class EpochBatches:
    """Shuffled (or fixed-order) index batches of one epoch for rank ``rank`` of ``world``.

    ``batch_size=None`` is full batch. ``state()``/``set_state()`` save and restore the
    generator (part of the trainer's checkpoint).
    """

    def __init__(self, num_samples: int, batch_size: int | None, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.n = int(num_samples)
        self.batch_size = self.n if batch_size is None else int(batch_size)
        if self.batch_size < world:
            raise ParameterError(f"EpochBatches: batch_size {self.batch_size} is smaller than the {world} processes; every rank needs at least one sample per step")
        self.shuffle, self.rank, self.world = shuffle, rank, world
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    @property
    def smallest_share(self) -> int:
        """The fewest samples any rank gets in any step: ``floor(b / world)`` for the full batch
        size and for the last, possibly smaller, batch."""
        last = self.n - (len(self) - 1) * self.batch_size
        return min(self.batch_size, last) // self.world

    def epoch(self) -> list[tuple[torch.Tensor, int]]:
        """``[(this rank's indices, global batch size), ...]`` for the next epoch."""
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        out = []
        for start in range(0, self.n, self.batch_size):
            glob = order[start : start + self.batch_size]
            out.append((glob[self.rank :: self.world], int(glob.shape[0])))
        return out

    def shard(self) -> torch.Tensor:
        """This rank's fixed share of all samples (for measurement passes): :func:`rank_shard`."""
        return rank_shard(self.n, self.rank, self.world)

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
