"""A catalogue of problems with known explicit minimizers.

Each problem names a construction kind, builds its data deterministically, and says
whether the construction reaches zero cost (``exact``) or a known positive value.
Tests run every construction test over all problems x {float64, float32}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from collapselab.core.data import gaussian_clusters, sequentially_separable

__all__ = ["Problem", "PROBLEMS", "two_axes", "DTYPES"]

DTYPES = [torch.float64, torch.float32]


@dataclass(frozen=True)
class Problem:
    name: str
    kind: str
    make: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    options: dict[str, Any] = field(default_factory=dict)
    exact: bool = True
    """True when the construction has zero cost (CE23 Thm 2.3, CE24 Thm 5.2, Prop 4.1)."""


def two_axes(delta: float = 0.05) -> tuple[np.ndarray, np.ndarray, None]:
    """T4: means e_1, e_2 in R^2, four points per cluster at distance ``delta`` along the axes."""
    e = np.eye(2)
    offsets = delta * np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])
    X = np.concatenate([m + offsets for m in e])
    return X, np.repeat([0, 1], 4), None


def _clusters(q: int, per: int, delta: float, seed: int, dim: int | None = None, jitter: float = 0.2) -> Callable[[], Any]:
    def make() -> tuple[np.ndarray, np.ndarray, None]:
        d = gaussian_clusters(q, per, dim=dim, delta=delta, jitter=jitter, seed=seed)
        return d.X.numpy(), d.labels.numpy(), None

    return make


def _needles(q: int, m: int, per: int, seed: int) -> Callable[[], Any]:
    def make() -> tuple[np.ndarray, np.ndarray, None]:
        d = sequentially_separable(q, m, per, seed=seed)
        return d.X.numpy(), d.labels.numpy(), None

    return make


def _with_targets(make: Callable[[], Any], seed: int) -> Callable[[], Any]:
    def wrapped() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X, labels, _ = make()
        q = int(labels.max()) + 1
        Y = np.eye(q) + 0.3 * np.random.default_rng(seed).standard_normal((q, q))
        return X, labels, Y

    return wrapped


PROBLEMS = [
    Problem("two-axes", "clustered", two_axes),
    Problem("clusters-q2", "clustered", _clusters(2, 15, 0.03, 1)),
    Problem("clusters-q3-deep", "clustered", _clusters(3, 12, 0.02, 2), {"depth": 5}),
    Problem("clusters-q4", "clustered", _clusters(4, 10, 0.02, 3)),
    Problem("clusters-q3-targets", "clustered", _with_targets(_clusters(3, 10, 0.02, 4), 4)),
    Problem("clusters-q3-narrow", "clustered", _clusters(3, 10, 0.01, 5, jitter=0.0), {"theta": 1.15}),
    Problem("thm24-keep-all", "clustered", _clusters(3, 10, 0.03, 6), {"keep": [0, 1, 2]}, exact=False),
    Problem("thm25-keep-one", "clustered", _clusters(3, 10, 0.03, 7), {"keep": [1]}, exact=False),
    Problem("needles-q3-m5", "sequential", _needles(3, 5, 20, 0)),
    Problem("needles-q6-m6-greedy", "sequential", _needles(6, 6, 10, 1)),
    Problem("needles-q3-targets", "sequential", _with_targets(_needles(3, 4, 15, 2), 2)),
    Problem("wide-q3-m5", "clustered-wide", _clusters(3, 12, 0.02, 8, dim=5)),
    Problem("shallow-q3-m5", "shallow", _clusters(3, 12, 0.05, 9, dim=5), exact=False),
    Problem("shallow-q2-m2", "shallow", _clusters(2, 12, 0.05, 10), exact=False),
]

THETA_Q3 = 2 * math.acos(math.sqrt(2 / 3))
