"""``collapselab metrics FILE [--labels LABELS.npy] [--json]``: neural-collapse metrics of saved features.

``FILE.npz`` follows the label and array contract of :mod:`collapselab.core.data._contract`:
``features`` (or ``X``) ``(N, d)``, ``labels`` ``(N,)`` in ``[0, C)`` with every class present,
optional ``weights`` ``(C, d)`` (which then fix ``C``) and ``bias`` ``(C,)``; it is read into
memory. ``FILE.npy`` holds the features alone, with ``--labels`` (and optionally ``--weights``,
``--bias``) as ``.npy`` files under the same contract; it is streamed in blocks (two exact
passes, memory ``O(C d + d^2)`` whatever ``N``) with a progress bar on a terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..core.errors import DataFileError, ParameterError

if TYPE_CHECKING:
    import numpy as np

    from ..collapse import CollapseReport

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


def _small(path: Path | None, name: str) -> np.ndarray | None:
    """A classifier array from a ``.npy`` file (small: C x d)."""
    import numpy as np

    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataFileError(f"metrics: cannot read {name} from {path} ({e}); give a .npy file written by numpy.save") from e


def _stream(file: Path, labels: Path | None, weights_file: Path | None, bias_file: Path | None, batch_size: int | None) -> CollapseReport:
    from ..collapse import stream_report
    from ..collapse._sources import label_values
    from ..core.data import check_class_labels
    from ..experiments._progress import progress

    where = "metrics"
    if labels is None:
        raise ParameterError(f"{where}: {file.name} holds the features only; give the labels with --labels LABELS.npy")
    if bias_file is not None and weights_file is None:
        raise ParameterError(f"{where}: --bias given without --weights; give the classifier's weights too")
    weights, bias = _small(weights_file, "weights"), _small(bias_file, "bias")
    num_classes = int(weights.shape[0]) if weights is not None and weights.ndim >= 1 else None
    # the contract of the .npz path, checked on the distinct label values (one pass over the labels)
    num_classes = check_class_labels(label_values(labels, where=where), where, num_classes=num_classes)[1]
    return stream_report(file, labels, weights, bias, num_classes=num_classes, batch_size=batch_size, progress=progress)


def metrics(
    file: Annotated[Path, typer.Argument(
        help="A .npz with arrays 'features' (or 'X') (N, d), 'labels' (N,) in [0, C), optional 'weights' (C, d) and 'bias' (C,); "
        "or a .npy of features (N, d), streamed from disk, with --labels.",
    )],
    labels: Annotated[Path | None, typer.Option("--labels", help="Labels (N,) in [0, C) as a .npy file (with FILE.npy features).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Classifier weights (C, d) as a .npy file (with FILE.npy features).")] = None,
    bias: Annotated[Path | None, typer.Option("--bias", help="Classifier bias (C,) as a .npy file (with --weights).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Rows per block when streaming (default: min(2048, 2^22 / C)).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object (weight-dependent keys are null without weights).")] = False,
) -> None:
    """Neural-collapse metrics (NC1-NC4, CDNV, ...) of saved penultimate-layer features."""
    from ..collapse import collapse_report

    report: CollapseReport
    if file.suffix == ".npy":
        report = _stream(file, labels, weights, bias, batch_size)
    else:
        if labels is not None or weights is not None or bias is not None:
            raise ParameterError(f"metrics: --labels, --weights and --bias go with a .npy of features; {file.name} holds its own arrays")
        arrays = _load(file)
        report = collapse_report(arrays["features"], arrays["labels"], arrays.get("weights"), arrays.get("bias"))
    if json_output:
        typer.echo(json.dumps(report.as_dict(extras=False), allow_nan=False))
    else:
        typer.echo(f"{file.name}: {report.num_samples} samples, {report.num_classes} classes, d = {report.dim}")
        typer.echo(report.format_table())
