"""The quick variant of ``explicit-minimizers``: every claim passes at several seeds; absurd settings are refused."""

from __future__ import annotations

import csv
import json
import math

import pytest

from collapselab.core.errors import ConfigError
from collapselab.experiments import get_experiment, run_experiment
from collapselab.experiments.explicit_minimizers import _logged_steps


@pytest.mark.parametrize("seed", [17, 101])
def test_explicit_minimizers_quick(tmp_path, seed, claims_catalogue) -> None:
    result = run_experiment("explicit-minimizers", {"seed": seed}, out=tmp_path, quick=True, threads=1)
    claims_catalogue(result)
    assert result.passed, [c for c in result.claims if c.passed is False]
    verdicts = {c.id: c.verdict for c in result.claims}
    for q in (2, 3):
        for name in ("constructed-cost", "collapse-points", "jacobian-rank", "metric-rule"):
            assert verdicts[f"{name}-{q}d"] == "PASS"
    assert set(verdicts) == {f"{name}-{q}d" for name in ("constructed-cost", "collapse-points", "jacobian-rank", "metric-rule") for q in (2, 3)}
    assert {p.name for p in (result.path / "figures").glob("*.png")} == {"layers_2d.png", "layers_3d.png", "costs.png"}
    # the GD/Adam curves are an illustration with no claim (no theorem bounds a finite-budget cost; module docstring)
    costs = {f["name"]: f for f in json.loads((result.path / "figures" / "figures.json").read_text())}["costs"]
    assert costs["claims"] == [] and "not a verdict" in costs["caption"]
    with open(result.path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"constructed", "gd", "adam"}
    assert get_experiment("explicit-minimizers").summary


def test_cost_curves_are_plotted_at_the_logged_steps() -> None:
    # the cost figure used i * log_every as abscissa, misplacing the last point when log_every does not divide steps
    assert _logged_steps(120, 50) == [0, 50, 100, 120]
    assert _logged_steps(100, 50) == [0, 50, 100]
    assert _logged_steps(1, 50) == [0, 1]


@pytest.mark.parametrize(("key", "value"), [("steps", 10**9), ("steps", math.inf), ("inits", 1000), ("per_class", 10**7), ("delta", 5.0), ("lr_gd", math.inf)])
def test_absurd_settings_are_refused_before_the_run(tmp_path, key, value) -> None:
    with pytest.raises(ConfigError, match=key):
        run_experiment("explicit-minimizers", {key: value}, out=tmp_path, quick=True)
    assert not (tmp_path / "explicit-minimizers").exists()
