"""One report object holding every neural-collapse metric of one layer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..core.errors import LabelError
from ..core.validation import Interval, OneOf, check_param
from . import _metrics as m
from ._moments import ClassMoments, SampleSums

__all__ = ["CollapseReport", "build_report", "REPORT_KEYS"]

REPORT_KEYS = (
    "nc1",
    "nc1_trace_ratio",
    "cdnv",
    "nc2_equinorm_means",
    "nc2_equinorm_weights",
    "nc2_equiangular_means",
    "nc2_equiangular_weights",
    "nc2_etf_error_means",
    "nc2_etf_error_weights",
    "nc3",
    "nc3_self_duality_error",
    "nc4",
    "accuracy",
    "ncc_accuracy",
    "bias_collapse",
    "rank",
    "num_classes",
    "num_samples",
)
"""The keys of ``collapselab metrics --json``, in order."""


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _largest(angles: torch.Tensor) -> float:
    """The largest principal angle; NaN when a subspace is {0} (equal class means or W = 0)."""
    return float(angles.max()) if angles.numel() else math.nan


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass(frozen=True)
class CollapseReport:
    """Every metric of one layer (Papyan, Han & Donoho 2020; docs/theory/neural-collapse.md). ``None`` = not computable from
    what the measurement had (no classifier, or no reference means for per-sample rules).

    Class-level (need only features and labels):
        nc1: ``Tr(Sigma_W Sigma_B^+)/C`` in the span of ``M~`` (rank ``rank``, cut ``rtol``);
        nc1_trace_ratio: ``Tr Sigma_W / Tr Sigma_B``; cdnv: pairwise CDNV;
        nc2_*_means: equinorm, equiangularity, ETF error of ``M~``.

    With a classifier ``W`` (C, d), ``b`` (C,):
        nc2_*_weights: the same for the rows of ``W`` (not centred unless
        ``weights_centred``); nc3: ``|W/|W| - M~/|M~||_F^2``; nc3_self_duality_error: ETF
        error of ``W M~^T``; nc3_max_principal_angle: largest principal angle (radians)
        between the row spaces of ``W`` and ``M~``; bias_collapse: ``|W mu_G + b|``;
        ulpm_self_duality: ULPM quantity (4); nc_margin_bound: Lemma 3.1's bound.

    Per-sample (need a pass with reference means and/or the classifier):
        accuracy, ncc_accuracy (nearest class centre), nc4 (fraction where the two rules
        disagree, bias included), ulpm_within_class_variation (ULPM (2),
        ``Avg|h - mu_c| / Avg|h - mu_G|``), nc_margin (ULPM ``q_min = min_i (z_{y_i} -
        max_{c != y_i} z_c)`` of the classifier as given, ``z = W h + b``: the bias is included
        when one is passed, so ``nc_margin == margin_min``), margins of the logits
        ``z_y - max_{c != y} z_c``: mean, second moment, (population) std, min.

    Ji et al. (ULPM), Def. of ``q_min`` and Lemma 3.1 have no bias; Lemma 3.1's bound still holds
    with one on balanced classes, because the bias terms ``b_c - b_j`` average to zero over the
    ordered class pairs in the lemma's proof (docs/theory/ulpm.md).
    ``means`` (C, d) and ``weights`` are kept for plots and are not part of :meth:`as_dict`.
    """

    num_classes: int
    num_samples: int
    dim: int
    rank: int
    rtol: float
    global_mean: str
    weights_centred: bool
    classes: list[int]
    counts: list[int]
    nc1: float
    nc1_trace_ratio: float
    cdnv: float
    nc2_equinorm_means: float
    nc2_equiangular_means: float
    nc2_etf_error_means: float
    nc2_equinorm_weights: float | None = None
    nc2_equiangular_weights: float | None = None
    nc2_etf_error_weights: float | None = None
    nc3: float | None = None
    nc3_self_duality_error: float | None = None
    nc3_max_principal_angle: float | None = None
    bias_collapse: float | None = None
    ulpm_self_duality: float | None = None
    nc_margin_bound: float | None = None
    nc4: float | None = None
    accuracy: float | None = None
    ncc_accuracy: float | None = None
    ulpm_within_class_variation: float | None = None
    nc_margin: float | None = None
    margin_mean: float | None = None
    margin_second_moment: float | None = None
    margin_std: float | None = None
    margin_min: float | None = None
    means: torch.Tensor | None = field(default=None, repr=False, compare=False)
    weights: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def as_dict(self, extras: bool = True) -> dict[str, Any]:
        """JSON-ready dict: the issue's keys (:data:`REPORT_KEYS`) first, then (``extras``)
        every other scalar field; non-finite numbers become ``None``."""
        out = {k: _finite_or_none(getattr(self, k)) for k in REPORT_KEYS}
        if extras:
            for f in fields(self):
                if f.name not in out and f.name not in ("means", "weights"):
                    out[f.name] = _finite_or_none(getattr(self, f.name))
        return out

    def format_table(self) -> str:
        """A readable two-column table of the scalar metrics (``-`` for unavailable)."""
        rows = [(k, v) for k, v in self.as_dict().items() if k not in ("classes", "counts")]
        width = max(len(k) for k, _ in rows)

        def fmt(v: Any) -> str:
            if v is None:
                return "-"
            if isinstance(v, bool) or isinstance(v, (int, str)):
                return str(v)
            return f"{v:.6g}"

        return "\n".join(f"{k:<{width}}  {fmt(v)}" for k, v in rows)


def build_report(
    mom: ClassMoments,
    sums: SampleSums | None,
    weights: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    rtol: float | None = None,
    global_mean: str = "unweighted",
    center_weights: bool = False,
) -> CollapseReport:
    """Assemble a :class:`CollapseReport` from class moments, optional per-sample sums and an
    optional (already shape-checked) classifier. ``rtol`` defaults to
    :func:`~collapselab.collapse._metrics.default_rtol`."""
    where = "collapse report"
    C = mom.num_classes
    if C < 2:
        raise LabelError(f"{where}: labels contain a single class (value {int(mom.classes[0])}); neural collapse needs at least 2 classes")
    check_param("global_mean", global_mean, OneOf(["unweighted", "weighted"]), where)
    tol = m.default_rtol(C, mom.dim) if rtol is None else check_param("rtol", rtol, Interval(float, 0.0, 1.0, closed="left"), where)
    mc = mom.centred_means(global_mean)
    s_m, v_m = m.row_basis(mc, tol, null=mom.centring_null(global_mean))  # one SVD of M~ serves NC1, its rank and NC3's angles
    nc1, rank = m.nc1_span(mom, s_m, v_m), int(s_m.numel())
    vals: dict[str, Any] = dict(
        num_classes=C,
        num_samples=mom.num_samples,
        dim=mom.dim,
        rank=rank,
        rtol=float(tol),
        global_mean=global_mean,
        weights_centred=bool(center_weights),
        classes=[int(c) for c in mom.classes],
        counts=[int(c) for c in mom.counts],
        nc1=nc1,
        nc1_trace_ratio=m.nc1_trace_ratio(mom, mc),
        cdnv=m.cdnv_pairs(mom),
        nc2_equinorm_means=m.equinorm(mc),
        nc2_equiangular_means=m.equiangularity(mc),
        nc2_etf_error_means=m.etf_error(mc, mc),
        means=mom.means,
    )
    if weights is not None:
        W = weights.to(mom.means)
        b = None if bias is None else bias.to(mom.means)
        Wr = W - W.mean(0) if center_weights else W
        vals.update(
            nc2_equinorm_weights=m.equinorm(Wr),
            nc2_equiangular_weights=m.equiangularity(Wr),
            nc2_etf_error_weights=m.etf_error(Wr, Wr),
            nc3=m.nc3_distance(W, mc),
            nc3_self_duality_error=m.self_duality_error(W, mc),
            nc3_max_principal_angle=_largest(m.row_space_angles(m.row_basis(W, tol)[1], v_m)),
            bias_collapse=m.bias_collapse_norm(W, b, mom.global_mean(global_mean)),
            ulpm_self_duality=m.ulpm_self_duality(W, mc),
            nc_margin_bound=m.nc_margin_bound(W, mom.feature_norm_sq(), C, mom.num_samples),
            weights=W,
        )
    if sums is not None:
        N = float(sums.num_samples)

        def frac(x: float | None) -> float | None:
            return None if x is None else x / N

        mean = frac(sums.margin_sum)
        second = frac(sums.margin_sq)
        vals.update(
            accuracy=frac(sums.correct),
            ncc_accuracy=frac(sums.ncc_correct),
            nc4=None if sums.nc4_agree is None else 1.0 - sums.nc4_agree / N,
            ulpm_within_class_variation=None if sums.within_dist is None else _ratio(sums.within_dist, sums.global_dist),
            # the streaming minimum of W h alone (ULPM has no bias); with a bias, the classifier's margin
            nc_margin=sums.nc_margin if bias is None else sums.margin_min,
            margin_mean=mean,
            margin_second_moment=second,
            margin_std=None if sums.margin_scatter is None else math.sqrt(sums.margin_scatter / N),
            margin_min=sums.margin_min,
        )
    return CollapseReport(**vals)
