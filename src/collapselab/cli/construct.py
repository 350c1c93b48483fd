"""``collapselab construct KIND FILE.npz [--out net.pt] [--json]``: explicit zero-loss minimizers.

Thin: resolves the kind (:func:`collapselab.construct.get_construction`), reads the arrays under
the label and array contract (:mod:`collapselab.core.data._contract`: ``X`` or ``features``,
``labels`` in ``[0, Q)``, optional ``Y``), calls the construction, saves
(:func:`collapselab.construct.save_network`, read back by :func:`~collapselab.construct.load_network`
or ``torch.load(path, weights_only=True)``) and prints.
Bad input raises a :class:`~collapselab.core.errors.CollapseLabError`; the top-level app
prints ``error: ...`` and exits 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from ..core.errors import MissingFileError

if TYPE_CHECKING:
    from ..construct import ConstructedNetwork

__all__ = ["construct"]


def _describe(result: ConstructedNetwork) -> str:
    lines = [
        f"{result.kind} construction: widths {result.module.widths}, {result.num_parameters} parameters, "
        f"{result.descriptive_parameters} descriptive parameters",
        f"cost {result.cost:.3e} ({result.cost_definition}); delta_P {result.delta_P:.3e}"
        + ("" if result.bound is None else f"; bound sqrt(Q)|Y| delta_P = {result.bound:.3e}"),
    ]
    for i, layer in enumerate(result.layers, start=1):
        if layer.collapses_class is None:
            lines.append(f"layer {i}: identity on the training data")
        else:
            point = ", ".join(f"{v:.4g}" for v in layer.collapse_point.tolist())
            angle = "" if layer.cone_angle is None else f", cone angle {math.degrees(layer.cone_angle):.1f} deg"
            lines.append(f"layer {i}: collapses class {layer.collapses_class} to ({point}) (mu {layer.mu:.4g}{angle})")
    return "\n".join(lines)


def construct(
    kind: str = typer.Argument(..., help="clustered | clustered-wide | sequential | shallow"),
    file: Path = typer.Argument(..., help="an .npz file with arrays X (or features) (N, M), labels (N,) in [0, Q) and optionally Y (Q, P)"),
    out: Path | None = typer.Option(None, "--out", help="save the network (widths and parameters; collapselab.construct.load_network(OUT) or torch.load(OUT, weights_only=True) reads it)"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object (cost, layers, delta_P, ...) and nothing else"),
) -> None:
    """Build an explicit minimizer of the training cost and explain every layer (CE23, CE24)."""
    # torch and scipy: imported when the command runs, so `collapselab --help` starts fast
    from ..construct import get_construction, save_network
    from ..core.data import check_class_labels, read_npz

    build = get_construction(kind)  # an unknown kind fails before the file is read
    if out is not None and not out.parent.is_dir():
        raise MissingFileError(f"construct: folder {out.parent} for --out does not exist; create it first")
    arrays = read_npz(file, ("X", "labels"), ("Y",), where="construct")
    Y = arrays.get("Y")
    check_class_labels(arrays["labels"], "construct", num_classes=int(Y.shape[0]) if Y is not None and Y.ndim >= 1 else None)
    result = build(arrays["X"], arrays["labels"], Y)
    if out is not None:
        save_network(result, out)
    if json_output:
        typer.echo(json.dumps(result.as_dict()))
    else:
        typer.echo(_describe(result))
        if out is not None:
            typer.echo(f"saved the network to {out} (read it with collapselab.construct.load_network)")
