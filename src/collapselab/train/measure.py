"""One measurement pass: the classifier's input features of a data shard into NC statistics.

A forward hook on the classifier captures its input (flattened to ``(B, d)``) while the model
runs in eval mode without gradients; the features go into a streaming
``collapselab.collapse.CollapseStatistics`` (float64 sufficient statistics, docs/theory/neural-collapse.md
"How to compute"), which is summed over processes before the report, so the report of ``R``
processes measuring disjoint shards equals the report of one process measuring all samples.
The pass also sums the loss and the classification errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..collapse import CollapseStatistics, FeatureCache
from ..core.errors import ParameterError

__all__ = ["capture_input", "exact_batchnorm_statistics", "measure_features"]

# rows per statistics update or scores call (few large chunks instead of one per batch; see _Chunks)
_STATS_ROWS = 1024
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


@contextmanager
def exact_batchnorm_statistics(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Iterator[None]:
    """Inside the block the batch-norm layers of ``model`` hold the exact statistics of the data
    ``inputs`` (a sequence of batches, e.g. the whole training set): the mean and the biased
    variance that training-mode batch norm would use on the concatenated batches. The model keeps
    its mode; on exit the running statistics (and momentum) are restored, so training continues
    unchanged. The eval-mode network inside the block is then exactly the training-mode network
    applied to all of ``inputs`` as one batch.

    "Precise BN" (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", Sec 3): the running
    statistics that eval mode divides by are an exponential average over past mini-batches of
    past weights, so they lag and carry the noise of small batches (docs/theory/square-loss.md).
    One batch: one training-mode pass with ``momentum=None`` (as ``torch.optim.swa_utils.update_bn``),
    its unbiased running variance rescaled to the biased one. Several batches: layer by layer
    in forward order, one eval-mode pass each with float64 sums of the layer's input, so every
    layer sees inputs normalised by the exact statistics of the layers before it (one pass per
    batch-norm layer). A model without batch norm (or whose batch norm keeps no running
    statistics) is left untouched.
    """
    # layers built with track_running_stats=False normalise with batch statistics in eval mode too
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    batches = [x for x in inputs if x.shape[0]]
    if not batches:
        raise ParameterError("exact_batchnorm_statistics: inputs hold no sample; pass the training inputs as a list of batches")
    saved = [(m.momentum, {k: v.clone() for k, v in m.named_buffers()}) for m in layers]
    was_training = model.training
    try:
        with torch.no_grad():
            if len(batches) == 1:
                _one_batch_statistics(model, layers, batches[0])
            else:
                _layerwise_statistics(model, layers, batches)
        model.train(was_training)
        yield
    finally:
        for m, (momentum, buffers) in zip(layers, saved):
            m.momentum = momentum
            for k, v in m.named_buffers():
                v.copy_(buffers[k])
        model.train(was_training)


def _one_batch_statistics(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> None:
    """One training-mode pass: each layer's running statistics become those of its input ``x``."""
    counts: dict[nn.Module, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: counts.__setitem__(mod, args[0].numel() // args[0].shape[1])) for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    for m in layers:
        n = counts.get(m, 0)
        if n > 1:  # torch stores the unbiased variance; training mode normalises with the biased one
            m.running_var.mul_((n - 1) / n)


def _layerwise_statistics(model: nn.Module, layers: list[nn.Module], batches: list[torch.Tensor]) -> None:
    """Layer by layer: the input's exact mean and biased variance over all ``batches`` (float64 sums)."""
    model.eval()
    for bn in layers:
        sums: list[torch.Tensor] = []

        def accumulate(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().to(torch.float64).transpose(0, 1).flatten(1)  # (channels, samples x positions)
            sums.append(torch.stack([torch.full_like(x[:, 0], x.shape[1]), x.sum(1), (x * x).sum(1)]))

        handle = bn.register_forward_pre_hook(accumulate)
        try:
            for x in batches:
                model(x)
        finally:
            handle.remove()
        n, s1, s2 = torch.stack(sums).sum(0)
        mean = s1 / n
        bn.running_mean.copy_(mean)
        bn.running_var.copy_((s2 / n - mean * mean).clamp_min(0.0))


@torch.inference_mode()
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
    accuracy, within-class distances; docs/theory/neural-collapse.md): the first runs the model,
    sums loss and errors and accumulates class sums; the second feeds the features into
    statistics built with those means and the classifier ``weights (P, d)``, ``bias (P,)``;
    a classifier with ``P != num_classes`` outputs (MSE targets of another width) gives the
    class-level metrics only (the classifier metrics are NaN).

    Per-batch work is kept to the forward pass: features (for the statistics) and outputs (for
    ``scores``) are gathered into chunks of at least ``_STATS_ROWS`` rows before they are
    processed (a statistics update or a ``scores`` call has a fixed cost per call, so few
    large chunks are cheaper than one per batch). When the features fit in ``cache_bytes``
    (default 256 MiB) the model runs once: the chunks are kept for the second pass, which
    holds ``Sigma_W`` only on the span of the class means (``covariance="span"``: the same
    report, exactly, for ``B x d x C`` instead of ``B x d x d`` work). Otherwise the model
    runs again for the second pass, which then keeps all of ``Sigma_W`` (recomputed features
    may differ in the last bits under non-deterministic kernels).
    ``reduce`` sums a float64 tensor over processes (``None`` on one process); the
    statistics are all-reduced by their own ``all_reduce``. Returns the scalar entries of
    ``CollapseReport.as_dict()`` (NaN where a metric is unavailable, so every measured row
    has the same keys) and the sum of ``scores(outputs, labels)`` (float64, e.g. loss sum,
    errors, count) over all batches.
    """
    was_training = model.training
    model.eval()
    dim, device = int(weights.shape[1]), weights.device
    first = CollapseStatistics(num_classes, dim=dim, covariance=False, device=device)
    totals: list[torch.Tensor] = []
    chunks = list(indices.split(batch_size))
    cache = FeatureCache(cache_bytes, copy=False)

    def first_pass(h: torch.Tensor, y: torch.Tensor) -> None:  # h: a fresh concatenated chunk, kept as is
        first.update(h, y)
        cache.add("features", h, y)

    features, outputs = _Chunks(first_pass), _Chunks(lambda out, y: totals.append(scores(out, y)))
    with capture_input(classifier) as box:
        for x, y in source.batches(chunks):
            x, y = prepare(x, y)
            outputs.add(model(x), y)
            features.add(box[0], y)
        features.flush()
        outputs.flush()
        sums = torch.stack(totals).sum(0) if totals else torch.zeros((), dtype=torch.float64, device=device)  # an empty shard
        if reduce is not None:
            first.all_reduce()
            sums = reduce(sums)
        per_class = weights.shape[0] == num_classes
        second = CollapseStatistics(
            num_classes, dim=dim, means=first.means(), weights=weights if per_class else None, bias=bias if per_class else None,
            covariance=cache.second_pass_covariance, device=device,
        )
        if not cache.kept:
            again = _Chunks(second.update)
            for x, y in source.batches(chunks):
                x, y = prepare(x, y)
                model(x)
                again.add(box[0], y)
            again.flush()
        else:
            for _, batches in cache.items():
                for h, y in batches:
                    second.update(h, y)
    model.train(was_training)
    if reduce is not None:
        second.all_reduce()
    report = second.report().as_dict()
    scalars = {k: math.nan if v is None else float(v) for k, v in report.items() if k not in _METADATA and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))}
    return scalars, sums


class _Chunks:
    """Collects ``(values, labels)`` batches and hands them to ``consume`` concatenated, in
    chunks of at least ``_STATS_ROWS`` rows; :meth:`flush` hands over the rest."""

    def __init__(self, consume: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        self.consume = consume
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.rows = 0

    def add(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        self.parts.append((values, labels))
        self.rows += int(labels.shape[0])
        if self.rows >= _STATS_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            values, labels = zip(*self.parts)
            self.parts, self.rows = [], 0
            self.consume(torch.cat(values), torch.cat(labels))
