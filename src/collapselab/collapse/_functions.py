"""Public metric functions on in-memory ``(features, labels)``.

Each runs the exact two-pass measurement (class means first, then statistics shifted by
those means, so nothing cancels) through :class:`CollapseStatistics`, in chunks of rows so
memory stays ``O(chunk d + C d + d^2)``.

Labels: with ``num_classes=None`` (default) the distinct label values, sorted, are the
classes (``{3, 7, 9}`` -> classes 0, 1, 2; row ``k`` of a classifier belongs to the
``k``-th smallest value), so only present classes exist. With ``num_classes=C`` labels
must lie in ``[0, C)`` and a class without samples is an :class:`EmptyClassError`. With a
classifier of ``C`` rows and ``num_classes=None``, labels inside ``[0, C)`` index its rows
directly (a missing class is then an EmptyClassError).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..core.errors import NonFiniteError, ShapeError
from ..core.validation import Interval, OneOf, check_finite, check_matrix, check_param
from . import _metrics as m
from ._labels import check_features, map_labels
from ._moments import ClassMoments
from ._report import CollapseReport
from ._sources import batch_rows, resolve_classes, stream_statistics
from ._streaming import CollapseStatistics

__all__ = [
    "NC2",
    "class_moments",
    "collapse_report",
    "nc1",
    "cdnv",
    "nc2",
    "nc3",
    "nc4",
    "principal_angles",
    "mse_decomposition",
]

class NC2(NamedTuple):
    """NC2 of one set of vectors (centred class means or classifier rows)."""

    equinorm: float
    equiangular: float
    etf_error: float


def _passes(
    features: Any,
    labels: Any,
    num_classes: int | None,
    weights: Any | None,
    bias: Any | None,
    where: str,
    *,
    per_sample: bool = True,
    covariance: bool | str = "span",
) -> CollapseStatistics:
    """Two passes: means (counts and sums only), then statistics shifted by them (with the
    per-sample rules unless ``per_sample=False``). ``covariance="span"`` (default) holds
    ``Sigma_W`` on the span of the class means, all that the report needs; ``True`` all of it."""
    h = check_features(features, where, finite=False)  # checked per chunk by update()
    if num_classes is not None:
        check_param("num_classes", num_classes, Interval(int, 1), where)
        C, classes = int(num_classes), None
    else:
        C, classes = resolve_classes(map_labels(labels, where)[1], weights, where)
    lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if lab.ndim != 1:
        raise ShapeError(f"{where}: labels must be 1-D of length N, got shape {tuple(lab.shape)}")
    if lab.shape[0] != h.shape[0]:
        raise ShapeError(f"{where}: labels has length {lab.shape[0]} but features has {h.shape[0]} rows; pass one label per sample")
    B = batch_rows(C)
    try:
        return stream_statistics(
            lambda: ((h[a : a + B], lab[a : a + B]) for a in range(0, h.shape[0], B)), C, classes=classes,
            weights=weights, bias=bias, per_sample=per_sample, covariance=covariance, device=h.device, where=where,
        )
    except NonFiniteError:
        check_finite(h, "features", where)  # name the entry by its index in the whole array
        raise


def class_moments(features: Any, labels: Any, *, num_classes: int | None = None) -> ClassMoments:
    """Counts, means, ``Sigma_W`` and per-class variances (:class:`ClassMoments`), exact two-pass.
    features: (N, d) any floating dtype (accumulated in float64); labels: (N,) integers."""
    return _moments(features, labels, num_classes, "class_moments", covariance=True)


def _moments(features: Any, labels: Any, num_classes: int | None, where: str, *, covariance: bool | str = "span") -> ClassMoments:
    """Exact two-pass moments; ``Sigma_W`` on the span of the class means unless ``covariance=True``."""
    return _passes(features, labels, num_classes, None, None, where, per_sample=False, covariance=covariance).moments()


def collapse_report(
    features: Any,
    labels: Any,
    weights: Any | None = None,
    bias: Any | None = None,
    *,
    num_classes: int | None = None,
    rtol: float | None = None,
    global_mean: str = "unweighted",
    center_weights: bool = False,
) -> CollapseReport:
    """Every metric (:class:`CollapseReport`) of ``features`` (N, d) with ``labels`` (N,) and an
    optional classifier ``weights`` (C, d), ``bias`` (C,).

    Options: ``rtol`` the relative singular-value cut for the rank of ``M~`` (default
    ``max(C, d) eps``); ``global_mean`` ``"unweighted"`` (PHD, mean of class means) or
    ``"weighted"`` (sample mean); ``center_weights`` subtracts the mean classifier row before
    NC2 of the weights (canonical: not centred, as PHD).

    Precision: features of any floating dtype are upcast exactly to float64 and every statistic
    is accumulated and reported in float64 (float32 features are not rounded further).
    """
    stats = _passes(features, labels, num_classes, weights, bias, "collapse_report")
    return stats.report(rtol=rtol, global_mean=global_mean, center_weights=center_weights)


def nc1(
    features: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    variant: str = "span",
    global_mean: str = "unweighted",
    rtol: float | None = None,
) -> float:
    """NC1 (PHD 2020; docs/theory/neural-collapse.md).

    ``variant="span"`` (canonical): ``Tr(Sigma_W Sigma_B^+)/C`` computed in the span of ``M~``
    (``_metrics.nc1_span``; the rank is in :func:`collapse_report`);
    ``"trace_ratio"``: ``Tr Sigma_W / Tr Sigma_B``. Zero iff within-class variability vanishes.
    """
    where = "nc1"
    check_param("variant", variant, OneOf(["span", "trace_ratio"]), where)
    check_param("global_mean", global_mean, OneOf(["unweighted", "weighted"]), where)
    mom = _moments(features, labels, num_classes, where)
    mc = mom.centred_means(global_mean)
    if variant == "trace_ratio":
        return m.nc1_trace_ratio(mom, mc)
    tol = m.default_rtol(mom.num_classes, mom.dim) if rtol is None else check_param("rtol", rtol, Interval(float, 0.0, 1.0, closed="left"), where)
    return m.nc1_span(mom, *m.row_basis(mc, tol, null=mom.centring_null(global_mean)))


def cdnv(features: Any, labels: Any, *, num_classes: int | None = None, ddof: int = 0, exponent: float = 2.0) -> float:
    """Class-distance normalised variance (Galanti et al. 2022), mean over unordered class pairs
    of ``(var_c + var_c') / (2 |mu_c - mu_c'|^exponent)``; ``var_c`` divides by ``N_c - ddof``
    (canonical ``ddof=0``, ``exponent=2``)."""
    where = "cdnv"
    check_param("ddof", ddof, OneOf([0, 1]), where)
    check_param("exponent", exponent, Interval(float, 0.0, closed="neither"), where)
    mom = _moments(features, labels, num_classes, where)
    if ddof and bool((mom.counts <= ddof).any()):
        c = int(torch.nonzero(mom.counts <= ddof)[0])
        raise ShapeError(f"{where}: class {int(mom.classes[c])} has {int(mom.counts[c])} sample; ddof=1 needs at least 2 per class (use ddof=0)")
    return m.cdnv_pairs(mom, ddof=ddof, exponent=exponent)


def nc2(
    features: Any,
    labels: Any,
    weights: Any | None = None,
    *,
    num_classes: int | None = None,
    of: str = "means",
    global_mean: str = "unweighted",
    center_weights: bool = False,
) -> NC2:
    """NC2 (PHD 2020; docs/theory/neural-collapse.md): equinorm (std/mean of norms, Bessel std), equiangularity
    (``mean_{c != c'} |cos + 1/(C-1)|``) and ETF error of the Gram, for the centred class means
    (``of="means"``) or the classifier rows (``of="weights"``; not centred unless
    ``center_weights``)."""
    where = "nc2"
    check_param("of", of, OneOf(["means", "weights"]), where)
    if of == "weights":
        if weights is None:
            raise ShapeError(f"{where}: of='weights' needs the classifier; pass weights (C, d)")
        rep = collapse_report(features, labels, weights, num_classes=num_classes, global_mean=global_mean, center_weights=center_weights)
        return NC2(rep.nc2_equinorm_weights, rep.nc2_equiangular_weights, rep.nc2_etf_error_weights)
    check_param("global_mean", global_mean, OneOf(["unweighted", "weighted"]), where)
    mc = _moments(features, labels, num_classes, where).centred_means(global_mean)
    return NC2(m.equinorm(mc), m.equiangularity(mc), m.etf_error(mc, mc))


def nc3(
    features: Any,
    labels: Any,
    weights: Any,
    *,
    num_classes: int | None = None,
    variant: str = "phd",
    global_mean: str = "unweighted",
    rtol: float | None = None,
) -> float:
    """NC3, self-duality (PHD 2020; docs/theory/neural-collapse.md). ``variant="phd"`` (canonical):
    ``|W/|W|_F - M~/|M~|_F|_F^2``; ``"self_duality"``: ETF error of ``W M~^T``;
    ``"principal_angles"``: the largest principal angle (radians) between the row spaces of
    ``W`` and ``M~`` (all angles: :func:`principal_angles`). weights: (C, d)."""
    where = "nc3"
    check_param("variant", variant, OneOf(["phd", "self_duality", "principal_angles"]), where)
    rep = collapse_report(features, labels, weights, num_classes=num_classes, global_mean=global_mean, rtol=rtol)
    return {"phd": rep.nc3, "self_duality": rep.nc3_self_duality_error, "principal_angles": rep.nc3_max_principal_angle}[variant]


def principal_angles(
    features: Any, labels: Any, weights: Any, *, num_classes: int | None = None, rtol: float | None = None
) -> torch.Tensor:
    """All principal angles (radians, ascending, float64) between the row space of the
    classifier ``W`` (C, d) and that of the centred class means ``M~``."""
    where = "principal_angles"
    mom = _moments(features, labels, num_classes, where)
    W = check_matrix(weights, "weights", where, shape=(mom.num_classes, mom.dim), device=mom.means.device)
    tol = m.default_rtol(mom.num_classes, mom.dim) if rtol is None else check_param("rtol", rtol, Interval(float, 0.0, 1.0, closed="left"), where)
    return m.row_space_angles(m.row_basis(W, tol)[1], m.row_basis(mom.centred_means(), tol, null=mom.centring_null())[1])


def nc4(features: Any, labels: Any, weights: Any, bias: Any | None = None, *, num_classes: int | None = None) -> float:
    """NC4 (PHD 2020; docs/theory/neural-collapse.md): fraction of samples where ``argmax_c (W h + b)_c`` differs from
    the nearest class mean ``argmin_c |h - mu_c|``. The bias is included when given."""
    return collapse_report(features, labels, weights, bias, num_classes=num_classes).nc4


def mse_decomposition(
    features: Any,
    labels: Any,
    weights: Any,
    bias: Any | None = None,
    *,
    weight_decay: float,
    targets: Any | None = None,
    num_classes: int | None = None,
) -> m.MSEDecomposition:
    """HPD 2022 decomposition of the regularised MSE loss into ``L_NC1 + L_NC2/3 + L_perp``
    (``_metrics.mse_decomposition_terms`` gives the formulas; the
    penalty is ``(weight_decay/2)(|W|_F^2 + |b|^2)``). targets: (C, C), row ``c`` the target
    of class ``c``, default the identity (one-hot)."""
    where = "mse_decomposition"
    check_param("weight_decay", weight_decay, Interval(float, 0.0), where)
    mom = _moments(features, labels, num_classes, where, covariance=True)
    C, d = mom.num_classes, mom.dim
    W = check_matrix(weights, "weights", where, shape=(C, d), device=mom.means.device)
    b = None if bias is None else check_matrix(torch.as_tensor(bias).reshape(1, -1), "bias", where, shape=(1, C), device=W.device).reshape(-1)
    Y = torch.eye(C, dtype=torch.float64, device=W.device) if targets is None else check_matrix(targets, "targets", where, shape=(C, C), device=W.device)
    return m.mse_decomposition_terms(mom, W, b, weight_decay, Y)
