"""The first pass's features, kept within a byte budget so that a measurement runs the model once.

Exact two-pass measurement (docs/theory/neural-collapse.md) needs the class means
before the second pass. Keeping the first pass's features lets the second pass replay them
instead of running the model again, and a replayed pass needs ``Sigma_W`` only on the span
of the class means (``CollapseStatistics(covariance="span")``: the same report, exactly, for
``B x d x C`` instead of ``B x d x d`` work). Features that pass the budget are all dropped
and the model runs again for the second pass, which then keeps all of ``Sigma_W``
(recomputed features may differ in the last bits under non-deterministic kernels).
Used by :func:`collapselab.collapse.measure` and :func:`collapselab.train.measure.measure_features`.
"""

from __future__ import annotations

import torch

__all__ = ["FeatureCache"]


class FeatureCache:
    """``(features, labels)`` batches per key (a tracked module), while they total at most
    ``max_bytes`` (features only); ``copy``: keep copies (the model may later modify its
    tensors in place), else the tensors themselves."""

    def __init__(self, max_bytes: int, *, copy: bool = True) -> None:
        self._batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = {}
        self._room = int(max_bytes)
        self._copy = copy

    @property
    def kept(self) -> bool:
        """Whether every batch added so far is kept (the budget was not passed)."""
        return self._batches is not None

    @property
    def second_pass_covariance(self) -> bool | str:
        """``covariance=`` of the second pass: ``"span"`` for replayed features, else ``True``."""
        return "span" if self.kept else True

    def add(self, key: str, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep one batch, or drop everything once the budget is passed."""
        if self._batches is None:
            return
        self._room -= features.numel() * features.element_size()
        if self._room < 0:
            self._batches = None
            return
        batch = (features.clone(), labels.clone()) if self._copy else (features, labels)
        self._batches.setdefault(key, []).append(batch)

    def items(self) -> list[tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """``(key, batches)`` in the order the keys were first added (empty if not kept)."""
        return list(self._batches.items()) if self._batches is not None else []
