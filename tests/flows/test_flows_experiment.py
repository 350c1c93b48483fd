"""The adapted-flow experiment's quick variant: every claim passes and the run folder is complete."""

from __future__ import annotations

from collapselab.experiments import get_experiment, run_experiment


def test_adapted_flow_quick(tmp_path):
    result = run_experiment("adapted-flow", out=tmp_path, quick=True)
    failed = [(c.id, c.measured, c.expected) for c in result.claims if not c.passed]
    assert not failed, failed
    assert len(result.claims) == 12
    for name in ("loss", "paths", "kernels"):
        assert (result.path / "figures" / f"{name}.png").is_file()
    assert (result.path / "metrics.csv").read_text().startswith("part,alpha,s,t,cost,exponential_law,rank,deviation")
    assert get_experiment("adapted-flow").source.startswith("seed 003")
