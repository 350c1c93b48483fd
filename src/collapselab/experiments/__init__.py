"""Experiments: one module per experiment, discovered by name (see ``_base``)."""

from ._base import (
    Experiment,
    ExperimentConfig,
    RunContext,
    RunResult,
    experiments,
    get_experiment,
    parse_overrides,
)
from ._progress import progress
from ._runner import run_experiment

__all__ = [
    "Experiment",
    "ExperimentConfig",
    "RunContext",
    "RunResult",
    "experiments",
    "get_experiment",
    "parse_overrides",
    "progress",
    "run_experiment",
]
