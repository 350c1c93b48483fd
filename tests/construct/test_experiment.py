"""The quick variant of ``explicit-minimizers`` runs and every claim passes."""

from __future__ import annotations

import csv

from collapselab.experiments import get_experiment, run_experiment
from collapselab.experiments.explicit_minimizers import _logged_steps


def test_explicit_minimizers_quick(tmp_path) -> None:
    result = run_experiment("explicit-minimizers", out=tmp_path, quick=True)
    assert result.claims and result.passed, [c for c in result.claims if not c.passed]
    ids = {c.id for c in result.claims}
    assert {"constructed-cost-2d", "constructed-cost-3d", "gd-adam-gap-2d", "gd-adam-gap-3d", "jacobian-rank-3d"} <= ids
    assert {p.name for p in (result.path / "figures").iterdir()} == {"layers_2d.png", "layers_3d.png", "costs.png"}
    with open(result.path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"constructed", "gd", "adam"}
    assert get_experiment("explicit-minimizers").summary


def test_cost_curves_are_plotted_at_the_logged_steps() -> None:
    # the cost figure used i * log_every as abscissa, misplacing the last point when log_every does not divide steps
    assert _logged_steps(120, 50) == [0, 50, 100, 120]
    assert _logged_steps(100, 50) == [0, 50, 100]
    assert _logged_steps(1, 50) == [0, 1]
