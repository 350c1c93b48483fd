"""The adapted-flow experiment: every claim passes at several seeds, the run folder is complete, absurd horizons are refused."""

from __future__ import annotations

import math

import pytest
import torch

from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import ConfigError
from collapselab.core.network import ReLUNet
from collapselab.experiments import get_experiment, run_experiment
from collapselab.experiments.adapted_flow import init_away_from_kinks

IDS = {
    "smooth-flow-completes", "smooth-straight-line", "smooth-exponential-cost", "relu-straight-line-until-sliding", "relu-straight-segment-length",
    "rank-loss-rank", "rank-loss-deviates", "rank-loss-corrected-prop-2.5", "same-equilibria", "equilibrium-not-global",
    "adapted-kernel-identity", "optimizer-converges", "optimizer-mixed-defect",
}


@pytest.mark.parametrize("seed", [3, 11])
def test_adapted_flow_quick_passes_at_every_seed(tmp_path, seed, claims_catalogue):
    result = run_experiment("adapted-flow", {"seed": seed}, out=tmp_path, quick=True, threads=1)
    claims_catalogue(result)
    failed = [(c.id, c.measured, c.expected) for c in result.claims if not c.passed]
    assert not failed, failed
    assert {c.id for c in result.claims} == IDS
    assert all(c.reference and c.tolerance_reason for c in result.claims)
    for name in ("loss", "paths", "kernels"):
        assert (result.path / "figures" / f"{name}.png").is_file()
    assert (result.path / "metrics.csv").read_text().startswith("part,alpha,s,t,cost,exponential_law,rank,deviation")
    assert get_experiment("adapted-flow").source.startswith("Chen & Munoz Ewald 2024")


@pytest.mark.parametrize(("key", "value"), [("horizon", 1e9), ("horizon", math.inf), ("horizon", math.nan), ("step", 1e-9), ("per_class", 10**6), ("widths", [4, 10**6, 3]), ("alphas", [0.0, 2.0]), ("rtol", 0.5)])
def test_absurd_settings_are_refused_before_the_run(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key):
        run_experiment("adapted-flow", {key: value}, out=tmp_path, quick=True)
    assert not (tmp_path / "adapted-flow").exists()


def test_init_away_from_kinks_keeps_the_function_and_the_margin():
    data = gaussian_clusters(3, 4, dim=4, delta=0.5, seed=5)
    torch.manual_seed(5)
    net = ReLUNet([4, 32, 16, 3])
    before = net(data.X).detach()
    first = net.layers[0]
    init_away_from_kinks(net, data.X, 0.0, 3.0)  # margin 0: no redraw, only the rescaling
    assert torch.allclose(net(data.X), before, rtol=1e-12, atol=1e-14)
    init_away_from_kinks(net, data.X, 0.2, 1.0)
    z = data.X @ first.weight.T + first.bias
    assert bool((z.abs() >= 0.2 * z.std() * (1 - 1e-12)).all())
