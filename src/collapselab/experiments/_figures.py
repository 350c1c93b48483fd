"""Figures, animations and the paper's values of a run, with what the report needs to show them.

Every experiment figure is drawn under one matplotlib style (:data:`STYLE`, applied by the
runner around ``Experiment.run``): the same fonts, line widths and the colour-blind-safe
Okabe-Ito palette (:data:`COLOURS`) in every experiment. A figure is saved as
``figures/<name>.png`` and, when its vector form stays light (at most :data:`SVG_LIMIT`
bytes), also as ``figures/<name>.svg``; an animation as ``figures/<name>.gif`` (Pillow,
which matplotlib depends on, is the encoder; browsers play GIF without plugins).
``figures/figures.json`` records for each its caption, the claims it supports and the paper's
figure it corresponds to; ``paper.json`` the numbers the paper prints beside ours.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cycler import cycler

from ..core.claims import jsonable
from ..core.errors import ParameterError
from ..core.store import RunFolder, atomic_write_bytes, atomic_write_text, storage_errors

__all__ = ["COLOURS", "FIGURES_FILE", "PAPER_FILE", "STYLE", "SVG_LIMIT", "read_json_list", "record_figure", "record_paper_value", "save_animation", "save_figure"]

FIGURES_FILE, PAPER_FILE = "figures.json", "paper.json"
SVG_LIMIT = 250_000
"""Largest SVG kept beside the PNG (bytes; and at most 1.5 times the PNG): a scatter of thousands
of points stays PNG only."""
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
"""Okabe & Ito's colour-blind-safe palette, the colour cycle of every experiment figure."""
STYLE: dict[str, Any] = {
    "axes.prop_cycle": cycler(color=list(COLOURS)),
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False,
    "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 8,
    "legend.frameon": False, "lines.linewidth": 1.6, "figure.dpi": 110, "savefig.dpi": 110,
    "svg.fonttype": "path", "image.cmap": "viridis",
}  # fmt: skip
"""The matplotlib rcParams of every experiment figure."""


def read_json_list(path: Path) -> list[dict[str, Any]]:
    """A JSON list of records (figures.json, paper.json); absent or damaged: empty (the report says nothing is recorded)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []


def _append(path: Path, record: dict[str, Any], key: str) -> None:
    records = [r for r in read_json_list(path) if r.get(key) != record[key]] + [jsonable(record)]
    with storage_errors(path):
        atomic_write_text(path, json.dumps(records, indent=2) + "\n")


def record_figure(folder: RunFolder, name: str, files: Sequence[str], *, caption: str, claims: Sequence[str], paper_figure: str | None, kind: str = "figure") -> None:
    """Add (or replace) the entry of figure ``name`` in ``figures/figures.json``."""
    _append(folder.figures / FIGURES_FILE, {"name": name, "kind": kind, "files": list(files), "caption": caption, "claims": list(claims), "paper_figure": paper_figure}, "name")


def save_figure(folder: RunFolder, fig: Any, name: str, *, caption: str, claims: Sequence[str], paper_figure: str | None) -> Path:
    """Write ``figures/<name>.png`` (and ``.svg`` when light) and its figures.json entry; return the PNG's path."""
    name = name.removesuffix(".png")
    png = folder.save_figure(fig, f"{name}.png")
    files = [png.name]
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    if buf.tell() <= min(SVG_LIMIT, 1.5 * png.stat().st_size):
        with storage_errors(folder.figures / f"{name}.svg"):
            atomic_write_bytes(folder.figures / f"{name}.svg", buf.getvalue())
        files.append(f"{name}.svg")
    record_figure(folder, name, files, caption=caption, claims=claims, paper_figure=paper_figure)
    return png


def save_animation(folder: RunFolder, anim: Any, name: str, *, fps: int, caption: str, claims: Sequence[str], paper_figure: str | None, dpi: int = 80) -> Path:
    """Write a ``matplotlib.animation.Animation`` as ``figures/<name>.gif`` (Pillow) and its figures.json entry."""
    from matplotlib.animation import PillowWriter

    if fps < 1:
        raise ParameterError(f"an animation needs fps >= 1, got {fps}")
    path = folder.figures / f"{name}.gif"
    tmp = folder.figures / f".{name}.tmp.gif"  # Pillow picks the format by the suffix
    with storage_errors(path):
        try:
            anim.save(str(tmp), writer=PillowWriter(fps=fps), dpi=dpi)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    record_figure(folder, name, [path.name], caption=caption, claims=claims, paper_figure=paper_figure, kind="animation")
    return path


def record_paper_value(folder: RunFolder, quantity: str, *, paper: Any, source: str, ours: Any, claims: Sequence[str], differs: str) -> None:
    """Add (or replace) the entry of ``quantity`` in ``paper.json``: the paper's number (or a few
    digitised points), where it is printed, our number and where our setting differs."""
    if not source.strip():
        raise ParameterError(f"paper value {quantity!r}: name where the paper prints it (source=...)")
    _append(folder.path / PAPER_FILE, {"quantity": quantity, "paper": paper, "source": source, "ours": ours, "claims": list(claims), "differs": differs}, "quantity")
