"""One measurement pass: the classifier's input features of a data shard into NC statistics.

A forward hook on the classifier captures its input (flattened to ``(B, d)``) while the model
runs in eval mode without gradients; the features go into a streaming
``collapselab.collapse.CollapseStatistics`` (float64 sufficient statistics, spec/neural_collapse.md
"How to compute"), which is summed over processes before the report, so the report of ``R``
processes measuring disjoint shards equals the report of one process measuring all samples.
The pass also sums the loss and the classification errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..collapse import CollapseStatistics

__all__ = ["measure_features", "capture_input"]

# report fields that describe the measurement rather than measure collapse (not logged)
_METADATA = frozenset({"num_classes", "num_samples", "dim", "rtol", "global_mean", "weights_centred", "classes", "counts"})


class capture_input:
    """Context manager: ``with capture_input(module) as box:`` ... ``box[0]`` is the input of
    the module's last call, flattened to ``(B, d)`` (detached)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.box: list[torch.Tensor] = []

    def _hook(self, _mod: nn.Module, args: tuple[Any, ...]) -> None:
        self.box[:] = [args[0].detach().flatten(1)]

    def __enter__(self) -> list[torch.Tensor]:
        self.handle = self.module.register_forward_pre_hook(self._hook)
        return self.box

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@torch.no_grad()
def measure_features(
    model: nn.Module,
    classifier: nn.Module,
    source: Any,
    indices: torch.Tensor,
    batch_size: int,
    num_classes: int,
    *,
    prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weights: torch.Tensor,
    bias: torch.Tensor | None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cache_bytes: int = 2**28,
) -> tuple[dict[str, float], torch.Tensor]:
    """NC report scalars and summed batch ``scores`` of ``model`` on ``source[indices]`` (all ranks).

    Two passes, as the per-sample metrics need the final class means (NC4, nearest-centre
    accuracy, within-class distances; spec/neural_collapse.md): the first runs the model,
    sums loss and errors and accumulates class sums; the second feeds the features into
    statistics built with those means and the classifier ``weights (P, d)``, ``bias (P,)``;
    a classifier with ``P != num_classes`` outputs (MSE targets of another width) gives the
    class-level metrics only (the classifier metrics are NaN).
    The second pass reuses the first pass's features when they fit in ``cache_bytes``
    (default 256 MiB), and otherwise runs the model again. ``reduce`` sums a float64 tensor
    over processes (``None`` on one process); the statistics are all-reduced by their own
    ``all_reduce``. Returns the scalar entries of ``CollapseReport.as_dict()`` (NaN where a
    metric is unavailable, so every measured row has the same keys) and the sum of
    ``scores(outputs, labels)`` (float64, e.g. loss sum, errors, count) over all batches.
    """
    was_training = model.training
    model.eval()
    dim, device = int(weights.shape[1]), weights.device
    first = CollapseStatistics(num_classes, dim=dim, covariance=False, device=device)
    sums = torch.zeros((), dtype=torch.float64, device=device)  # broadcasts to the scores' shape
    chunks = list(indices.split(batch_size))
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if len(indices) * dim * weights.element_size() <= cache_bytes else None
    with capture_input(classifier) as box:
        for x, y in source.batches(chunks):
            x, y = prepare(x, y)
            out = model(x)
            first.update(box[0], y)
            if cache is not None:
                cache.append((box[0], y))
            sums = sums + scores(out, y)
        if reduce is not None:
            first.all_reduce()
            sums = reduce(sums)
        per_class = weights.shape[0] == num_classes
        second = CollapseStatistics(num_classes, dim=dim, means=first.means(), weights=weights if per_class else None, bias=bias if per_class else None, device=device)
        if cache is None:
            for x, y in source.batches(chunks):
                x, y = prepare(x, y)
                model(x)
                second.update(box[0], y)
        else:
            for h, y in cache:
                second.update(h, y)
    model.train(was_training)
    if reduce is not None:
        second.all_reduce()
    report = second.report().as_dict()
    scalars = {k: math.nan if v is None else float(v) for k, v in report.items() if k not in _METADATA and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))}
    return scalars, sums
