"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``,
which puts this folder on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["best_of"]


def best_of(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """``(fastest wall time in seconds over repeats calls, result of the last call)``.

    The minimum, not the mean: on a shared machine other load only ever adds time.
    """
    out, best = None, float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out  # type: ignore[return-value]
