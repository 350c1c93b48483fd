"""The effective-flow experiments: every claim of each quick variant passes at several seeds, and
configurations with unbounded or absurd horizons are refused before anything runs."""

import math

import numpy as np
import pytest
import torch

from collapselab.core.errors import ConfigError
from collapselab.effective import forward_pass
from collapselab.experiments import run_experiment
from collapselab.experiments import effective_dynamics as ed

FIGURES = {
    "effective-dynamics": {"truncation_R2.png", "truncation_R3.png", "rate_and_loss_R2.png", "rate_and_loss_R3.png"},
    "standard-loss-collapsed": {"collapsed_standard_loss.png"},
    "standard-loss-clustered": {"clustered_closed_form.png"},
}
SEEDS = (3, 14, 159)
"""Fixed seeds other than the default 0 (the verdicts must not depend on the seed)."""


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_quick_variant_passes_at_several_seeds(name, seed, tmp_path, claims_catalogue):
    r = run_experiment(name, {"seed": seed}, out=tmp_path, quick=True, show_progress=False, threads=1)
    claims_catalogue(r)
    failed = [(c.id, c.measured, c.expected) for c in r.claims if c.passed is False]
    assert r.claims and not failed
    assert all(c.passed for c in r.claims), [c.id for c in r.claims if not c.passed]
    assert all(c.reference.strip() and c.tolerance_reason.strip() for c in r.claims)
    assert FIGURES[name] <= {p.name for p in (r.path / "figures").iterdir()}
    assert (r.path / "metrics.csv").stat().st_size > 0


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("standard-loss-clustered", {"s_end": math.inf}),
        ("standard-loss-clustered", {"s_end": 1e9}),
        ("standard-loss-clustered", {"points": 10**9}),
        ("standard-loss-clustered", {"s_end": math.nan}),
        ("standard-loss-collapsed", {"s_end": math.inf}),
        ("standard-loss-collapsed", {"s_end": 1e9}),
        ("standard-loss-collapsed", {"points": 10**9}),
        ("effective-dynamics", {"s_end": math.inf}),
        ("effective-dynamics", {"s_end": 1e9}),
        ("effective-dynamics", {"step": 0.0}),
        ("effective-dynamics", {"step": 1e-9}),
        ("effective-dynamics", {"points": 10**7}),
        ("effective-dynamics", {"s_end": 2.0}),  # shorter than Prop 4.2's bound of s_1 plus one unit
    ],
)
def test_absurd_horizons_are_refused(name, overrides, tmp_path):
    with pytest.raises(ConfigError):
        run_experiment(name, overrides, out=tmp_path, quick=True, show_progress=False)
    assert not any(tmp_path.iterdir())  # refused before a run folder exists


@pytest.mark.parametrize("Q", [2, 3])
def test_constructed_cluster_satisfies_prop_4_2_hypotheses(Q):
    """At s = 0: every xi = R (x - ỹ) has all coordinates <= -(0.6 - spread), exactly k points are
    truncated in every direction (1 <= k < N), and the cluster is partially truncated."""
    cfg = ed.Config(points=16, s_end=4.0, step=0.02)
    for seed in range(40):
        data, state, k = ed._cluster(Q, cfg, np.random.default_rng(seed), torch.device("cpu"))
        R, yt = state.R[0], data.Y[0]
        assert state.orthogonality_error() < 1e-14
        xi = (data.X - yt) @ R.T
        assert float(xi.max()) <= -(ed.CENTRE - cfg.spread) + 1e-12
        z = forward_pass(state, data.X).zs[0]
        assert ((z <= 0).sum(0) == k).all() and 1 <= k < cfg.points
        assert not bool((z <= 0).all(1).all())


def test_default_horizon_is_checked_against_the_other_fields(tmp_path):
    """A wide cluster raises the bound of s_1 above the default s_end: refused, although s_end was not set."""
    with pytest.raises(ConfigError, match="s_end"):
        run_experiment("effective-dynamics", {"spread": 0.45}, out=tmp_path, show_progress=False)
