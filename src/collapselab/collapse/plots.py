"""Figures of neural collapse: metrics against epochs or depth, and the geometry of means and classifiers.

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

__all__ = ["plot_metrics", "plot_depth", "plot_geometry", "DEFAULT_CURVES", "DEPTH_CURVES"]

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


DEPTH_CURVES = ("nc1", "nc2_etf_error_means", "ncc_accuracy")
"""Metrics drawn by :func:`plot_depth` unless told otherwise."""


def plot_depth(
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = DEPTH_CURVES,
    *,
    layers: Sequence[str] | None = None,
    title: str | None = None,
):
    """Metrics against depth, one curve per measured epoch (colour: epoch), one panel per key.

    ``history``: rows ``{"epoch": e, "layers": {layer: {metric: value}}}`` as kept by the
    callbacks of :mod:`collapselab.integrations`; ``layers``: the order along the depth axis
    (default: the first row's). Layer-wise views as in He and Su 2023 (a law of data
    separation: NC1-like separation falls geometrically with depth) and Rangamani et al. 2023
    (intermediate neural collapse). NC1 and the ETF error are drawn on a log scale, accuracies
    on a linear one; missing or non-positive values are left out of log panels.
    """
    import matplotlib.pyplot as plt

    rows = [r for r in history if r.get("layers")]
    if not rows:
        raise ShapeError("plot_depth: the history has no measured rows; train with a callback that measures first")
    order = list(layers) if layers is not None else list(rows[0]["layers"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    cmap = plt.get_cmap("viridis")
    epochs = [r["epoch"] for r in rows]
    for ax, key in zip(axes[0], keys):
        log = not key.endswith("accuracy")
        for i, row in enumerate(rows):
            pts = [(j, row["layers"].get(name, {}).get(key)) for j, name in enumerate(order)]
            pts = [(j, v) for j, v in pts if v is not None and (v > 0 or not log)]
            if pts:
                colour = cmap(i / max(len(rows) - 1, 1))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color=colour, label=f"epoch {epochs[i]}")
        if log:
            ax.set_yscale("log")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=60, ha="right", fontsize="x-small")
        ax.set_xlabel("layer (input to output)")
        ax.set_title(key, fontsize="medium")
    if axes[0][0].lines:
        axes[0][-1].legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
