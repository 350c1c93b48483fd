"""Truncation geometry against the network it describes and against closed forms
(docs/theory/notation.md, effective-flow.md and minimizers.md)."""

from __future__ import annotations

import math

import pytest
import torch

from collapselab.core.errors import ShapeError, SingularError
from collapselab.core.geometry import (
    TruncationState,
    angle,
    cone_aperture,
    cone_form_truncation,
    cone_shrink,
    cone_weight,
    cumulative_beta,
    cumulative_weights,
    is_aligned,
    layer_weights,
    polar,
    rotation_to,
    set_truncation_state,
    truncated_directions,
    truncation,
    truncation_sequence,
    truncation_state,
)
from collapselab.core.network import ReLUNet, hidden_layers

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=f64, generator=_gen(seed)))
    return q * torch.sign(torch.diagonal(r))


def _surjective(m: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(m, n, dtype=f64, generator=g), torch.randn(m, dtype=f64, generator=g)


# -- T1: composition identity ----------------------------------------------------------


@pytest.mark.parametrize("widths", [[3, 3, 3, 3], [6, 5, 4, 3]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_composition_identity(widths, seed):
    torch.manual_seed(seed)
    net = ReLUNet(widths)
    with torch.no_grad():
        params = [(W.detach().clone(), b.detach().clone()) for W, b in net.weights()]
        X = torch.randn(200, widths[0], dtype=f64, generator=_gen(100 + seed))
        xs = hidden_layers(params, X)  # [x^(0), x^(1), ..., x^(L+1)]
        cumulative = cumulative_weights(params)
        L = len(params) - 1
        taus = truncation_sequence(X, cumulative[:L])
        # the data visit every kind of state, so the identity is not tested on identities only
        states = truncation_state(X, *cumulative[0])
        assert len(set(states.tolist())) >= 2
        for ell in range(1, L + 1):
            W, b = cumulative[ell - 1]
            err = (xs[ell] - (taus[ell - 1] @ W.T + b)).abs().max()
            assert float(err) < 1e-12, (ell, float(err))
        W, b = cumulative[L]
        out_err = (xs[L + 1] - (taus[L - 1] @ W.T + b)).abs().max()
        assert float(out_err) < 1e-12
        assert float((xs[L + 1] - net(X)).abs().max()) < 1e-13


# -- T2: invariances -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3), (2, 4)])
@pytest.mark.parametrize("c", [1e-3, 0.37, 5.0, 1e3])
def test_scaling_invariance(shape, c):
    W, b = _surjective(*shape, seed=4)
    X = 2 * torch.randn(100, shape[1], dtype=f64, generator=_gen(5))
    err = (truncation(X, c * W, c * b) - truncation(X, W, b)).abs().max()
    assert float(err) < 1e-13


def test_positive_diagonal_drops_out():
    n = 4
    R = _orthogonal(n, 6)
    beta = torch.randn(n, dtype=f64, generator=_gen(7))
    D = torch.diag(torch.tensor([0.2, 1.0, 3.0, 7.5], dtype=f64))
    X = torch.randn(100, n, dtype=f64, generator=_gen(8))
    err = (truncation(X, D @ R, D @ R @ beta) - truncation(X, R, R @ beta)).abs().max()
    assert float(err) < 1e-13
    assert is_aligned(D @ R)


# -- truncation map against closed forms -----------------------------------------------


def test_truncation_closed_forms():
    n = 3
    W, b = _surjective(n, n, seed=9)
    beta = cumulative_beta(W, b)
    assert float((W @ beta - b).abs().max()) < 1e-13
    X = 3 * torch.randn(300, n, dtype=f64, generator=_gen(10))
    # invertible form: W^{-1} relu(W (x + beta)) - beta (docs/theory/notation.md)
    inv_form = torch.linalg.solve(W, torch.relu((X + beta) @ W.T).T).T - beta
    assert float((truncation(X, W, b) - inv_form).abs().max()) < 1e-12
    # identity on S_+ and the constant -beta on S_- (docs/theory/effective-flow.md, (2.14)/(2.15))
    pts_plus = torch.linalg.solve(W, (torch.rand(20, n, dtype=f64, generator=_gen(11)) - b).T).T
    pts_minus = torch.linalg.solve(W, (-torch.rand(20, n, dtype=f64, generator=_gen(12)) - b).T).T
    assert float((truncation(pts_plus, W, b) - pts_plus).abs().max()) < 1e-12
    assert float((truncation(pts_minus, W, b) + beta).abs().max()) < 1e-12
    # a projection: applying it twice changes nothing
    once = truncation(X, W, b)
    assert float((truncation(once, W, b) - once).abs().max()) < 1e-11


# -- T3: polyhedral-cone form ----------------------------------------------------------


@pytest.mark.parametrize("shape, seed", [((2, 4), 0), ((2, 4), 1), ((3, 3), 2), ((3, 5), 3)])
def test_cone_form_equals_truncation(shape, seed):
    W, b = _surjective(*shape, seed=seed)
    X = 2 * torch.randn(300, shape[1], dtype=f64, generator=_gen(50 + seed))
    err = (cone_form_truncation(X, W, b) - truncation(X, W, b)).abs().max()
    assert float(err) < 1e-13


# -- cumulative and layer weights ------------------------------------------------------


@pytest.mark.parametrize("widths", [[3, 3, 3, 3], [6, 5, 4, 3]])
def test_layer_weights_inverts_cumulative(widths):
    torch.manual_seed(3)
    params = [(W.detach(), b.detach()) for W, b in ReLUNet(widths).weights()]
    cumulative = cumulative_weights(params)
    # by hand: W^(2) = W_2 W_1 and b^(2) = W_2 b_1 + b_2
    (W1, b1), (W2, b2) = params[0], params[1]
    assert float((cumulative[1][0] - W2 @ W1).abs().max()) < 1e-15
    assert float((cumulative[1][1] - (W2 @ b1 + b2)).abs().max()) < 1e-15
    back = layer_weights(cumulative)
    for (W, b), (Wb, bb) in zip(params, back):
        assert float((W - Wb).abs().max()) < 1e-10 and float((b - bb).abs().max()) < 1e-10


def test_singular_cumulative_weights_raise():
    W = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=f64)
    b = torch.zeros(2, dtype=f64)
    X = torch.ones(3, 2, dtype=f64)
    with pytest.raises(SingularError, match=r"truncation: W is singular \(rank < 2, smallest singular value"):
        truncation(X, W, b)
    with pytest.raises(SingularError, match=r"cumulative_beta: W is singular"):
        cumulative_beta(W, b)
    with pytest.raises(SingularError, match=r"cone_form_truncation: W is singular"):
        cone_form_truncation(X, W, b)
    with pytest.raises(SingularError, match=r"layer_weights: W\^\(1\) is singular"):
        layer_weights([(W, b), (torch.eye(2, dtype=f64), b)])
    with pytest.raises(SingularError, match=r"truncation: W is singular"):
        truncation(X, torch.zeros(2, 2, dtype=f64), b)
    with pytest.raises(SingularError, match=r"W has shape \(3, 2\); widths must not increase"):
        truncation(X, torch.ones(3, 2, dtype=f64), torch.zeros(3, dtype=f64))
    with pytest.raises(ShapeError, match=r"cumulative_beta: W must be square, got \(2, 3\)"):
        cumulative_beta(torch.ones(2, 3, dtype=f64), b)


def test_kernel_nesting_violation_raises():
    # erratum E6, docs/theory/errata.md: independently prescribed W^(1) (3x4) and W^(2) (2x4) with
    # ker W^(1) not inside ker W^(2) are not the cumulative weights of any network
    W1 = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]], dtype=f64)
    W2 = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]], dtype=f64)
    z3, z2 = torch.zeros(3, dtype=f64), torch.zeros(2, dtype=f64)
    with pytest.raises(SingularError, match=r"W\^\(2\) is not a product W_2 W\^\(1\): ker W\^\(1\) is not contained in ker W\^\(2\)"):
        layer_weights([(W1, z3), (W2, z2)])
    # nested kernels are fine: W^(2) = A W^(1)
    A = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], dtype=f64)
    (_, _), (Wb, _) = layer_weights([(W1, z3), (A @ W1, z2)])
    assert float((Wb - A).abs().max()) < 1e-14


