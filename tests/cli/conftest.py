"""The tiny fixture experiment of the runner, sweep and fault tests (tiny_experiment.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tiny(monkeypatch):
    """Register only the ``tiny`` fixture experiment; its module is importable (also by spawned workers)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import tiny_experiment

    return tiny_experiment.register(monkeypatch)
