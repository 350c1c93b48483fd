"""Integration on O(Q) with events: RKMK4 against an ambient ODE solver; T17 (Prop 4.2 scenario)."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from collapselab.core.errors import AssumptionError, ParameterError
from collapselab.effective import EventKind, GeneralFlow, SeparatedFlow, integrate, lie_step


class FrozenPattern:
    """A flow whose activation pattern is frozen at the initial state: a smooth ODE for order tests."""

    def __init__(self, flow, state):
        self.flow, self.p = flow, flow.pattern(state)

    def pattern(self, state):
        return self.p

    def field(self, state, pattern=None):
        return self.flow.field(state, self.p)

    def loss(self, state):
        return self.flow.loss(state)

    def validate(self, state):
        pass


def _ambient_reference(flow, state, T):
    L, Q = state.beta.shape

    def rhs(_, u):
        b = torch.tensor(u[: L * Q]).reshape(L, Q)
        R = torch.tensor(u[L * Q :]).reshape(L, Q, Q)
        f = flow.field(state.replace(beta=b, R=R))
        return np.concatenate([f.dbeta.numpy().ravel(), (-f.omega @ R).numpy().ravel()])

    u0 = np.concatenate([state.beta.numpy().ravel(), state.R.numpy().ravel()])
    u = solve_ivp(rhs, (0, T), u0, method="DOP853", rtol=1e-12, atol=1e-13).y[:, -1]
    return torch.tensor(u[: L * Q]).reshape(L, Q), torch.tensor(u[L * Q :]).reshape(L, Q, Q)


def test_rkmk4_is_fourth_order_and_matches_an_ambient_solver(separated_problem):
    data, state = separated_problem(2, per_class=6, seed=2)
    flow = FrozenPattern(GeneralFlow(data), state)
    T = 0.4
    beta_ref, R_ref = _ambient_reference(flow, state, T)
    errs = []
    for h in (0.04, 0.02):
        end = integrate(flow, state, T, step=h).state(-1)
        errs.append(float((end.beta - beta_ref).norm() + (end.R - R_ref).norm()))
        assert end.orthogonality_error() < 1e-14
    assert errs[1] < 1e-6
    assert math.log2(errs[0] / errs[1]) > 3.5
    euler = integrate(flow, state, T, step=0.02, method="lie-euler").state(-1)
    assert float((euler.beta - beta_ref).norm()) > 100 * errs[1]


def test_t17_prop_4_2_full_truncation_then_rate_one(single_cluster):
    data, state = single_cluster(3, 30, seed=0)
    flow = SeparatedFlow(data)
    tr = integrate(flow, state, 3.0, step=0.01, events=[EventKind.FULL_TRUNCATION, EventKind.STATE_CHANGE], locate_kinks=True, record_every=5)
    full = tr.events_of(EventKind.FULL_TRUNCATION, layer=0, cluster=0)
    assert len(full) == 1 and full[0].gained == 1
    s1 = full[0].s
    assert 0 < s1 < 2.5
    # points become truncated before s1 and none becomes untruncated
    changes = tr.events_of(EventKind.STATE_CHANGE)
    assert changes and all(e.lost == 0 and e.s <= s1 + 1e-12 for e in changes)
    yt = data.Y[0]
    eta = torch.stack([(tr.R[i, 0] @ (tr.beta[i, 0] + yt)).norm() for i in range(len(tr.s))])
    assert bool((eta[1:] <= eta[:-1] * (1 + 1e-13)).all())
    assert bool((tr.loss[1:] <= tr.loss[:-1] * (1 + 1e-13)).all())
    after = tr.s > s1 + 1e-9
    i1 = int(torch.nonzero(after)[0])
    # R frozen and Omega exactly zero after s1
    assert float((tr.R[after] - tr.R[i1]).abs().max()) < 1e-14
    assert float(flow.field(tr.state(i1)).omega.abs().max()) == 0.0
    # |beta + ỹ| decays at rate exactly 1: fit log|eta| against s
    s, le = tr.s[after].numpy(), np.log(eta[after].numpy())
    rate = -np.polyfit(s, le, 1)[0]
    assert rate == pytest.approx(1.0, abs=1e-9)
    assert tr.state(-1).orthogonality_error() < 1e-15 * 10


def test_separated_flow_refuses_non_separated_data(separated_problem):
    data, state = separated_problem(3, per_class=10, seed=1)
    flow = SeparatedFlow(data)
    bad = state.replace(beta=state.beta - 1.0)  # foreign clusters now truncated
    with pytest.raises(AssumptionError, match=r"not cluster separated: layer \d truncates \d+ point\(s\) of cluster \d"):
        flow.validate(bad)
    with pytest.raises(AssumptionError, match="not cluster separated"):
        integrate(flow, bad, 0.1)
    # along the flow beta -> -ỹ eventually breaks separation: the integrator stops with the same error
    with pytest.raises(AssumptionError, match="not cluster separated"):
        integrate(flow, state, 5.0, step=0.05)


def test_integrate_parameter_errors(separated_problem):
    data, state = separated_problem(2, per_class=4)
    flow = GeneralFlow(data)
    with pytest.raises(ParameterError, match="step must be"):
        integrate(flow, state, 1.0, step=0.0)
    with pytest.raises(ParameterError, match="method must be one of"):
        integrate(flow, state, 1.0, method="rk4")
    # an unknown event name is a ParameterError listing the kinds (was a bare ValueError)
    with pytest.raises(ParameterError, match="events must be one of 'sector_crossing'"):
        integrate(flow, state, 1.0, events=["sector_crosing"])
    # lie_step refuses an unknown method instead of silently taking an RKMK4 step
    with pytest.raises(ParameterError, match="lie_step: method must be one of 'rkmk4', 'lie-euler'"):
        lie_step(flow, state, 0.1, "euler")


def test_separation_check_agrees_with_the_forward_pass(separated_problem):
    from collapselab.effective import forward_pass, separation_violations

    data, state = separated_problem(4, per_class=25, seed=6)
    for shift in (0.0, -0.5, -0.9, -1.3):
        st = state.replace(beta=state.beta + shift)
        zs = forward_pass(st, data.X).zs  # (L, N, Q), the true composition
        foreign = data.labels.unsqueeze(0) != torch.arange(4).unsqueeze(1)
        bad = ((zs <= 0).any(-1) & foreign).T  # (N, L)
        has = bad.any(1)
        first = torch.where(has, bad.to(torch.int64).argmax(1), torch.full_like(data.labels, -1))
        expected = torch.zeros(4, 4, dtype=torch.int64)
        for i in torch.nonzero(has).flatten().tolist():
            expected[first[i], data.labels[i]] += 1
        assert torch.equal(separation_violations(st, data), expected)
    assert int(separation_violations(state, data).sum()) == 0 and int(expected.sum()) > 0
