"""Chen & Munoz Ewald 2024 §3.1: the fields against dense pseudo-inverses and closed forms."""

from __future__ import annotations

import pytest
import torch

from collapselab.core.errors import ParameterError, ShapeError, UnknownNameError
from collapselab.flows import (
    AdaptedField,
    HomotopyField,
    PrescribedPath,
    StandardField,
    adapted_field,
    evaluate_field,
    integrate,
    make_field,
    parameter_form_adapted,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _projector(D: torch.Tensor) -> torch.Tensor:
    """Independent projector onto ran D: D D^+ with numpy-style pinv."""
    return D @ torch.linalg.pinv(D, rtol=1e-10)


def test_t20_adapted_flow_is_exponential(tanh_problem):
    omap, theta, y = tanh_problem
    tr = integrate(AdaptedField(), omap, theta, y, 12.0, method="DOP853", rtol=1e-12, atol=1e-14)
    assert tr.ok and tr.steps > 3
    exact = y + torch.exp(-tr.s / 3)[:, None] * (tr.x0 - y)  # x(s) = y + e^{-s/N}(x0 - y), N = 3
    assert float((tr.outputs - exact).abs().max()) < 1e-9
    assert float(((tr.cost - tr.predicted_cost()) / tr.cost[0]).abs().max()) < 1e-9
    assert bool((tr.rank == 6).all())
    # in t = 1 - e^{-s/N} the path is the straight line (1 - t) x0 + t y (Chen & Munoz Ewald 2024 Prop 2.4)
    assert float((tr.outputs - tr.interpolation()).abs().max()) < 1e-9


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_t21_homotopy_identity(tanh_problem, alpha):
    omap, theta, y = tanh_problem
    ev = evaluate_field(HomotopyField(alpha), omap, theta, y)
    D = omap.jacobian(theta)
    g = (omap.outputs(theta) - y) / 3
    P = _projector(D)
    expected = -(alpha * torch.eye(6, dtype=torch.float64) + (1 - alpha) * D @ D.T) @ (P @ g)
    assert float((D @ ev.velocity - expected).abs().max()) < 1e-13 * max(1.0, float(expected.abs().max()))
    assert float((ev.output_velocity - expected).abs().max()) < 1e-12
    # V_alpha = -(alpha (D^T D)^+ + (1 - alpha)) grad_theta C with a dense K x K pseudo-inverse
    v_dense = -(alpha * torch.linalg.pinv(D.T @ D, hermitian=True, rtol=1e-10) + (1 - alpha) * torch.eye(22, dtype=torch.float64)) @ (D.T @ g)
    assert torch.allclose(ev.velocity, v_dense, atol=1e-10, rtol=1e-8)


def test_homotopy_ends_are_standard_and_adapted(tanh_problem):
    omap, theta, y = tanh_problem
    ends = [evaluate_field(f, omap, theta, y).velocity for f in (HomotopyField(0.0), StandardField(), HomotopyField(1.0), AdaptedField())]
    assert torch.allclose(ends[0], ends[1], atol=1e-15)
    assert torch.allclose(ends[2], ends[3], atol=1e-15)


def test_t22_rank_loss_dae_and_projector(duplicate_problem):
    omap, theta, y = duplicate_problem
    ev = evaluate_field(AdaptedField(), omap, theta, y)
    D = omap.jacobian(theta)
    assert ev.rank == int(torch.linalg.matrix_rank(D)) == 4
    g = (omap.outputs(theta) - y) / 3
    P = _projector(D)
    assert torch.allclose(D @ ev.velocity, -P @ g, atol=1e-12)
    assert torch.allclose(ev.projector(), P, atol=1e-10)
    assert ev.defect == pytest.approx(float(torch.linalg.vector_norm(g - P @ g)), rel=1e-9)
    # the DAE min-norm solution equals the parameter-space form (D^T D)^+ grad_theta C (Chen & Munoz Ewald 2024 (2.26))
    assert torch.allclose(ev.velocity, parameter_form_adapted(D, D.T @ g, rtol=1e-10), atol=1e-10, rtol=1e-8)
    assert torch.equal(adapted_field(omap, theta, y), ev.velocity)


def test_t22_underparametrised_matches_inverse_metric(make_tanh_map):
    # tanh (no ReLU rescaling symmetry), K = 22 < QN = 24, rank D = K
    g = torch.Generator().manual_seed(2)
    omap = make_tanh_map(torch.randn(12, 2, generator=g, dtype=torch.float64))
    theta = torch.randn(22, generator=g, dtype=torch.float64)
    y = torch.eye(2, dtype=torch.float64)[torch.arange(12) % 2].reshape(-1)
    ev = evaluate_field(AdaptedField(), omap, theta, y)
    D = omap.jacobian(theta)
    assert ev.rank == 22
    g = (omap.outputs(theta) - y) / 12
    inverse_metric = -torch.linalg.solve(D.T @ D, D.T @ g)  # -(D^T D)^{-1} grad_theta C
    assert torch.allclose(ev.velocity, inverse_metric, atol=1e-10, rtol=1e-9)
    assert torch.allclose(D @ ev.velocity, -_projector(D) @ g, atol=1e-12)


def test_epsilon_is_trapping_ratio(tanh_problem):
    omap, theta, y = tanh_problem
    ev = evaluate_field(StandardField(), omap, theta, y)
    g = (omap.outputs(theta) - y) / 3
    D = omap.jacobian(theta)
    assert ev.epsilon == pytest.approx(float(torch.linalg.vector_norm(D.T @ g) / torch.linalg.vector_norm(g)), rel=1e-10)
    assert torch.allclose(ev.velocity, -D.T @ g, atol=1e-14)


def test_prescribed_linear_path_reaches_targets(tanh_problem):
    omap, theta, y = tanh_problem
    x0 = omap.outputs(theta).detach()
    path = PrescribedPath.linear(x0, y, duration=2.0)
    ev = evaluate_field(path, omap, theta, y)
    assert torch.allclose(omap.jacobian(theta) @ ev.velocity, (y - x0) / 2.0, atol=1e-12)
    assert ev.defect < 1e-12
    tr = integrate(path, omap, theta, y, 2.0, method="DOP853", rtol=1e-11, atol=1e-13)
    assert tr.ok
    assert float((tr.outputs[-1] - y).abs().max()) < 1e-8  # x(T) = y (Chen & Munoz Ewald 2024 (3.4)-(3.5))


def test_make_field_and_errors(tanh_problem):
    assert isinstance(make_field("homotopy", alpha=0.25), HomotopyField)
    with pytest.raises(UnknownNameError, match="unknown flow field 'adaptd'; known: standard, adapted"):
        make_field("adaptd")
    with pytest.raises(ParameterError, match=r"alpha must be float in \[0, 1\]"):
        HomotopyField(1.5)
    omap, theta, _ = tanh_problem
    with pytest.raises(ShapeError, match=r"y must be the stacked targets of shape \(6,\)"):
        evaluate_field(AdaptedField(), omap, theta, torch.zeros(4, dtype=torch.float64))
