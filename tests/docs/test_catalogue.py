"""The experiments catalogue of the docs (docs/reference/experiments.md) matches the code.

The page is generated from the experiment registry and the claims that quick runs record
(docs/reference/experiments-claims.json, written by ``make catalogue``); the tests that run each
experiment's quick variant compare its claims with that file (the ``claims_catalogue`` fixture).
Here: the page is what the generator writes today (configuration fields, defaults, bounds, quick
overrides, summaries), every experiment is catalogued, and the comparison catches a change.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from collapselab.experiments import experiments


def test_the_page_is_what_the_generator_writes(catalogue_module) -> None:
    cat = catalogue_module
    claims = json.loads(cat.CLAIMS_FILE.read_text())
    assert cat.PAGE_FILE.read_text() == cat.render_page(claims), "docs/reference/experiments.md is stale: run `make catalogue` (or `python docs/_tools/catalogue.py page`)"


def test_every_experiment_and_claim_has_its_label(catalogue_module) -> None:
    cat = catalogue_module
    claims = json.loads(cat.CLAIMS_FILE.read_text())
    assert set(claims) == set(experiments())
    page = cat.PAGE_FILE.read_text()
    for name, recorded in claims.items():
        assert recorded, name
        assert f"(experiment-{name})=" in page
        for c in recorded:
            assert f"(claim-{name}-{c['id']})=" in page


def _claim(**fields):
    base = {"id": "a", "claim": "x", "source": "Thm 1", "comparator": "close", "reference": "closed form", "tolerance_reason": "eps x cond = 1.5e-13"}
    return SimpleNamespace(**{**base, **fields})


def test_the_comparison_masks_numbers_and_catches_changed_words(catalogue_module) -> None:
    cat = catalogue_module
    catalogue = {"e": cat.claim_signatures([_claim(), _claim(id="b", comparator="not_applicable", tolerance_reason="too few seeds")])}
    same = [_claim(tolerance_reason="eps x cond = 2.5e-12"), _claim(id="b", comparator="test", tolerance_reason="8 seeds at level 1e-3")]
    assert cat.differences("e", same, catalogue) == []
    assert any("source" in d for d in cat.differences("e", [_claim(source="Thm 2"), same[1]], catalogue))
    assert any("tolerance_reason" in d for d in cat.differences("e", [_claim(tolerance_reason="solver rtol"), same[1]], catalogue))
    assert any("'c' is not in the catalogue" in d for d in cat.differences("e", [*same, _claim(id="c")], catalogue))
    assert any("'b' was not recorded" in d for d in cat.differences("e", same[:1], catalogue))
    assert cat.differences("other", same, catalogue)