def test_cumulative_weights_shape_errors():
    with pytest.raises(ShapeError, match=r"layer 2 takes 4 inputs but layer 1 gives 3"):
        cumulative_weights([(torch.ones(3, 2, dtype=f64), torch.zeros(3, dtype=f64)), (torch.ones(2, 4, dtype=f64), torch.zeros(2, dtype=f64))])
    with pytest.raises(ShapeError, match=r"layer 1 has W \(3, 2\) and b \(2,\); need b of shape \(3,\)"):
        cumulative_weights([(torch.ones(3, 2, dtype=f64), torch.zeros(2, dtype=f64))])


# -- truncation states -----------------------------------------------------------------


def test_truncation_states_on_hand_made_points():
    W, b = torch.eye(2, dtype=f64), torch.zeros(2, dtype=f64)
    X = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [1.0, -1.0], [0.0, 0.0], [0.0, -1.0], [-3.0, 0.5]], dtype=f64)
    U, P, F = TruncationState.UNTRUNCATED, TruncationState.PARTIALLY_TRUNCATED, TruncationState.FULLY_TRUNCATED
    assert truncation_state(X, W, b).tolist() == [U, F, P, U, F, P]
    assert truncated_directions(X, W, b).tolist() == [[False, False], [True, True], [False, True], [False, False], [False, True], [True, False]]
    # a shifted, rotated frame: a(x) = R (x + beta); with R the rotation by 90 degrees,
    # a(x) = (-(x2 + 1), x1 - 1) for beta = (-1, 1)
    R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=f64)
    beta = torch.tensor([-1.0, 1.0], dtype=f64)
    Y = torch.tensor([[2.0, -2.0], [0.0, 0.0], [2.0, 0.0], [0.0, -2.0]], dtype=f64)
    # a: (1, 1) untruncated; (-1, -1) fully; (-1, 1) partially; (1, -1) partially
    assert truncation_state(Y, R, R @ beta).tolist() == [U, F, P, P]
    assert set_truncation_state(Y[:1], R, R @ beta) == U
    assert set_truncation_state(Y[1:2], R, R @ beta) == F
    assert set_truncation_state(Y, R, R @ beta) == P
    # tau on those points: identity, -beta, and the projections onto the faces of S_+
    tau = truncation(Y, R, R @ beta)
    expected = torch.tensor([[2.0, -2.0], [1.0, -1.0], [2.0, -1.0], [1.0, -2.0]], dtype=f64)
    assert float((tau - expected).abs().max()) < 1e-15


