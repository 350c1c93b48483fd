"""State, conversion to and from core.network, bad input, equilibrium classification (Prop 4.1 + E3)."""

import pytest
import torch

from collapselab.core.data import check_data
from collapselab.core.errors import AssumptionError, ParameterError, ShapeError, SingularError
from collapselab.core.geometry import cumulative_weights, truncation_sequence
from collapselab.core.network import ReLUNet, forward
from collapselab.effective import (
    EquilibriumKind,
    SeparatedFlow,
    classify_equilibrium,
    forward_pass,
    input_space_loss,
    make_state,
    orthogonality_errors,
    random_state,
    state_from_network,
    state_to_network,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def test_network_round_trip_and_composition_identity():
    g = torch.Generator().manual_seed(1)
    state = make_state(
        0.3 * torch.randn(3, 4, generator=g, dtype=torch.float64), random_state(3, 4, seed=2).R,
        W_out=torch.eye(4) + 0.3 * torch.randn(4, 4, generator=g), b_out=0.2 * torch.randn(4, generator=g),
    )
    net = state_to_network(state)
    assert net.widths == [4, 4, 4, 4, 4]
    X = torch.randn(20, 4, generator=g, dtype=torch.float64)
    # the network's output equals W_out tau(x) + b_out, with tau computed by core.geometry (independent code)
    params = [(W.detach(), b.detach()) for W, b in net.weights()]
    taus = truncation_sequence(X, cumulative_weights(params)[:-1])
    assert torch.allclose(forward(params, X), taus[-1] @ state.W_out.T + state.b_out, atol=1e-12)
    assert torch.allclose(forward_pass(state, X).ys[-1], taus[-1], atol=1e-12)
    back = state_from_network(net)
    assert torch.allclose(back.beta, state.beta, atol=1e-12) and torch.allclose(back.R, state.R, atol=1e-12)
    assert torch.allclose(back.W_out, state.W_out, atol=1e-12) and torch.allclose(back.b_out, state.b_out, atol=1e-12)
    # positive diagonal factors W_* drop out: scale the first layer's rows
    with torch.no_grad():
        net.layers[0].weight.mul_(torch.tensor([[2.0], [0.5], [1.0], [3.0]], dtype=torch.float64))
        net.layers[0].bias.mul_(torch.tensor([2.0, 0.5, 1.0, 3.0], dtype=torch.float64))
        net.layers[1].weight.div_(torch.tensor([[2.0, 0.5, 1.0, 3.0]], dtype=torch.float64))
    assert torch.allclose(state_from_network(net).R, state.R, atol=1e-12)


def test_orthogonality_errors_closed_form():
    # R = diag(a, 1): R^T R - 1 = diag(a^2 - 1, 0), so the error is |a^2 - 1| exactly; batched over leading axes
    a = torch.tensor([1.0, 1.1, 0.5], dtype=torch.float64)
    R = torch.diag_embed(torch.stack([a, torch.ones(3, dtype=torch.float64)], 1))
    assert torch.allclose(orthogonality_errors(R), (a.square() - 1).abs(), rtol=0, atol=1e-15)
    assert orthogonality_errors(R.reshape(3, 1, 2, 2)).shape == (3, 1)
    assert random_state(3, 4, seed=2).orthogonality_error() < 1e-14
    with pytest.raises(ParameterError, match=r"random_state: depth must be int in \[1, inf\), got 0"):
        random_state(0, 4)


def test_bad_input_messages():
    eye = torch.eye(2, dtype=torch.float64)
    with pytest.raises(AssumptionError, match=r"R_2 is not orthogonal \(max \|R\^T R - 1\| = 0\.21"):
        make_state(torch.zeros(2, 2), torch.stack([eye, 1.1 * eye]))
    with pytest.raises(ShapeError, match=r"R must be \(L, Q, Q\) = \(2, 2, 2\)"):
        make_state(torch.zeros(2, 2), eye)
    with pytest.raises(ShapeError, match=r"beta must be \(L, Q\)"):
        make_state(torch.zeros(2), eye)
    with pytest.raises(SingularError, match="W_out is singular"):
        make_state(torch.zeros(1, 2), eye.unsqueeze(0), W_out=torch.zeros(2, 2))
    with pytest.raises(ShapeError, match="square layers of one width"):
        state_from_network(ReLUNet([2, 3, 2]))
    net = ReLUNet([2, 2, 2])
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(AssumptionError, match=r"W\^\(1\) is not aligned"):
        state_from_network(net)
    state = make_state(torch.zeros(1, 2), eye.unsqueeze(0))
    data3 = check_data(torch.zeros(4, 3), [0, 0, 0, 0], Y=torch.zeros(1, 3))
    with pytest.raises(ShapeError, match="inputs and labels in R\\^Q with Q = 2"):
        input_space_loss(state, data3)
    data2 = check_data(torch.ones(4, 2), [0, 0, 1, 1])
    with pytest.raises(ShapeError, match="one hidden layer per cluster"):
        SeparatedFlow(data2).validate(state)


def test_equilibrium_classification(single_cluster):
    data, state = single_cluster(3, 12)
    yt = data.Y[0]
    assert classify_equilibrium(state, data) == [EquilibriumKind.NEITHER]
    R = state.R[0]
    up = state.replace(beta=(R.T @ torch.full((3,), 2.0, dtype=torch.float64) - yt).unsqueeze(0))  # eta = 2: all z > 0
    at = state.replace(beta=-yt.unsqueeze(0))  # eta = 0: fully truncated at the label
    down = state.replace(beta=(R.T @ torch.full((3,), -0.1, dtype=torch.float64) - yt).unsqueeze(0))
    kinds = [classify_equilibrium(s, data)[0] for s in (up, at, down)]
    assert kinds == [EquilibriumKind.UNTRUNCATED, EquilibriumKind.FULLY_TRUNCATED_AT_LABEL, EquilibriumKind.FULLY_TRUNCATED_DECAYING]
    flow = SeparatedFlow(data)
    for s, kind in zip((up, at, down), kinds):
        f = flow.field(s)
        vanishes = float(f.dbeta.abs().max() + f.omega.abs().max()) < 1e-14
        assert vanishes == kind.is_equilibrium  # E3: fully truncated but beta != -ỹ moves
    f = flow.field(down)
    assert float(f.omega.abs().max()) == 0.0
    assert torch.allclose(f.dbeta[0], -(down.beta[0] + yt), atol=1e-15)  # d(beta + ỹ)/ds = -(beta + ỹ)
