"""The exact piecewise-exponential bias flow at fixed R (docs/theory/effective-flow.md) against ODE solvers."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from collapselab.core.errors import AssumptionError, ShapeError
from collapselab.effective import EventKind, SeparatedFlow, exact_bias_coordinate, exact_bias_flow, integrate


def _scipy_events(xi, eta0, s_end):
    """``d eta/ds = -(n(eta)/N) eta`` (``eta0 > 0``) by solve_ivp with one terminal event per threshold."""
    N, c = len(xi), -np.asarray(xi)
    times, s, eta = [], 0.0, eta0
    while s < s_end:
        n = int((c >= eta).sum())
        pending = c[(c > 0) & (c < eta)]
        events = []
        for ci in pending:
            ev = lambda t, y, ci=ci: y[0] - ci  # noqa: E731
            ev.terminal = True
            events.append(ev)
        sol = solve_ivp(lambda t, y: -(n / N) * y, (s, s_end), [eta], events=events or None, rtol=1e-12, atol=1e-14)
        if sol.status != 1:
            return np.array(times), float(sol.y[0, -1])
        k = next(i for i, te in enumerate(sol.t_events) if len(te))
        s, eta = float(sol.t_events[k][0]), float(pending[k])
        times.append(s)
    return np.array(times), eta


def test_t16_exact_solution_matches_solver_with_events():
    xi = np.array([-1.2, -0.7, -0.45, -0.3, -0.1, 0.2])
    pw = exact_bias_coordinate(torch.tensor(xi), 1.0)
    # c = 1.2 is truncated from the start; c = 0.7, 0.45, 0.3, 0.1 are crossed in this order; c = -0.2 never
    assert pw.switching_times.shape == (4,)
    assert torch.allclose(pw.rates * 6, torch.arange(1, 6, dtype=torch.float64))
    times, eta_end = _scipy_events(xi, 1.0, 80.0)
    assert np.allclose(pw.switching_times.numpy(), times, rtol=1e-8)
    assert float(pw(80.0)) == pytest.approx(eta_end, rel=1e-7)


def test_t16_closed_form_values_and_rate_one_after_full_truncation():
    xi = torch.tensor([-0.5, -0.25, -0.125], dtype=torch.float64)  # every xi < 0: all points get truncated
    pw = exact_bias_coordinate(xi, 1.0)
    N = 3
    # n(1.0) = #{c >= 1} = 0 -> constant? no: c = 0.5, 0.25, 0.125 < 1, so nothing truncated yet: a fixed point (4.44)
    assert float(pw(5.0)) == 1.0
    pw = exact_bias_coordinate(xi, 0.4)  # c = 0.5 >= 0.4: one point truncated
    s1 = (N / 1) * np.log(0.4 / 0.25)
    s2 = s1 + (N / 2) * np.log(0.25 / 0.125)
    assert torch.allclose(pw.switching_times, torch.tensor([s1, s2], dtype=torch.float64), rtol=1e-14)
    assert float(pw(s2 + 1.7)) == pytest.approx(0.125 * np.exp(-1.7), rel=1e-14)  # rate exactly 1 once all N are truncated
    assert float(pw(0.5 * s1)) == pytest.approx(0.4 * np.exp(-0.5 * s1 / 3), rel=1e-14)


def test_t16_mirror_case_points_untruncate_and_flow_stops():
    xi = torch.tensor([0.5, 0.3, 0.1, -0.2], dtype=torch.float64)  # c = -0.5, -0.3, -0.1, 0.2
    pw = exact_bias_coordinate(xi, -0.6)  # all four truncated (c >= -0.6)
    # crossings at c = -0.5, -0.3, -0.1 (rates 4/4, 3/4, 2/4), then rate 1/4 for ever (c = 0.2 stays)
    assert pw.switching_times.shape == (3,)
    assert torch.allclose(pw.rates, torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64))
    assert float(pw(pw.switching_times[-1] + 4.0)) == pytest.approx(-0.1 * np.exp(-1.0), rel=1e-14)
    stop = exact_bias_coordinate(xi[:3], -0.6)  # without the point at c = 0.2 the flow stops at -0.1
    assert float(stop(1e3)) == pytest.approx(-0.1, rel=1e-14)


def test_t16_decoupled_exact_flow_matches_full_beta_flow(single_cluster):
    data, state = single_cluster(3, 12, seed=4)
    flow = SeparatedFlow(data, frozen_rotation=True)
    tr = integrate(flow, state, 2.0, step=0.01, events=[EventKind.SECTOR_CROSSING], locate_kinks=True, record_every=50)
    exact = exact_bias_flow(data.X, state.R[0], state.beta[0], data.Y[0])
    ev = torch.tensor([e.s for e in tr.events], dtype=torch.float64)
    sw = exact.switching_times
    sw = sw[sw <= 2.0]
    assert ev.shape == sw.shape and torch.allclose(ev, sw, atol=1e-10)
    assert torch.allclose(exact.beta(tr.s), tr.beta[:, 0], atol=1e-10)


def test_exact_bias_flow_bad_input():
    X = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(AssumptionError, match="R is not orthogonal"):
        exact_bias_flow(X, 2 * torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ShapeError, match="need X"):
        exact_bias_flow(X, torch.eye(3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
