"""The quick variant of ``truncation-geometry``: every claim passes at several seeds; absurd settings are refused."""

from __future__ import annotations

import math

import pytest

from collapselab.core.errors import ConfigError
from collapselab.experiments import run_experiment


@pytest.mark.parametrize("seed", [2, 9, 777])
def test_truncation_geometry_quick_passes_at_every_seed(tmp_path, seed, claims_catalogue) -> None:
    result = run_experiment("truncation-geometry", {"seed": seed}, out=tmp_path, quick=True, threads=1)
    claims_catalogue(result)
    assert len(result.claims) == 8
    assert all(c.passed for c in result.claims), [(c.id, c.measured) for c in result.claims if not c.passed]
    assert all(c.reference and c.tolerance_reason for c in result.claims)


@pytest.mark.parametrize(
    ("key", "value"),
    [("trials", 10**9), ("trials", math.inf), ("num_points", 10**9), ("square_widths", [3, 4, 3]), ("decreasing_widths", [3, 4, 3]), ("cone_shape", [4, 2]), ("square_widths", [3] * 40)],
)
def test_absurd_settings_are_refused_before_the_run(tmp_path, key, value) -> None:
    with pytest.raises(ConfigError, match=key):
        run_experiment("truncation-geometry", {key: value}, out=tmp_path, quick=True)
    assert not (tmp_path / "truncation-geometry").exists()
