"""Comparison of two measurement histories of the integration callbacks (Lightning, Hugging Face)."""

from __future__ import annotations

import math

# Error model: float64 model and data; the two-process run takes the same SGD steps with
# gradients summed in another order (all-reduce of two half-batch means), so parameters
# differ by ~ steps * eps * |grad| (measured class: 1e-17 absolute), and features computed
# in other batch compositions by ~ d eps |h| (d = 12 for the Lightning models, 16 with attention
# over 8 tokens for the Hugging Face ones); the metrics are smooth in the class
# moments with condition numbers < 1e4 here: relative differences < 1e-11, checked at 1e-9
# (abs 1e-12 for entries near zero such as margins and bias collapse).
RTOL, ATOL = 1e-9, 1e-12


def close_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), set(a) ^ set(b)
    for k, v in b.items():
        assert math.isclose(a[k], v, rel_tol=RTOL, abs_tol=ATOL), (k, a[k], v)


def close_histories(h1: list, h2: list) -> None:
    assert [r["epoch"] for r in h1] == [r["epoch"] for r in h2]
    for r1, r2 in zip(h1, h2):
        assert r1["layers"].keys() == r2["layers"].keys()
        for layer in r2["layers"]:
            close_rows(r1["layers"][layer], r2["layers"][layer])
