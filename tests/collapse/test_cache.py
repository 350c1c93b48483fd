"""FeatureCache: the byte budget, copies, and the second pass's covariance."""

from __future__ import annotations

import torch

from collapselab.collapse import FeatureCache


def _batch(rows, dim=3):
    return torch.ones(rows, dim, dtype=torch.float64), torch.zeros(rows, dtype=torch.int64)


def test_keeps_batches_per_key_up_to_the_budget_exactly():
    h, y = _batch(2)  # 2 * 3 * 8 = 48 bytes
    cache = FeatureCache(96)
    cache.add("a", h, y)
    cache.add("b", h, y)  # 96 bytes: exactly the budget
    assert cache.kept and cache.second_pass_covariance == "span"
    assert [(k, len(v)) for k, v in cache.items()] == [("a", 1), ("b", 1)]
    h.add_(1.0)  # copies by default: the model may modify its tensors in place
    assert float(cache.items()[0][1][0][0].max()) == 1.0
    cache.add("a", *_batch(0))  # an empty batch costs nothing
    cache.add("a", *_batch(1))  # 24 bytes more: over budget, everything is dropped
    assert not cache.kept and cache.second_pass_covariance is True and cache.items() == []
    cache.add("a", *_batch(1))  # stays dropped
    assert not cache.kept


def test_no_copy_keeps_the_tensors_and_zero_budget_keeps_nothing():
    h, y = _batch(2)
    cache = FeatureCache(1000, copy=False)
    cache.add("features", h, y)
    assert cache.items()[0][1][0][0] is h
    none = FeatureCache(0)
    none.add("features", h, y)
    assert not none.kept
