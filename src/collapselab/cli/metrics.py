"""``collapselab metrics FILE.npz [--json]``: neural-collapse metrics of saved features.

The file follows the label and array contract of :mod:`collapselab.core.data._contract`:
``features`` (or ``X``) ``(N, d)``, ``labels`` ``(N,)`` in ``[0, C)`` with every class present,
optional ``weights`` ``(C, d)`` (which then fix ``C``) and ``bias`` ``(C,)``.
"""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from ..core.errors import DataFileError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["metrics"]


def _load(file: Path) -> dict[str, np.ndarray]:
    from ..core.data import check_class_labels, read_npz  # imports torch: on use, so `collapselab --help` starts fast

    where = "metrics"
    arrays = read_npz(file, ("features", "labels"), ("weights", "bias"), where=where)
    if "bias" in arrays and "weights" not in arrays:
        raise DataFileError(f"{where}: {file.name} has an array 'bias' but no 'weights'; save the classifier's weights too")
    weights = arrays.get("weights")
    num_classes = int(weights.shape[0]) if weights is not None and weights.ndim >= 1 else None
    rows = int(arrays["features"].shape[0]) if arrays["features"].ndim >= 1 else None
    arrays["labels"] = check_class_labels(arrays["labels"], where, num_samples=rows, num_classes=num_classes)[0].numpy()
    return arrays


def metrics(
    file: Path = typer.Argument(
        ..., help="A .npz with arrays 'features' (or 'X') (N, d), 'labels' (N,) in [0, C), optional 'weights' (C, d) and 'bias' (C,)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object (weight-dependent keys are null without weights)."),
) -> None:
    """Neural-collapse metrics (NC1-NC4, CDNV, ...) of saved penultimate-layer features."""
    from ..collapse import collapse_report

    arrays = _load(file)
    report = collapse_report(arrays["features"], arrays["labels"], arrays.get("weights"), arrays.get("bias"))
    if json_output:
        typer.echo(json.dumps(report.as_dict(extras=False), allow_nan=False))
    else:
        typer.echo(f"{file.name}: {report.num_samples} samples, {report.num_classes} classes, d = {report.dim}")
        typer.echo(report.format_table())
