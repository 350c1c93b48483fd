"""Exact two-pass neural-collapse measurement of several layers, reduced over processes.

One forward pass per measurement pass feeds every chosen layer (forward hooks, :class:`Layer`):
features of layer ``l`` go into a :class:`~collapselab.collapse.CollapseStatistics` of their own,
so NC1, NC2, nearest-class-centre accuracy, ... across depth come from the same forwards
(the layer-wise studies of He and Su 2023, "A law of data separation in deep learning", and
Rangamani et al. 2023, "Feature learning in deep classifiers through intermediate neural
collapse", measure these metrics layer by layer).

Pass 1 accumulates class counts and sums (``covariance=False``), all-reduced over the ranks
of ``group``, which gives the exact global class means ``mu_c``. Pass 2 accumulates, shifted
by those means, the within-class scatter and the per-sample rules (NC4, nearest-class-centre
accuracy, margins) and is all-reduced again; the report is
:meth:`~collapselab.collapse.CollapseStatistics.report`. Pass 2 replays the features kept
from pass 1 when every rank kept them (:class:`~collapselab.collapse.FeatureCache`: the model
runs once, and ``Sigma_W`` is held on the span of the class means, ``covariance="span"``, the
same report) and runs the model again otherwise (the ranks agree on which, with one
collective, since the two choices reduce buffers of different sizes).

Sharding: rank ``r`` of ``R`` measures its own share; the shares must be disjoint and cover
the data once (:func:`collapselab.integrations._monitor.shard` builds ``dataset[r::R]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..collapse import CollapseReport, CollapseStatistics, FeatureCache, last_linear
from ..collapse._tracker import to_device
from ..core.errors import ParameterError, ShapeError, UnknownNameError
from ..core.validation import OneOf, check_param

__all__ = ["Layer", "resolve_layers", "measure_layers", "split_batch"]


@dataclass(frozen=True)
class Layer:
    """One place in the network to measure.

    module: a name of ``model.named_modules()`` (``""`` is the model itself);
    capture: ``"input"`` (the first positional input of the module: canonical for a
    classifier layer) or ``"output"`` (what it returns, e.g. a block);
    feature_fn: maps the captured value to features ``(B, ...)``, e.g.
    ``lambda out: out.last_hidden_state[:, 0]`` (the CLS token of an encoder's output) or
    ``lambda out: out[0].mean(1)`` (mean over tokens); default: the captured tensor itself;
    pool: how features of more than 2 dimensions become ``(B, d)``: ``"flatten"`` or
    ``"avg"`` (mean over all dimensions after the channel one, e.g. global average pooling);
    name: the key in the logs and the history (default the module name, ``"model"`` for ``""``).

    The classifier metrics (accuracy, NC3, NC4, margins) are measured when the layer is the
    input of an ``nn.Linear`` with ``C`` outputs and no ``feature_fn``: its weights are ``W``, ``b``.
    """

    module: str
    capture: str = "input"
    feature_fn: Callable[[Any], torch.Tensor] | None = None
    pool: str = "flatten"
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, str):
            raise ParameterError(f"Layer: module must be a module name (str), got {type(self.module).__name__}")
        check_param("capture", self.capture, OneOf(["input", "output"]), "Layer")
        check_param("pool", self.pool, OneOf(["flatten", "avg"]), "Layer")
        if self.feature_fn is not None and not callable(self.feature_fn):
            raise ParameterError(f"Layer: feature_fn must be callable, got {type(self.feature_fn).__name__}")

    @property
    def key(self) -> str:
        """The name under which the layer's metrics are logged."""
        return self.name if self.name is not None else (self.module or "model")


def resolve_layers(model: nn.Module, layers: Any, *, capture: str = "input", pool: str = "flatten", feature_fn: Any = None) -> list[Layer]:
    """``layers`` (None: the input of the last ``nn.Linear``; a name; a :class:`Layer`; or a
    sequence of those; names get ``capture``, ``pool`` and ``feature_fn``) as :class:`Layer`
    objects, checked against ``model``'s module names and for distinct keys."""
    where = "NeuralCollapseCallback"
    if layers is None:
        items: list[Any] = [Layer(last_linear(model))]
    else:
        items = [layers] if isinstance(layers, (str, Layer)) else list(layers)
    out = []
    for item in items:
        if isinstance(item, str):
            item = Layer(item, capture=capture, pool=pool, feature_fn=feature_fn)
        elif not isinstance(item, Layer):
            raise ParameterError(f"{where}: layers must be module names or Layer objects, got {type(item).__name__}")
        out.append(item)
    if not out:
        raise ParameterError(f"{where}: layers is empty; name at least one module or pass None for the input of the last nn.Linear")
    table = dict(model.named_modules())
    for layer in out:
        if layer.module not in table:
            known = ", ".join(repr(n) for n in list(table)[1:21])
            raise UnknownNameError(f"{where}: the model has no module named {layer.module!r}; known modules include {known}")
    keys = [layer.key for layer in out]
    if len(set(keys)) != len(keys):
        raise ParameterError(f"{where}: two layers have the same key among {keys}; give them distinct Layer(name=...)")
    return out


class _Probe:
    """Forward hooks that keep, per layer, the features of the latest forward (B, d)."""

    def __init__(self, model: nn.Module, layers: Sequence[Layer]) -> None:
        table = dict(model.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [table[layer.module].register_forward_hook(self._hook(layer)) for layer in layers]

    def _hook(self, layer: Layer) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            value = (inputs[0] if inputs else None) if layer.capture == "input" else output
            if layer.feature_fn is not None:
                value = layer.feature_fn(value)
            if not isinstance(value, torch.Tensor) or value.ndim < 2:
                what = type(value).__name__ if not isinstance(value, torch.Tensor) else f"tensor of shape {tuple(value.shape)}"
                raise ParameterError(
                    f"NeuralCollapseCallback: the {layer.capture} of module {layer.module!r} gives a {what}, not features (B, d); "
                    "pass Layer(..., feature_fn=...) that returns a (B, ...) tensor"
                )
            if layer.key in self.features:
                raise ParameterError(
                    f"NeuralCollapseCallback: module {layer.module!r} ran twice in one forward; measure a module that runs once per forward"
                )
            value = value.detach()
            if value.ndim > 2:
                value = value.flatten(2).mean(2) if layer.pool == "avg" else value.flatten(1)
            self.features[layer.key] = value

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """``(inputs, labels)`` of a batch ``(inputs, labels, ...)`` or a mapping with ``"labels"``
    (or ``"label"``; the inputs are the other entries, passed as keyword arguments)."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        for key in ("labels", "label"):
            if key in batch:
                return {k: v for k, v in batch.items() if k != key}, batch[key]
    raise ParameterError(
        f"NeuralCollapseCallback: a batch must be (inputs, labels, ...) or a mapping with 'labels', got {type(batch).__name__}; pass batch_fn="
    )


def _forward(model: nn.Module, inputs: Any) -> None:
    if isinstance(inputs, Mapping):
        model(**inputs)
    else:
        model(inputs)


def _classifier(model: nn.Module, layer: Layer, num_classes: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    mod = dict(model.named_modules())[layer.module]
    if layer.capture == "input" and layer.feature_fn is None and isinstance(mod, nn.Linear) and mod.out_features == num_classes:
        return mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
    return None, None


def _passes(model: nn.Module, loader: Iterable[Any], layers: Sequence[Layer], device: torch.device, batch_fn: Callable[[Any], tuple[Any, Any]]):
    """Yield ``(key, features, labels)`` for every layer of every batch of ``loader``."""
    probe = _Probe(model, layers)
    try:
        for batch in loader:
            inputs, labels = batch_fn(batch)
            labels = torch.as_tensor(labels)
            probe.features.clear()
            _forward(model, to_device(inputs, device))
            for layer in layers:
                feats = probe.features.get(layer.key)
                if feats is None:
                    raise ParameterError(f"NeuralCollapseCallback: module {layer.module!r} did not run in the forward pass; choose a module the forward uses")
                if feats.shape[0] != labels.shape[0]:
                    raise ShapeError(
                        f"NeuralCollapseCallback: layer {layer.key!r} gave {feats.shape[0]} feature rows for {labels.shape[0]} labels; "
                        "its features must have the batch as first dimension (use feature_fn)"
                    )
                yield layer.key, feats, labels
    finally:
        probe.remove()


def _agree(values: list[float], op: Any, device: torch.device, group: Any) -> list[float]:
    import torch.distributed as dist

    buf = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=op, group=group)
    return buf.tolist()


@torch.no_grad()
def measure_layers(
    model: nn.Module,
    loader: Iterable[Any],
    num_classes: int,
    layers: Sequence[Layer],
    *,
    device: torch.device | str,
    distributed: bool = False,
    group: Any | None = None,
    classes: Any | None = None,
    cache_bytes: int = 2**28,
    batch_fn: Callable[[Any], tuple[Any, Any]] = split_batch,
    **options: Any,
) -> dict[str, CollapseReport]:
    """A :class:`~collapselab.collapse.CollapseReport` per layer key, from this rank's share
    ``loader`` summed over the ranks of ``group`` when ``distributed`` (every rank must call).

    The model runs in ``eval()`` mode without gradients (dropout off, batch norm on its
    running statistics) and its mode is restored. ``options``: ``rtol``, ``global_mean``,
    ``center_weights`` of :meth:`~collapselab.collapse.CollapseStatistics.report`.
    """
    import torch.distributed as dist

    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        cache = FeatureCache(cache_bytes)
        first = {layer.key: CollapseStatistics(num_classes, classes=classes, covariance=False) for layer in layers}
        for key, feats, labels in _passes(model, loader, layers, device, batch_fn):
            first[key].update(feats, labels)
            cache.add(key, feats, labels)
        kept = cache.kept
        if distributed:
            kept = _agree([float(kept)], dist.ReduceOp.MIN, device, group)[0] == 1.0
            # a rank with an empty share learns each layer's dimension from the others
            dims = _agree([float(first[layer.key].dim or 0) for layer in layers], dist.ReduceOp.MAX, device, group)
            for layer, d in zip(layers, dims):
                if first[layer.key].dim is None and d > 0:
                    first[layer.key] = CollapseStatistics(num_classes, classes=classes, covariance=False, dim=int(d), device=device)
                first[layer.key].all_reduce(group)
        second = {}
        for layer in layers:
            W, b = _classifier(model, layer, num_classes)
            second[layer.key] = CollapseStatistics(
                num_classes, classes=classes, means=first[layer.key].means(), weights=W, bias=b, covariance="span" if kept else True
            )
        replay = ((key, feats, labels) for key, batches in cache.items() for feats, labels in batches)
        for key, feats, labels in replay if kept else _passes(model, loader, layers, device, batch_fn):
            second[key].update(feats, labels)
    finally:
        model.train(was_training)
    if distributed:
        for st in second.values():
            st.all_reduce(group)
    return {key: st.report(**options) for key, st in second.items()}
