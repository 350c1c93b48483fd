"""``collapselab construct KIND FILE.npz [--out net.pt] [--json]``: explicit zero-loss minimizers.

Thin: resolves the kind (:func:`collapselab.construct.get_construction`), reads the arrays,
calls the construction, saves and prints.
Bad input raises a :class:`~collapselab.core.errors.CollapseLabError`; the top-level app
prints ``error: ...`` and exits 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import typer

from ..construct import ConstructedNetwork, get_construction
from ..core.data import read_npz
from ..core.errors import MissingFileError

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
    file: Path = typer.Argument(..., help="an .npz file with arrays X (N, M), labels (N,) and optionally Y (Q, P)"),
    out: Path | None = typer.Option(None, "--out", help="save the network with torch.save(module, OUT)"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object (cost, layers, delta_P, ...) and nothing else"),
) -> None:
    """Build an explicit minimizer of the training cost and explain every layer (spec/chen.md 2-4)."""
    build = get_construction(kind)  # an unknown kind fails before the file is read
    if out is not None and not out.parent.is_dir():
        raise MissingFileError(f"construct: folder {out.parent} for --out does not exist; create it first")
    arrays = read_npz(file, ("X", "labels"), ("Y",), where="construct")
    result = build(arrays["X"], arrays["labels"], arrays.get("Y"))
    if out is not None:
        torch.save(result.module, out)
    if json_output:
        typer.echo(json.dumps(result.as_dict()))
    else:
        typer.echo(_describe(result))
        if out is not None:
            typer.echo(f"saved the module to {out}")
