"""The torchdiffeq backend: the closed-form adapted flow, agreement with scipy's DOP853, stopping rules."""

from __future__ import annotations

import pytest
import torch

from collapselab.core.errors import ParameterError
from collapselab.flows import AdaptedField, OutputMap, StandardField, Status, integrate


@pytest.mark.parametrize(("method", "rtol", "s_end"), [("dopri5", 1e-11, 6.0), ("dopri8", 1e-11, 9.0), ("bosh3", 1e-9, 3.0)])
def test_torchdiffeq_adapted_flow_follows_the_closed_form(tanh_problem, method, rtol, s_end):
    omap, theta, y = tanh_problem  # N = 3, QN = 6 <= K = 22: full rank
    t_eval = [0.5, 1.0, 2.5]
    tr = integrate(AdaptedField(), omap, theta, y, s_end, method=method, rtol=rtol, atol=rtol * 1e-2, t_eval=t_eval)
    assert tr.status is Status.END_TIME, tr.message
    assert tr.s.tolist() == [0.0, *t_eval, s_end]  # s = 0, the requested times, and s_end
    exact = y + torch.exp(-tr.s / 3)[:, None] * (tr.x0 - y)  # x(s) = y + e^{-s/N}(x0 - y)
    assert float((tr.outputs - exact).abs().max()) < 1e-8
    assert float(tr.deviation_error.max()) < 1e-8  # the tracked R stays 0 at full rank
    assert bool((tr.rank == 6).all())
    assert tr.steps >= len(t_eval) + 1 and tr.evaluations > tr.steps


def test_torchdiffeq_agrees_with_scipy_dop853(tanh_problem):
    omap, theta, y = tanh_problem
    ref = integrate(AdaptedField(), omap, theta, y, 6.0, method="DOP853", rtol=1e-11, atol=1e-13)
    tr = integrate(AdaptedField(), omap, theta, y, 6.0, method="dopri8", rtol=1e-11, atol=1e-13, t_eval=ref.s[1:])
    assert ref.ok and tr.ok, (ref.message, tr.message)
    assert torch.equal(tr.s, ref.s)
    assert torch.allclose(tr.outputs, ref.outputs, atol=1e-9, rtol=0)
    assert torch.allclose(tr.cost, ref.cost, atol=1e-10, rtol=0)
    assert torch.allclose(tr.epsilon, ref.epsilon, atol=1e-7, rtol=0)
    assert torch.equal(tr.rank, ref.rank)
    # the parameters are not fixed by the output law: the two solvers follow the same theta(s)
    assert torch.allclose(tr.theta, ref.theta, atol=1e-8, rtol=0)


def test_torchdiffeq_rank_loss_deviation_agrees_with_scipy(duplicate_problem):
    omap, theta, y = duplicate_problem  # rank D = 4 < QN = 6: the corrected Prop 2.5 deviation is visible
    ref = integrate(AdaptedField(), omap, theta, y, 6.0, method="DOP853", on_rank_loss="continue", rtol=1e-11, atol=1e-13)
    tr = integrate(AdaptedField(), omap, theta, y, 6.0, method="dopri5", on_rank_loss="continue", rtol=1e-11, atol=1e-13, t_eval=[3.0])
    assert ref.ok and tr.ok, (ref.message, tr.message)
    assert float(tr.deviation[-1]) > 0.1
    assert float(tr.deviation_error.max()) < 1e-7
    assert torch.allclose(tr.outputs[-1], ref.outputs[-1], atol=1e-9, rtol=0)


def test_torchdiffeq_nan_stops_with_status_and_keeps_trajectory():
    X = torch.ones(2, 1, dtype=torch.float64)

    def f(theta, X):
        return theta[:1] * X + 0.0 * torch.log(1.5 - theta[:1])  # a smooth flow, NaN once theta[0] > 1.5

    omap = OutputMap(f, X)
    y = torch.full((2,), 3.0, dtype=torch.float64)  # the gradient flow theta' = 3 - theta passes 1.5 at s = log 2
    tr = integrate(StandardField(), omap, torch.tensor([0.0], dtype=torch.float64), y, 10.0, method="dopri5")
    assert tr.status is Status.NON_FINITE
    assert "NaN" in tr.message and torch.allclose(tr.s, torch.linspace(0.0, 0.6, 7, dtype=torch.float64))  # kept to s = 0.6 < log 2
    assert torch.allclose(tr.theta, torch.tensor([3.0 * (1 - torch.e**-0.6)], dtype=torch.float64), atol=1e-9, rtol=0)


def test_torchdiffeq_relu_sliding_mode_stalls(relu_problem):
    _, omap, theta, y = relu_problem([3, 16, 2], 6)  # as in the DOP853 test: a sliding mode at s ~ 0.16
    tr = integrate(AdaptedField(), omap, theta, y, 18.0, method="dopri5", rtol=1e-11, atol=1e-13, t_eval=[0.05, 0.1, 0.15, 0.2])
    assert tr.status is Status.STALLED
    assert "sliding mode" in tr.message
    assert tr.s.tolist() == [0.0, 0.05, 0.1, 0.15]  # the trajectory up to the stall is kept
    exact = y + torch.exp(-tr.s / 6)[:, None] * (tr.x0 - y)
    assert float((tr.outputs - exact).abs().max()) < 1e-8


def test_torchdiffeq_step_limit(tanh_problem):
    omap, theta, y = tanh_problem
    tr = integrate(AdaptedField(), omap, theta, y, 6.0, method="dopri5", max_steps=5)
    assert tr.status is Status.MAX_STEPS and tr.steps == 5
    assert "5 steps" in tr.message


def test_torchdiffeq_errors(tanh_problem):
    omap, theta, y = tanh_problem
    with pytest.raises(ParameterError, match="method must be one of .*'DOP853', 'bosh3', 'dopri5', 'dopri8', got 'rk4'"):
        integrate(AdaptedField(), omap, theta, y, 1.0, method="rk4")
    with pytest.raises(ParameterError, match="t_eval applies to the torchdiffeq methods"):
        integrate(AdaptedField(), omap, theta, y, 1.0, method="DOP853", t_eval=[0.5])
    with pytest.raises(ParameterError, match=r"t_eval must be strictly increasing in \(0, s_end=1\]"):
        integrate(AdaptedField(), omap, theta, y, 1.0, method="dopri5", t_eval=[0.5, 0.5])
    with pytest.raises(ParameterError, match=r"t_eval must be strictly increasing in \(0, s_end=1\]"):
        integrate(AdaptedField(), omap, theta, y, 1.0, method="dopri5", t_eval=[0.5, 2.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torchdiffeq_runs_on_cuda_and_matches_cpu(tanh_problem, make_tanh_map):
    omap, theta, y = tanh_problem
    cpu = integrate(AdaptedField(), omap, theta, y, 3.0, method="dopri5", rtol=1e-11, atol=1e-13, t_eval=[1.0])
    dev = torch.device("cuda")
    gpu = integrate(AdaptedField(), make_tanh_map(omap.X.to(dev)), theta.to(dev), y.to(dev), 3.0, method="dopri5", rtol=1e-11, atol=1e-13, t_eval=[1.0])
    assert gpu.ok and gpu.theta.device.type == "cuda" and gpu.outputs.device.type == "cuda"
    assert torch.allclose(gpu.outputs.cpu(), cpu.outputs, atol=1e-10, rtol=0)
