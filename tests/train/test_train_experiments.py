"""Quick variants of the training experiments: every claim passes, figures are written."""

import pytest

from collapselab.experiments import run_experiment


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["terminal-phase", "square-loss-cnn", "square-loss-random-labels", "ulpm-vgg"])
def test_quick_experiment_claims_pass(name, tmp_path):
    result = run_experiment(name, out=tmp_path, quick=True, show_progress=False)
    failed = [(c.id, c.measured, c.expected) for c in result.claims if not c.passed]
    assert result.claims and not failed, failed
    assert list((result.path / "figures").glob("*.png"))
    assert (result.path / "checkpoint.pt").exists() and (result.path / "metrics.csv").exists()
