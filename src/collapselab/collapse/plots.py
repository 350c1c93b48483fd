"""Figures of neural collapse: metrics against epochs, and the geometry of means and classifiers.

Each function draws on a given matplotlib ``Axes`` (or a new figure) and returns the figure;
callers save it (``RunContext.save_figure``). Import with matplotlib's Agg backend in headless
runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from ._report import CollapseReport

__all__ = ["plot_metrics", "plot_geometry", "DEFAULT_CURVES"]

DEFAULT_CURVES = ("nc1", "cdnv", "nc2_etf_error_means", "nc2_etf_error_weights", "nc3", "nc4")
"""Metrics drawn by :func:`plot_metrics` unless told otherwise (missing ones are skipped)."""


def _axes(ax: Any, **subplot: Any) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig = plt.figure(figsize=(6, 4.5))
    return fig, fig.add_subplot(111, **subplot)


def plot_metrics(
    epochs: Sequence[float],
    reports: Sequence[CollapseReport | Mapping[str, Any]],
    keys: Sequence[str] = DEFAULT_CURVES,
    *,
    ax: Any | None = None,
    title: str | None = None,
):
    """NC metrics against epochs on log-log axes (PHD 2020, Figs. 2-7 style).

    ``reports`` are :class:`CollapseReport` objects or their ``as_dict()``; a key that is
    missing, ``None`` or not positive at every epoch is skipped (non-positive points are
    dropped: log axes). Epochs must be positive (use ``epoch + 1`` for epoch 0).
    """
    if len(epochs) != len(reports):
        raise ShapeError(f"plot_metrics: {len(epochs)} epochs but {len(reports)} reports; give one report per epoch")
    if any(e <= 0 for e in epochs):
        raise ParameterError("plot_metrics: epochs must be positive for log axes; pass epoch + 1")
    rows = [r.as_dict() if isinstance(r, CollapseReport) else dict(r) for r in reports]
    fig, ax = _axes(ax)
    for key in keys:
        pts = [(e, row.get(key)) for e, row in zip(epochs, rows)]
        pts = [(e, v) for e, v in pts if v is not None and v > 0]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=key)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("metric")
    if ax.lines:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_geometry(
    means: torch.Tensor | CollapseReport,
    weights: torch.Tensor | None = None,
    *,
    dims: int = 2,
    ax: Any | None = None,
    title: str | None = None,
):
    """Centred class means (and classifier rows) projected on the top ``dims`` (2 or 3) right
    singular directions of ``M~`` (PHD 2020, Fig. 1 style). Each is rescaled to unit maximum
    norm so means and classifiers share the axes. A :class:`CollapseReport` supplies both."""
    if isinstance(means, CollapseReport):
        means, weights = means.means, means.weights if weights is None else weights
    if dims not in (2, 3):
        raise ParameterError(f"plot_geometry: dims must be 2 or 3, got {dims!r}")
    M = torch.as_tensor(means, dtype=torch.float64).cpu()
    if M.ndim != 2 or M.shape[0] < 2:
        raise ShapeError(f"plot_geometry: means must be (C, d) with C >= 2, got shape {tuple(M.shape)}")
    Mc = M - M.mean(0)
    _, _, vh = torch.linalg.svd(Mc, full_matrices=False)
    basis = vh[:dims].T
    k = basis.shape[1]
    fig, ax = _axes(ax, **({"projection": "3d"} if dims == 3 else {}))

    def draw(P: torch.Tensor, marker: str, label: str) -> None:
        P = P @ basis
        P = P / P.norm(dim=1).max().clamp(min=1e-300)
        cols = [P[:, j].numpy() if j < k else torch.zeros(P.shape[0]).numpy() for j in range(dims)]
        ax.scatter(*cols, marker=marker, label=label)

    draw(Mc, "o", "class means")
    if weights is not None:
        W = torch.as_tensor(weights, dtype=torch.float64).cpu()
        if W.shape != M.shape:
            raise ShapeError(f"plot_geometry: weights must have the shape of means {tuple(M.shape)}, got {tuple(W.shape)}")
        draw(W, "^", "classifiers")
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig
