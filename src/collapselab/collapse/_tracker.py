"""Measure neural collapse of any ``nn.Module``: forward hooks feeding streaming statistics.

:class:`CollapseTracker` hooks named submodules (default: the input of the last
``nn.Linear``, i.e. the penultimate features, with that layer as the classifier) and, while
:meth:`CollapseTracker.labels` is active, adds each batch's features to a
:class:`CollapseStatistics` per module: one forward pass serves every tracked layer, during
training or evaluation. :func:`measure` runs the exact two-pass measurement over a
``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..core.errors import ParameterError, UnknownNameError
from ..core.validation import Interval, OneOf, check_param
from ._cache import FeatureCache
from ._report import CollapseReport
from ._streaming import CollapseStatistics

__all__ = ["CollapseTracker", "measure", "last_linear"]


def last_linear(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` in ``model.named_modules()`` order (registration order,
    which is the forward order for ``nn.Sequential`` and the usual ``self.fc`` models)."""
    names = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    if not names:
        raise ParameterError(
            f"CollapseTracker: {type(model).__name__} has no nn.Linear layer; name the module to hook with modules=..."
        )
    return names[-1]


class CollapseTracker:
    """Forward hooks that accumulate neural-collapse statistics of one or more layers.

    Args:
        model: any ``nn.Module``.
        num_classes: ``C`` (labels in ``[0, C)``, or the values in ``classes``).
        modules: a module name (as in ``model.named_modules()``) or a sequence of names;
            default the last ``nn.Linear``.
        capture: ``"input"`` (features entering the module; canonical for a classifier
            layer) or ``"output"`` (what it returns, e.g. a block of a CNN).
        pool: how features with more than 2 dimensions become ``(B, d)``: ``"flatten"``
            (all of ``C x H x W``) or ``"avg"`` (mean over spatial dimensions, ``d = C``).
        means: reference class means per module (a mapping name -> (C, d), or one tensor for
            a single module), e.g. from a previous epoch: they enable NC4, nearest-class-centre
            accuracy and within-class distances in the same pass.
        classes: label values, when they are not ``0..C-1`` (see :class:`CollapseStatistics`).
        covariance: accumulate the ``d x d`` Gram (False: means only; ``"span"``, with
            ``means``: only on the span of the class means, see :class:`CollapseStatistics`).
        classifier: take the classifier from a hooked ``nn.Linear`` with ``capture="input"``
            and ``out_features == C`` (accuracy, margins, NC3/NC4); its current weights are
            read at every batch and at :meth:`report`.

    Use ``with tracker.labels(y): model(x)``; forwards outside the block are ignored. A module
    called several times in one forward adds its features each time. Call :meth:`remove` (or
    use the tracker as a context manager) when done. Per batch the cost is one ``B x d x d`` float64 GEMM per layer (plus
    ``B x d x C`` with a classifier).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        modules: str | Sequence[str] | None = None,
        capture: str = "input",
        pool: str = "flatten",
        means: Mapping[str, Any] | Any | None = None,
        classes: Any | None = None,
        covariance: bool | str = True,
        classifier: bool = True,
    ) -> None:
        where = "CollapseTracker"
        if not isinstance(model, nn.Module):
            raise ParameterError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
        check_param("num_classes", num_classes, Interval(int, 1), where)
        check_param("capture", capture, OneOf(["input", "output"]), where)
        check_param("pool", pool, OneOf(["flatten", "avg"]), where)
        names = [last_linear(model)] if modules is None else ([modules] if isinstance(modules, str) else list(modules))
        if not names:
            raise ParameterError(f"{where}: modules is empty; name at least one module or pass None for the last nn.Linear")
        table = dict(model.named_modules())
        for name in names:
            if name not in table:
                known = ", ".join(repr(n) for n in list(table)[1:21])
                raise UnknownNameError(f"{where}: model has no module named {name!r}; known modules include {known}")
        if means is not None and not isinstance(means, Mapping):
            if len(names) != 1:
                raise ParameterError(f"{where}: give means as a mapping name -> (C, d) when tracking {len(names)} modules")
            means = {names[0]: means}
        self.model = model
        self.num_classes = int(num_classes)
        self.capture, self.pool = capture, pool
        self._modules = {name: table[name] for name in names}
        self._classifiers: dict[str, nn.Linear] = {}
        self.statistics: dict[str, CollapseStatistics] = {}
        for name, mod in self._modules.items():
            if classifier and capture == "input" and isinstance(mod, nn.Linear) and mod.out_features == self.num_classes:
                self._classifiers[name] = mod
            W, b = self._classifier_of(name)
            ref = None if means is None else means.get(name)
            self.statistics[name] = CollapseStatistics(
                self.num_classes, classes=classes, means=ref, weights=W, bias=b, covariance=covariance,
                device=None if ref is not None else (W.device if W is not None else None),
            )
        self._labels: torch.Tensor | None = None
        self._cache: FeatureCache | None = None  # measure() sets one to keep the features for its second pass
        self._handles = [mod.register_forward_hook(self._hook(name)) for name, mod in self._modules.items()]

    @property
    def names(self) -> list[str]:
        """The tracked module names."""
        return list(self._modules)

    def _classifier_of(self, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        lin = self._classifiers.get(name)
        if lin is None:
            return None, None
        return lin.weight.detach(), None if lin.bias is None else lin.bias.detach()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if self._labels is None:
                return
            feats = inputs[0] if self.capture == "input" else output
            if not isinstance(feats, torch.Tensor):
                raise ParameterError(
                    f"CollapseTracker: the {self.capture} of module {name!r} is a {type(feats).__name__}, not a tensor; hook a module whose {self.capture} is the features"
                )
            feats = feats.detach()
            if feats.ndim > 2:
                feats = feats.flatten(2).mean(2) if self.pool == "avg" else feats.flatten(1)
            W, b = self._classifier_of(name)
            self.statistics[name].update(feats, self._labels, weights=W, bias=b)
            if self._cache is not None:
                self._cache.add(name, feats, self._labels)

        return hook

    @contextmanager
    def labels(self, labels: Any) -> Iterator["CollapseTracker"]:
        """Record the forwards inside the block with these labels (B,)."""
        self._labels = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
        try:
            yield self
        finally:
            self._labels = None

    def means(self) -> dict[str, torch.Tensor]:
        """Class means (C, d) per module (for the next pass or epoch)."""
        return {name: st.means() for name, st in self.statistics.items()}

    def report(self, **options: Any) -> dict[str, CollapseReport]:
        """A :class:`CollapseReport` per module, with the classifier's current weights;
        ``options`` as in :meth:`CollapseStatistics.report` (rtol, global_mean, center_weights)."""
        out = {}
        for name, st in self.statistics.items():
            W, b = self._classifier_of(name)
            out[name] = st.report(W, b, **options) if W is not None else st.report(**options)
        return out

    def remove(self) -> None:
        """Remove the hooks (the statistics stay readable)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "CollapseTracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping) and "labels" in batch:
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    raise ParameterError(
        f"measure: each batch must be (inputs, labels, ...) or a dict with 'labels', got {type(batch).__name__}; wrap the loader"
    )


def to_device(x: Any, device: torch.device) -> Any:
    """Move the tensors of a batch's inputs (a tensor, or a mapping/tuple/list of them) to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x


def _feed(tracker: CollapseTracker, model: nn.Module, loader: Iterable[Any], device: torch.device) -> None:
    for batch in loader:
        x, y = _split_batch(batch)
        x = to_device(x, device)
        with tracker.labels(y):
            if isinstance(x, Mapping):
                model(**x)
            else:
                model(x)


def measure(
    model: nn.Module,
    loader: Iterable[Any],
    num_classes: int,
    *,
    module: str | Sequence[str] | None = None,
    device: torch.device | str | None = None,
    capture: str = "input",
    pool: str = "flatten",
    classes: Any | None = None,
    cache_bytes: int = 2**28,
    **options: Any,
) -> CollapseReport | dict[str, CollapseReport]:
    """Exact two-pass neural-collapse measurement of ``model`` on every batch of ``loader``.

    Pass 1 gathers class means (counts and sums only); pass 2 accumulates statistics shifted by
    those means together with NC4, accuracies and margins, so nothing cancels. When the
    features of all tracked modules fit in ``cache_bytes`` (default 256 MiB) the model runs
    once: pass 2 replays the features kept from pass 1 and holds ``Sigma_W`` only on the span
    of the class means (``covariance="span"``: the same report, for ``B x d x C`` instead of
    ``B x d x d`` work); otherwise it runs the model again and keeps all of ``Sigma_W``
    (recomputed features may differ in the last bits). ``cache_bytes=0`` always runs twice.
    The model runs in ``eval()`` mode under ``torch.no_grad()`` and its mode is restored. Batches are
    ``(inputs, labels, ...)`` (or dicts with ``"labels"``); inputs go to ``device`` (default: the
    model's). Returns one :class:`CollapseReport` for a single module (default: the input of
    the last ``nn.Linear``), or a dict name -> report for a sequence of names. ``options``:
    rtol, global_mean, center_weights.
    """
    check_param("cache_bytes", cache_bytes, Interval(int, 0), "measure")
    params = next(iter(model.parameters()), None)
    dev = torch.device(device) if device is not None else (params.device if params is not None else torch.device("cpu"))
    kwargs = dict(modules=module, capture=capture, pool=pool, classes=classes)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cache = FeatureCache(cache_bytes)
            with CollapseTracker(model, num_classes, covariance=False, classifier=False, **kwargs) as first:
                first._cache = cache
                _feed(first, model, loader, dev)
            with CollapseTracker(model, num_classes, means=first.means(), covariance=cache.second_pass_covariance, **kwargs) as second:
                if not cache.kept:
                    _feed(second, model, loader, dev)
                else:
                    for name, batches in cache.items():
                        W, b = second._classifier_of(name)
                        for feats, labels in batches:
                            second.statistics[name].update(feats, labels, weights=W, bias=b)
    finally:
        model.train(was_training)
    reports = second.report(**options)
    return reports[second.names[0]] if module is None or isinstance(module, str) else reports
