"""The exact cluster-separation check with its bound certificate (Chen 2025 Def 3.1 / (3.3)).

References are independent of the vectorised code: the true composition of truncation maps
(``forward_pass``) for the violation counts, and an explicit loop over (layer, cluster) pairs for
the smallest pre-activation each pair sees.
"""

import pytest
import torch

from collapselab.core.data import check_data
from collapselab.core.errors import AssumptionError
from collapselab.effective import (
    ClusterBlocks,
    SeparatedFlow,
    check_cluster_separated,
    forward_pass,
    make_state,
    random_state,
    separation_bounds,
    separation_certificate,
    separation_violations,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _first_violations(state, data):
    """``(L, Q)`` counts from the true forward pass: first foreign layer with some ``z_a <= 0``."""
    L = state.depth
    zs = forward_pass(state, data.X).zs
    foreign = data.labels.unsqueeze(0) != torch.arange(L).unsqueeze(1)
    bad = ((zs <= 0).any(-1) & foreign).T  # (N, L)
    expected = torch.zeros(L, data.num_classes, dtype=torch.int64)
    for i in torch.nonzero(bad.any(1)).flatten().tolist():
        expected[int(bad[i].to(torch.int64).argmax()), data.labels[i]] += 1
    return expected


def _pair_minima(state, data):
    """``(L, Q)``: min over cluster ``j``'s points and coordinates of ``z`` at layer ``k``, the points
    entering layer ``k`` as ``x`` (``k < j``) or ``tau^(j)(x)`` (``k > j``); ``+inf`` on the diagonal."""
    L = state.depth
    out = torch.full((L, L), float("inf"), dtype=torch.float64)
    for j in range(L):
        x = data.X[data.labels == j]
        tau = torch.relu((x + state.beta[j]) @ state.R[j].T) @ state.R[j] - state.beta[j]
        for k in range(L):
            if k != j:
                out[k, j] = (((x if k < j else tau) + state.beta[k]) @ state.R[k].T).min()
    return out


def _random_states(separated_problem):
    """Separated, barely separated and non-separated states: random spreads, rotations and bias shifts."""
    g = torch.Generator().manual_seed(123)
    for seed in range(12):
        spread = 0.05 + 0.45 * float(torch.rand(1, generator=g))
        eps = 0.01 + 0.1 * float(torch.rand(1, generator=g))
        data, state = separated_problem(4, per_class=20, spread=spread, eps=eps, seed=seed)
        shift = -0.7 * torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.2
        yield data, state.replace(beta=state.beta + shift)


def _near_boundary(separated_problem, layer, delta):
    """A separated problem with layer ``layer``'s bias moved so that the smallest foreign ``z`` it sees
    is ``delta`` (``layer`` first or last: moving it changes what no foreign pair of it sees)."""
    data, state = separated_problem(4, per_class=25, seed=7)
    m = float(_pair_minima(state, data)[layer].min())
    beta = state.beta.clone()
    beta[layer] -= (m - delta) * state.R[layer].T @ torch.ones(4, dtype=torch.float64)
    return data, state.replace(beta=beta)


def test_fast_and_exhaustive_checks_agree_with_the_forward_pass_on_random_states(separated_problem):
    outcomes = set()
    for data, state in _random_states(separated_problem):
        expected = _first_violations(state, data)
        assert torch.equal(separation_violations(state, data), expected)
        assert torch.equal(separation_violations(state, data, exhaustive=True), expected)
        outcomes.add(bool(expected.sum() > 0))
    assert outcomes == {True, False}  # both separated and non-separated states were tested


def test_certificate_is_sound_and_decides_well_separated_clusters(separated_problem):
    certified_some = undecided_but_separated = False
    for data, state in _random_states(separated_problem):
        cert = separation_certificate(state, data)
        assert bool(cert.diagonal().all())
        minima = _pair_minima(state, data)
        off = ~torch.eye(4, dtype=torch.bool)
        assert bool((minima[cert & off] > 0).all())  # a certified pair never hides a truncated point
        certified_some |= bool((cert & off).any())
        undecided_but_separated |= bool((minima[~cert] > 0).any())  # left to the point test, which passes it
    assert certified_some and undecided_but_separated
    data, state = separated_problem(4, per_class=25, seed=7)
    assert bool(separation_certificate(state, data).all())  # the flow's test problem needs no point test


@pytest.mark.parametrize("layer", [0, 3])
@pytest.mark.parametrize("delta", [1e-9, -1e-9, 1e-6, -1e-6])
def test_states_at_the_boundary_are_decided_exactly(separated_problem, layer, delta):
    data, state = _near_boundary(separated_problem, layer, delta)
    minima = _pair_minima(state, data)[layer]
    assert float(minima[torch.isfinite(minima)].min()) == pytest.approx(delta, abs=1e-12)
    assert not bool(separation_certificate(state, data)[layer].all())  # the bounds cannot decide this one
    expected = _first_violations(state, data)
    assert torch.equal(separation_violations(state, data), expected)
    assert torch.equal(separation_violations(state, data, exhaustive=True), expected)
    flow = SeparatedFlow(data)
    if delta > 0:
        assert int(expected.sum()) == 0
        flow.validate(state)
        check_cluster_separated(state, data)
    else:
        assert int(expected[layer].sum()) >= 1
        with pytest.raises(AssumptionError, match=rf"not cluster separated: layer {layer + 1} truncates \d+ point\(s\) of cluster \d"):
            flow.validate(state)


def test_cluster_bounds_contain_every_point(separated_problem):
    data, _ = separated_problem(3, per_class=30, spread=0.4, seed=4)
    b = ClusterBlocks.from_data(data)
    d = data.X - b.centre[data.labels]
    assert bool((d.abs() <= b.half[data.labels] + 1e-15).all())
    assert bool((d.norm(dim=1) <= b.radius[data.labels] + 1e-15).all())
    assert bool((d.norm(dim=1) >= b.radius[data.labels] - 1e-15).any())  # the radius is attained


def _sphere_clusters(Q, per_class, radius, seed):
    """Points on spheres of ``radius`` about random centres (where balls beat boxes), Haar-random layers."""
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(Q, Q, generator=g, dtype=torch.float64)
    u = torch.randn(Q * per_class, Q, generator=g, dtype=torch.float64)
    X = centres.repeat_interleave(per_class, 0) + radius * u / u.norm(dim=1, keepdim=True)
    data = check_data(X, torch.arange(Q).repeat_interleave(per_class))
    return data, random_state(Q, Q, beta_scale=1.0, seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_bounds_are_lower_bounds_and_exact_for_single_points(seed, separated_problem):
    data, state = _sphere_clusters(3, 300, 0.6, seed)
    bounds, minima = separation_bounds(state, data), _pair_minima(state, data)
    assert torch.equal(torch.isinf(bounds), torch.eye(3, dtype=torch.bool))
    off = ~torch.eye(3, dtype=torch.bool)
    assert bool((bounds[off] <= minima[off] + 1e-12).all())
    assert float((minima[off] - bounds[off]).min()) < 0.1  # and not vacuous: tight to a few percent of the radius somewhere
    assert torch.equal(separation_violations(state, data), _first_violations(state, data))
    one, _ = _sphere_clusters(3, 1, 0.0, seed)  # a one-point cluster is its own box and ball
    torch.testing.assert_close(separation_bounds(state, one)[off], _pair_minima(state, one)[off], rtol=0, atol=1e-12)


def test_bounds_are_exact_for_box_corners_in_axis_aligned_layers():
    """With ``R_l = 1`` and clusters made of the corners of boxes, every box bound is attained."""
    g = torch.Generator().manual_seed(5)
    Q = 3
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * Q)  # (8, Q)
    centres = 2.0 * torch.randn(Q, Q, generator=g, dtype=torch.float64)
    half = 0.2 + torch.rand(Q, Q, generator=g, dtype=torch.float64)
    X = (centres.unsqueeze(1) + half.unsqueeze(1) * corners).reshape(-1, Q)
    data = check_data(X, torch.arange(Q).repeat_interleave(2**Q))
    eye = torch.eye(Q, dtype=torch.float64).expand(Q, Q, Q)
    for seed in range(3):
        beta = torch.randn(Q, Q, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        state = make_state(beta, eye)
        minima, bounds = _pair_minima(state, data), separation_bounds(state, data)
        off = ~torch.eye(Q, dtype=torch.bool)
        torch.testing.assert_close(bounds[off], minima[off], rtol=0, atol=1e-12)


@pytest.mark.parametrize("delta", [1e-6, -1e-6])
def test_one_point_clusters_at_the_boundary(delta, separated_problem):
    """Bounds are exact for one-point clusters: only the rounding margin keeps the certificate honest."""
    data, state = separated_problem(3, per_class=1, seed=2)
    m = float(_pair_minima(state, data)[2].min())
    beta = state.beta.clone()
    beta[2] -= (m - delta) * state.R[2].T @ torch.ones(3, dtype=torch.float64)
    state = state.replace(beta=beta)
    assert float(separation_bounds(state, data)[2, :2].min()) == pytest.approx(delta, abs=1e-12)
    expected = _first_violations(state, data)
    assert torch.equal(separation_violations(state, data), expected)
    assert int(expected[2].sum() > 0) == int(delta < 0)  # layer 3 is the last: nothing else depends on its bias
    assert bool(separation_certificate(state, data)[2, :2].all()) == (delta > 0)


def test_points_on_a_sector_wall_count_as_truncated():
    """``z_a = 0`` exactly (dyadic numbers, ``R = 1``): not strictly inside ``S_+``, so a violation."""
    X = torch.tensor([[-1.0, 1.0], [1.0, 0.5]], dtype=torch.float64)  # cluster 1's point has z_2 = 0.5 - 0.5 = 0 at layer 0
    data = check_data(X, torch.tensor([0, 1]))
    state = make_state(torch.tensor([[0.25, -0.5], [0.5, 0.25]], dtype=torch.float64), torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    expected = torch.tensor([[0, 1], [0, 0]])
    assert torch.equal(_first_violations(state, data), expected)
    assert torch.equal(separation_violations(state, data), expected)
    assert torch.equal(separation_violations(state, data, exhaustive=True), expected)
    with pytest.raises(AssumptionError, match="layer 1 truncates 1 point"):
        check_cluster_separated(state, data)
