"""Property tests of ``collapselab.flows.fit``: random shapes, dtypes, NaN/Inf, empty and
single-class targets, labels or float targets, give either a trajectory whose last cost is the
model's cost after training or a :class:`CollapseLabError`, never another exception."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from collapselab.core.errors import CollapseLabError
from collapselab.core.network import ReLUNet
from collapselab.flows import fit



@st.composite
def problems(draw):
    """(model, X, targets, Y): a small ReLU net; X and the targets mostly well formed."""
    N, M, Q = draw(st.integers(0, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    torch.manual_seed(draw(st.integers(0, 3)))
    model = ReLUNet([M, 4, Q], dtype=draw(st.sampled_from([torch.float64, torch.float64, torch.float32])))
    x_dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.float16, np.int64, np.bool_]))
    x_shape = draw(st.sampled_from([(N, M)] * 4 + [(N, M + 1), (N,)]))
    finite = draw(st.booleans())
    elements = st.floats(-3, 3, width=np.finfo(x_dtype).bits) if finite and np.issubdtype(x_dtype, np.floating) else None
    X = draw(hnp.arrays(x_dtype, x_shape, elements=elements))
    kind = draw(st.sampled_from(["labels", "labels", "floats", "wrong"]))
    Y = None
    if kind == "labels":
        targets = draw(hnp.arrays(np.int64, (draw(st.sampled_from([N, N, N + 1])),), elements=st.integers(-1, Q)))
        if draw(st.booleans()):
            Y = torch.as_tensor(draw(hnp.arrays(np.float64, (draw(st.sampled_from([Q, Q, Q + 1])), Q), elements=st.floats(-2, 2))))
    elif kind == "floats":
        targets = draw(hnp.arrays(np.float64, (N, draw(st.sampled_from([Q, Q, Q + 1]))), elements=st.floats(-2, 2) if finite else None))
    else:
        targets = draw(hnp.arrays(draw(st.sampled_from([np.float64, np.int64, np.bool_])), draw(st.sampled_from([(N, Q, 1), (), (N + 2,)]))))
    as_tensor = draw(st.booleans())
    return model, (torch.as_tensor(X) if as_tensor else X), (torch.as_tensor(targets) if as_tensor else targets), Y


@given(problems())
def test_fit_returns_a_consistent_trajectory_or_a_collapselab_error(rounding_bound, problem):
    model, X, targets, Y = problem
    try:
        traj = fit(model, X, targets, Y=Y, max_steps=3)
    except CollapseLabError as exc:
        event(type(exc).__name__)
        return
    event(f"trajectory ({traj.status.name})")
    dtype = next(model.parameters()).dtype
    Xt = torch.as_tensor(np.asarray(X)).to(dtype)
    with torch.no_grad():
        out = model(Xt).reshape(-1)
    y = traj.y
    N = Xt.shape[0]
    assert torch.isfinite(traj.cost).all() and N > 0
    # the model after training has the trajectory's last cost, up to evaluating the outputs
    # another way (the rounding bound delta of the MLP) and summing QN squares:
    # |C' - C| <= (1/N) sum |r| delta + (1/2N) sum delta^2 + QN eps C
    params = [(lay.weight.detach(), lay.bias.detach()) for lay in model.layers]
    delta = rounding_bound(params, Xt).reshape(-1)
    if dtype == torch.float32:  # the bound is for float64 arithmetic: rescale to float32's eps
        delta = delta * (torch.finfo(torch.float32).eps / torch.finfo(torch.float64).eps)
    r = (out - y).abs()
    eps = torch.finfo(dtype).eps
    cost = float(0.5 * (r * r).sum() / N)
    tol = float((r * delta).sum() / N + 0.5 * (delta * delta).sum() / N) + 2 * y.numel() * eps * cost
    assert abs(float(traj.cost[-1]) - cost) <= tol
