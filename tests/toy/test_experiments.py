"""Quick variants of the toy experiments: every claim must pass, and the run folder is complete."""

import json

import pytest

from collapselab.experiments import run_experiment


@pytest.mark.parametrize(("name", "figures"), [("square-loss-toy", {"normalised_flow.png", "equal_growth.png"}), ("ulpm", {"figure2_loglog.png", "figure2_log.png", "example31_escape.png"})])
def test_quick_experiment_claims_pass(tmp_path, name, figures):
    result = run_experiment(name, out=tmp_path, quick=True, show_progress=False)
    failed = [(c.id, c.measured, c.expected) for c in result.claims if not c.passed]
    assert not failed
    assert len(result.claims) >= 20
    assert figures <= {p.name for p in (result.path / "figures").iterdir()}
    claims = json.loads((result.path / "claims.json").read_text())
    assert len(claims) == len(result.claims)
    assert (result.path / "metrics.csv").read_text().count("\n") > 10
