"""The effective right-hand sides (Chen 2025 Thm 3.2, Cor 3.5, Thm 5.1; docs/theory/effective-flow.md) against finite differences."""

import pytest
import torch

from collapselab.core.data import check_data
from collapselab.effective import (
    GeneralFlow,
    MomentFlow,
    SeparatedFlow,
    free_moments,
    input_space_loss,
    make_state,
    moment_loss,
    sector_moments,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _fd_beta(loss, state, eps=1e-5):
    g = torch.zeros_like(state.beta)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in state.beta.shape]):
        idx = tuple(int(i) for i in idx)
        d = torch.zeros_like(state.beta)
        d[idx] = eps
        g[idx] = (loss(state.replace(beta=state.beta + d)) - loss(state.replace(beta=state.beta - d))) / (2 * eps)
    return g


def _fd_rotation(loss, state, layer, A, eps=1e-5):
    """``d/dt C(e^{tA} R_layer)`` at ``t = 0`` by central differences."""
    def at(t):
        R = state.R.clone()
        R[layer] = torch.linalg.matrix_exp(t * A) @ R[layer]
        return loss(state.replace(R=R))

    return (at(eps) - at(-eps)) / (2 * eps)


def _antisym_basis(Q):
    for a in range(Q):
        for b in range(a + 1, Q):
            A = torch.zeros(Q, Q, dtype=torch.float64)
            A[a, b], A[b, a] = -1.0, 1.0
            yield A


@pytest.mark.parametrize("Q", [2, 3, 4])
def test_t12_separated_gradients_match_finite_differences(Q, separated_problem):
    data, state = separated_problem(Q, per_class=10, seed=Q)
    flow = SeparatedFlow(data)
    flow.validate(state)
    f = flow.field(state)
    loss = lambda s: input_space_loss(s, data)  # noqa: E731 - the full composition, independent of the flow
    g = _fd_beta(loss, state)
    assert _rel(-f.dbeta, g) < 1e-8
    # dC/dt along R -> e^{tA} R equals <Omega, A>_F (Lemma 6.1), for a basis of so(Q)
    exact = torch.stack([(f.omega[layer] * A).sum() for layer in range(Q) for A in _antisym_basis(Q)])
    fd = torch.stack([_fd_rotation(loss, state, layer, A) for layer in range(Q) for A in _antisym_basis(Q)])
    assert _rel(exact, fd) < 1e-8


def test_t13_deterministic_omega_and_slide_formula_is_zero():
    data = check_data(torch.tensor([[1.0, -1.0], [0.0, 5.0]]), [0, 1], Y=torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    state = make_state(torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    flow = SeparatedFlow(data, check=False)
    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    f = flow.field(state)
    assert torch.allclose(f.omega[0], 0.5 * A, atol=1e-15)
    loss0 = 0.5 * float(((torch.relu(data.X[0]) - torch.tensor([0.5, 0.5])) ** 2).sum())
    assert loss0 == pytest.approx(0.25, abs=1e-15)
    assert float(_fd_rotation(lambda s: flow.loss(s), state, 0, A)) == pytest.approx(1.0, abs=1e-8)
    assert float((f.omega[0] * A).sum()) == pytest.approx(1.0, abs=1e-14)
    # the slide formula Omega = int [H(z), M(z)], M = (z v^T + v z^T)/2, gives 0 here
    z = data.X[0].to(torch.float64)
    v = torch.tensor([0.5, 0.5], dtype=torch.float64)
    H = torch.diag((z > 0).to(torch.float64))
    M = 0.5 * (torch.outer(z, v) + torch.outer(v, z))
    assert torch.allclose(H @ M - M @ H, torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("Q,L", [(2, 3), (3, 2), (3, 4)])
def test_t14_general_flow_matches_finite_differences(Q, L, rotation):
    g = torch.Generator().manual_seed(Q + 7 * L)
    X = torch.randn(8 * Q, Q, generator=g, dtype=torch.float64)
    data = check_data(X, torch.arange(Q).repeat(8))
    beta = 0.3 * torch.randn(L, Q, generator=g, dtype=torch.float64)
    state = make_state(beta, torch.stack([rotation(Q, 1.0, 100 * Q + l) for l in range(L)]), W_out=torch.eye(Q) + 0.2 * torch.randn(Q, Q, generator=g), b_out=0.1 * torch.ones(Q))
    flow = GeneralFlow(data)
    f = flow.field(state)
    loss = lambda s: input_space_loss(s, data)  # noqa: E731
    assert _rel(-f.dbeta, _fd_beta(loss, state)) < 1e-8
    exact = torch.stack([(f.omega[layer] * A).sum() for layer in range(L) for A in _antisym_basis(Q)])
    fd = torch.stack([_fd_rotation(loss, state, layer, A) for layer in range(L) for A in _antisym_basis(Q)])
    assert _rel(exact, fd) < 1e-8


@pytest.mark.parametrize("Q", [2, 3, 4])
def test_t14_general_reduces_to_separated_and_moments(Q, separated_problem):
    data, state = separated_problem(Q, per_class=15, seed=3 * Q)
    sep, gen, mom = SeparatedFlow(data), GeneralFlow(data), MomentFlow(data)
    sep.validate(state)
    fs, fg, fm = sep.field(state), gen.field(state), mom.field(state)
    assert torch.allclose(fs.dbeta, fg.dbeta, atol=1e-12) and torch.allclose(fs.omega, fg.omega, atol=1e-12)
    assert torch.allclose(fs.dbeta, fm.dbeta, atol=1e-12) and torch.allclose(fs.omega, fm.omega, atol=1e-12)
    assert float(sep.loss(state)) == pytest.approx(float(gen.loss(state)), abs=1e-13)
    # the moments give the loss too; moments of orders 0, 1 alone cannot give Omega
    yt = data.Y
    total = 0.0
    for l, m in enumerate(mom.moments(state)):
        v = state.R[l] @ (state.beta[l] + yt[l])
        total += float(moment_loss(m, v))
        assert float(m.m0.sum()) == pytest.approx(1.0, abs=1e-14)
    assert total == pytest.approx(float(sep.loss(state)), abs=1e-13)


def test_sector_moments_sum_to_free_moments():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(50, 4, generator=g, dtype=torch.float64)
    m = sector_moments(Z)
    m0, m1, m2 = free_moments(Z)
    assert float(m.m0.sum()) == pytest.approx(float(m0), abs=1e-15)
    assert torch.allclose(m.m1.sum(0), m1, atol=1e-14) and torch.allclose(m.m2.sum(0), m2, atol=1e-14)
    # every occupied sector's pattern is the sign pattern of its points
    assert bool((m.positive.sum(1) >= 0).all()) and m.positive.shape[1] == 4 and m.m0.shape[0] <= 16


@pytest.mark.parametrize("flow_cls", [SeparatedFlow, GeneralFlow])
def test_t15_dissipation_identity(flow_cls, separated_problem):
    data, state = separated_problem(3, per_class=20, seed=5)
    flow = flow_cls(data)
    f = flow.field(state)
    eps = 1e-5

    def moved(t):
        R = torch.linalg.matrix_exp(-t * f.omega) @ state.R
        return flow.loss(state.replace(beta=state.beta + t * f.dbeta, R=R))

    dC = float((moved(eps) - moved(-eps)) / (2 * eps))
    rate = float(f.dissipation())
    assert rate < 0
    assert dC == pytest.approx(rate, rel=1e-8)