# -- polar decomposition, alignment ----------------------------------------------------


def test_polar_decomposition():
    W = torch.randn(4, 4, dtype=f64, generator=_gen(20))
    P, R = polar(W)
    eye = torch.eye(4, dtype=f64)
    assert float((P @ R - W).abs().max()) < 1e-13
    assert float((R @ R.T - eye).abs().max()) < 1e-13
    assert float((P - P.T).abs().max()) < 1e-13 and float(torch.linalg.eigvalsh(P).min()) > 0
    assert float((P @ P - W @ W.T).abs().max()) < 1e-12
    with pytest.raises(ShapeError, match=r"polar: W must be square, got \(2, 3\)"):
        polar(torch.ones(2, 3, dtype=f64))


def test_is_aligned():
    R = _orthogonal(3, 21)
    assert is_aligned(torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=f64)) @ R)
    assert is_aligned(R)
    # a negative diagonal entry is absorbed into R: |W| = diag(1, 2, 0.5) is still positive diagonal
    assert is_aligned(torch.diag(torch.tensor([-1.0, 2.0, 0.5], dtype=f64)) @ R)
    assert not is_aligned(torch.randn(3, 3, dtype=f64, generator=_gen(22)))
    assert not is_aligned(torch.diag(torch.tensor([1.0, 0.0, 2.0], dtype=f64)) @ R)  # singular


