"""Every effective-flow experiment's quick variant passes all of its claims and writes its figures."""

import pytest

from collapselab.experiments import run_experiment


@pytest.mark.parametrize(
    "name,figures",
    [
        ("effective-dynamics", {"truncation_R2.png", "truncation_R3.png", "rate_and_loss_R2.png", "rate_and_loss_R3.png"}),
        ("standard-loss-collapsed", {"collapsed_standard_loss.png"}),
        ("standard-loss-clustered", {"clustered_closed_form.png"}),
    ],
)
def test_quick_variant_passes(name, figures, tmp_path):
    r = run_experiment(name, out=tmp_path, quick=True, show_progress=False)
    failed = [(c.id, c.measured, c.expected) for c in r.claims if not c.passed]
    assert r.claims and not failed
    assert figures <= {p.name for p in (r.path / "figures").iterdir()}
    assert (r.path / "metrics.csv").stat().st_size > 0
