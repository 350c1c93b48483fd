"""The class-level and per-sample results of one streaming measurement.

:class:`ClassMoments` holds what every class-level neural-collapse metric is a function of
(counts, class means, the within-class covariance ``Sigma_W`` and per-class variances;
Papyan, Han & Donoho 2020, Sec. 3; docs/theory/neural-collapse.md), :class:`SampleSums` the
sums of the per-sample rules (nearest-class-centre accuracy, NC4, ULPM within-class
variation and margins). Both are produced by :class:`~collapselab.collapse.CollapseStatistics`
and consumed by the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ParameterError
from ..core.validation import OneOf, check_param

__all__ = ["ClassMoments", "SampleSums"]


@dataclass(frozen=True)
class ClassMoments:
    """The class-level sufficient statistics every metric is a function of.

    counts: (C,) int64 ``N_c``; origin: (d,) a reference point and offsets: (C, d) the class
    means relative to it, ``mu_c = origin + offsets_c`` (kept apart so that differences of
    means do not inherit the rounding of a large common offset); means: (C, d) the class means
    ``mu_c`` themselves, each to its own precision (``s_c + S_c / N_c``: ``origin + offsets_c``
    would lose a small mean next to a large origin); within: the within-class
    covariance ``Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``, either all of it
    (d, d) (``basis`` None) or its restriction ``U^T Sigma_W U`` (k, k) to the span of an
    orthonormal ``basis`` U (d, k) (``covariance="span"``); class_vars: (C,)
    ``var_c = (1/N_c) sum_{i in c} |h_i - mu_c|^2``; classes: (C,) int64 original label
    values of classes ``0..C-1``. All float64.
    """

    counts: torch.Tensor
    origin: torch.Tensor
    offsets: torch.Tensor
    means: torch.Tensor
    within: torch.Tensor
    class_vars: torch.Tensor
    classes: torch.Tensor
    basis: torch.Tensor | None = None

    @property
    def sigma_w(self) -> torch.Tensor:
        """``Sigma_W`` (d, d); only for statistics accumulated with the full covariance."""
        if self.basis is not None:
            raise ParameterError(
                f"ClassMoments.sigma_w: these statistics hold Sigma_W only on the {self.basis.shape[1]}-dimensional span of the class means "
                "(covariance='span'); accumulate with covariance=True for the full d x d matrix"
            )
        return self.within

    def within_quadratic(self, v: torch.Tensor) -> torch.Tensor:
        """``(v_k^T Sigma_W v_k)_k`` (r,) for the columns of ``v`` (d, r).

        With a span basis ``U`` the columns must lie in ``span U`` (the class means' span, for
        NC1): then ``v = U a`` exactly and ``v^T Sigma_W v = a^T (U^T Sigma_W U) a``. A column
        farther than ``1e-8 |v_k|`` from the span raises :class:`ParameterError` (the class
        means moved away from the reference means the statistics were built with)."""
        if self.basis is None:
            return (v * (self.within @ v)).sum(0)
        a = self.basis.T @ v
        off = torch.linalg.vector_norm(v - self.basis @ a, dim=0)
        scale = torch.linalg.vector_norm(v, dim=0)
        if bool((off > 1e-8 * scale).any()):
            worst = float((off / scale.clamp(min=torch.finfo(v.dtype).tiny)).max())
            raise ParameterError(
                f"ClassMoments.within_quadratic: a direction lies {worst:.2e} (relative) outside the span the covariance was "
                "accumulated on: the class means differ from the reference means; accumulate with covariance=True"
            )
        return (a * (self.within @ a)).sum(0)

    def within_trace(self) -> torch.Tensor:
        """``Tr Sigma_W = (1/N) sum_c N_c var_c`` (scalar; from the class variances, so exact in
        both the full and the span form)."""
        n = self.counts.to(self.class_vars.dtype)
        return (n * self.class_vars).sum() / n.sum()

    @property
    def num_classes(self) -> int:
        """``C``."""
        return int(self.offsets.shape[0])

    @property
    def num_samples(self) -> int:
        """``N``."""
        return int(self.counts.sum())

    @property
    def dim(self) -> int:
        """``d``."""
        return int(self.offsets.shape[1])

    def _centre(self, kind: str) -> torch.Tensor:
        check_param("global_mean", kind, OneOf(["unweighted", "weighted"]), "ClassMoments")
        if kind == "unweighted":
            return self.offsets.mean(0)
        w = self.counts.to(self.offsets.dtype)
        return (w @ self.offsets) / w.sum()

    def global_mean(self, kind: str = "unweighted") -> torch.Tensor:
        """``mu_G``: ``(1/C) sum_c mu_c`` (``"unweighted"``, PHD, canonical) or the sample mean
        ``(1/N) sum_c N_c mu_c`` (``"weighted"``). (d,)"""
        return self.origin + self._centre(kind)

    def centred_means(self, kind: str = "unweighted") -> torch.Tensor:
        """``M~`` (C, d): rows ``mu_c - mu_G``."""
        return self.offsets - self._centre(kind)

    def centring_null(self, kind: str = "unweighted") -> torch.Tensor:
        """(C,) ``n`` with ``n^T M~ = 0``: ones (unweighted centring) or the counts (weighted)."""
        check_param("global_mean", kind, OneOf(["unweighted", "weighted"]), "ClassMoments")
        w = self.counts.to(self.offsets)
        return torch.ones_like(w) if kind == "unweighted" else w

    def feature_norm_sq(self) -> torch.Tensor:
        """``|H|_F^2 = sum_i |h_i|^2 = sum_c N_c (var_c + |mu_c|^2)`` (scalar)."""
        n = self.counts.to(self.offsets.dtype)
        mu = self.means
        return (n * (self.class_vars + (mu * mu).sum(1))).sum()


@dataclass(frozen=True)
class SampleSums:
    """Per-sample quantities accumulated in a pass that knew reference means and/or a
    classifier; a field is ``None`` when the pass could not compute it.

    Counts are numbers of samples; ``within_dist = sum_i |h_i - m_{y_i}|`` and
    ``global_dist = sum_i |h_i - m_G|`` with ``m`` the reference means and ``m_G`` their
    unweighted mean; margins are ``m_i = z_{y} - max_{c != y} z_c`` of the logits ``z = W h + b``
    (``margin_sum = sum m_i``, ``margin_sq = sum m_i^2``, ``margin_scatter = sum (m_i - mean m)^2``,
    the last from shifted sums, accurate to float64 rounding even when every margin is equal);
    ``nc_margin`` is ULPM's ``q_min = min_i (w_y^T h_i - max_{c != y} w_c^T h_i)`` (no bias).
    """

    num_samples: int
    ncc_correct: float | None
    correct: float | None
    nc4_agree: float | None
    within_dist: float | None
    global_dist: float | None
    margin_sum: float | None
    margin_sq: float | None
    margin_scatter: float | None
    margin_min: float | None
    nc_margin: float | None
