"""Property tests of the construction boundary (``construct_clustered``, ``construct_sequential``,
``construct_shallow``): random shapes, dtypes, NaN/Inf, empty, single-class and out-of-range
inputs give either a network that reproduces its reported cost or a :class:`CollapseLabError`,
never another exception."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collapselab.construct import ce23_cost, ce24_cost, construct_clustered, construct_sequential, construct_shallow
from collapselab.core.errors import CollapseLabError

CONSTRUCTIONS = {"clustered": (construct_clustered, ce23_cost), "sequential": (construct_sequential, ce24_cost), "shallow": (construct_shallow, ce23_cost)}


@st.composite
def clusters(draw, kind):
    """Half the time Q tight clusters around well-separated means in R^M (the theorems' setting,
    where a network must come back), otherwise anything near it: NaN/Inf, ints, bool, wrong
    shapes, labels out of range, one class, no samples, targets of the wrong shape."""
    if draw(st.booleans()):
        Q = draw(st.integers(2, 3))
        M = Q if kind == "clustered" else draw(st.integers(Q, 4))  # CE23 works in R^Q, CE24 in R^M, M >= Q
        per = draw(st.integers(1, 3))
        means = 3.0 * np.eye(M)[:Q] + 1.0
        spread = draw(st.sampled_from([0.0, 1e-3, 0.05, 0.3]))
        noise = draw(hnp.arrays(np.float64, (Q * per, M), elements=st.floats(-1, 1)))
        X = np.repeat(means, per, axis=0) + spread * noise
        labels = np.repeat(np.arange(Q), per)
        dtype = draw(st.sampled_from([torch.float64, torch.float32]))
        Y = draw(st.none() | hnp.arrays(np.float64, (Q, draw(st.integers(1, 3))), elements=st.floats(-2, 2)))
        return X, labels, Y, dtype
    Q, M, N = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(0, 6))
    X = draw(hnp.arrays(draw(st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.bool_])),
                        draw(st.sampled_from([(N, M), (N, M), (N,), (N, M, 1)]))))
    labels = draw(hnp.arrays(np.int64, (draw(st.sampled_from([N, N, N + 1])),), elements=st.integers(-1, Q)))
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.float16, torch.int64]))
    Y = draw(st.none() | hnp.arrays(np.float64, (draw(st.sampled_from([Q, Q + 1])), draw(st.integers(0, 3)))))
    return X, labels, Y, dtype


@settings(max_examples=80)  # three constructions, a few ms each
@given(st.sampled_from(sorted(CONSTRUCTIONS)).flatmap(lambda kind: st.tuples(st.just(kind), clusters(kind))))
def test_construction_returns_a_network_of_its_cost_or_a_collapselab_error(case):
    kind, (X, labels, Y, dtype) = case
    construct, cost_of = CONSTRUCTIONS[kind]
    try:
        result = construct(X, labels, Y, dtype=dtype)
    except CollapseLabError as exc:
        event(f"{kind}: {type(exc).__name__}")
        return
    event(f"{kind}: network")
    Xt = torch.as_tensor(np.asarray(X), dtype=dtype)
    lab = torch.as_tensor(labels)
    Yt = torch.eye(int(lab.max()) + 1, dtype=dtype) if Y is None else torch.as_tensor(Y, dtype=dtype)
    with torch.no_grad():
        out = result.module(Xt)
    assert out.shape == (Xt.shape[0], Yt.shape[1]) and bool(torch.isfinite(out).all())
    assert np.isfinite(result.cost) and result.cost >= 0.0
    # the module reproduces the reported cost: outputs pass at most Q + 2 <= 5 layers of width
    # <= 4 (~10 rounded operations each), amplified by at most cond(X_0^red) |Y| <~ 10 for these
    # means (3 I + 1, moved by <= 0.5) and targets (|Y_ij| <= 2): 1e4 eps of the dtype
    tol = 1e4 * torch.finfo(dtype).eps * max(1.0, result.cost)
    assert abs(float(cost_of(out, lab, Yt)) - result.cost) <= tol
    pred = result.classify(Xt)
    assert pred.shape == lab.shape and bool(((pred >= 0) & (pred < Yt.shape[0])).all())