# -- rotations, angles, cones ----------------------------------------------------------


def _check_rotation(R: torch.Tensor, h: torch.Tensor, t: torch.Tensor) -> None:
    n = h.shape[0]
    assert float((R @ R.T - torch.eye(n, dtype=f64)).abs().max()) < 1e-13
    assert abs(float(torch.linalg.det(R)) - 1.0) < 1e-12  # in SO(n), not just O(n)
    assert float((R @ (h / h.norm()) - t / t.norm()).abs().max()) < 1e-13


@pytest.mark.parametrize("n, seed", [(2, 0), (3, 1), (5, 2)])
def test_rotation_to_generic(n, seed):
    g = _gen(30 + seed)
    h, t = torch.randn(n, dtype=f64, generator=g), 3 * torch.randn(n, dtype=f64, generator=g)
    _check_rotation(rotation_to(h, t), h, t)


def test_rotation_to_parallel_and_antiparallel():
    t = torch.tensor([1.0, 2.0, 3.0], dtype=f64)
    _check_rotation(rotation_to(2 * t, t), 2 * t, t)
    _check_rotation(rotation_to(-t, t), -t, t)
    e = torch.tensor([1.0, 0.0], dtype=f64)
    _check_rotation(rotation_to(e, -e), e, -e)


def test_angle():
    g = _gen(40)
    u, v = torch.randn(50, 3, dtype=f64, generator=g), torch.randn(50, 3, dtype=f64, generator=g)
    ref = torch.arccos((u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)))
    assert float((angle(u, v) - ref).abs().max()) < 1e-12
    x = torch.tensor([1.0, 1e-9], dtype=f64)
    assert abs(float(angle(x, torch.tensor([1.0, 0.0], dtype=f64))) - 1e-9) < 1e-20  # stable near 0
    assert abs(float(angle(x, -x)) - math.pi) < 1e-15


@pytest.mark.parametrize("n", [2, 3, 5])
def test_cone_aperture_and_weight(n):
    u = torch.ones(n, dtype=f64)
    theta_n = cone_aperture(n)
    # the cone of aperture theta_n around u_n touches the coordinate hyperplanes: the angle
    # between u_n and u_n - e_n (a boundary ray of R^n_+) is theta_n / 2
    edge = u.clone()
    edge[-1] = 0.0
    assert abs(float(angle(u, edge)) - theta_n / 2) < 1e-14
    assert cone_shrink(theta_n / 2, n) == 1.0
    theta = min(theta_n + 0.6, 0.95 * math.pi)
    lam = cone_shrink(theta, n)
    assert 0 < lam < 1 and abs(lam - math.tan(theta_n / 2) / math.tan(theta / 2)) < 1e-15
    Wt = cone_weight(theta, n)
    assert float((Wt @ u - u).abs().max()) < 1e-14  # fixes u_n
    assert abs(float(torch.linalg.matrix_norm(Wt, ord=2)) - 1.0) < 1e-14  # operator norm 1
    # points of C_theta[u_n] (angle <= theta/2 from u_n) land in R^n_+; boundary rays land on
    # the boundary of C_{theta_n}[u_n]
    g = _gen(60 + n)
    uh = u / u.norm()
    perp = torch.randn(400, n, dtype=f64, generator=g)
    perp = perp - (perp @ uh)[:, None] * uh
    perp = perp / perp.norm(dim=1, keepdim=True)
    half = (theta / 2) * torch.rand(400, dtype=f64, generator=g)
    half[:100] = theta / 2
    pts = (torch.cos(half)[:, None] * uh + torch.sin(half)[:, None] * perp) * (0.1 + 5 * torch.rand(400, 1, dtype=f64, generator=g))
    assert float((angle(pts, u.expand_as(pts)) - half).abs().max()) < 1e-12
    mapped = pts @ Wt.T
    assert float(mapped.min()) >= -1e-12
    assert float((angle(mapped[:100], u.expand(100, n)) - theta_n / 2).abs().max()) < 1e-12
