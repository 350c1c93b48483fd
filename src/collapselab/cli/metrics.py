"""``collapselab metrics FILE.npz [--json]``: neural-collapse metrics of saved features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from ..collapse import collapse_report
from ..core.data import read_npz
from ..core.errors import DataFileError

__all__ = ["metrics"]


def _load(file: Path) -> dict[str, np.ndarray]:
    arrays = read_npz(file, ("features", "labels"), ("weights", "bias"), where="metrics")
    if "bias" in arrays and "weights" not in arrays:
        raise DataFileError(f"metrics: {file.name} has an array 'bias' but no 'weights'; save the classifier's weights too")
    return arrays


def metrics(
    file: Path = typer.Argument(
        ..., help="A .npz with arrays 'features' (N, d), 'labels' (N,), optional 'weights' (C, d) and 'bias' (C,)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object (weight-dependent keys are null without weights)."),
) -> None:
    """Neural-collapse metrics (NC1-NC4, CDNV, ...) of saved penultimate-layer features."""
    arrays = _load(file)
    report = collapse_report(arrays["features"], arrays["labels"], arrays.get("weights"), arrays.get("bias"))
    if json_output:
        typer.echo(json.dumps(report.as_dict(extras=False), allow_nan=False))
    else:
        typer.echo(f"{file.name}: {report.num_samples} samples, {report.num_classes} classes, d = {report.dim}")
        typer.echo(report.format_table())
