"""The quick variant of ``explicit-minimizers`` runs and every claim passes."""

from __future__ import annotations

import csv

from collapselab.experiments import get_experiment, run_experiment


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
