"""Streaming sufficient statistics for neural-collapse metrics (spec/neural_collapse.md,
"How to compute").

One pass over ``(features, labels)`` batches accumulates, in float64 whatever the feature
dtype, with a per-class shift ``s_c`` (see below):

* ``n_c`` per-class counts, ``S_c = sum_{i in c} (h_i - s_c)`` per-class shifted sums (C, d),
* ``q_c = sum_{i in c} |h_i - s_c|^2`` per-class shifted sums of squares (C,),
* ``G = sum_i (h_i - s_{y_i})(h_i - s_{y_i})^T`` one shifted Gram (d, d),

so memory is ``O(C d + d^2)`` and each batch costs one ``B x d x d`` GEMM plus two
``index_add_``. Then ``mu_c = s_c + S_c / n_c`` and the within-class scatter is
``N Sigma_W = G - S^T diag(1/n) S`` (exact for any shift). The shift removes the
cancellation of the textbook ``sum h h^T - N mu mu^T``: ``s_c`` is the mean of class ``c``
in the first batch that contains it (or the caller's reference means), so the digits lost
scale with ``|mu_c - s_c|^2 / var_c``, not with ``|mu_c|^2 / var_c`` (a common offset of
1e6 costs nothing).

Statistics merge by addition after moving one side to the other's shift
(``S' = S + n delta``, ``q' = q + 2 delta.S + n |delta|^2``,
``G' = G + delta^T S + S^T delta + delta^T diag(n) delta`` with ``delta = s_old - s_new``),
which is what :meth:`CollapseStatistics.merge` and :meth:`CollapseStatistics.all_reduce` do.

Margins ``m_i`` of the logits are shifted the same way: by ``K``, the mean margin of the
first batch, so ``sum (m_i - K)`` and ``sum (m_i - K)^2`` give the variance without the
cancellation of ``E[m^2] - E[m]^2`` (which loses ``eps E[m^2] / var`` relative precision: all
of it at collapse, where every margin is equal); they move to another shift by the same
identities with ``d = 1``.

``G`` is symmetric, so only its block upper triangle is accumulated (:func:`_add_upper_gram`,
blocks of ``_GRAM_BLOCK`` columns: 10/16 of the full product's arithmetic for ``d = 512``,
the same float64 dot products) and it is mirrored when read (:func:`_symmetric_gram`); the
symmetric corrections above may touch the whole matrix.

With reference means (a previous pass) the shift is those means, and per-sample quantities
that need them (nearest-class-centre accuracy, NC4, within-class distances) are
accumulated too; with a classifier, accuracy and margins. With reference means the Gram can
also be restricted to their span (``covariance="span"``): ``U^T G U`` for an orthonormal basis
``U`` (d, k) of ``span{m_c - m_G}``, all that the report needs (see :class:`CollapseStatistics`);
the identities above hold with ``delta U`` and ``S U`` in place of ``delta`` and ``S``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..core.errors import EmptyClassError, LabelError, NonFiniteError, ParameterError, ShapeError
from ..core.validation import Interval, OneOf, check_finite, check_matrix, check_param
from ._labels import as_classes, check_batch_labels, check_features

if TYPE_CHECKING:
    from ._report import CollapseReport

__all__ = ["ClassMoments", "SampleSums", "CollapseStatistics", "check_all_classes"]

# Sample sums, in this order, in one float64 vector (so all_reduce is one call); the margin
# sums are shifted by _State.margin_shift.
_SUM_FIELDS = ("ncc_correct", "correct", "nc4_agree", "within_dist", "global_dist", "margin_sum", "margin_sq")
_MARGIN_SUM, _MARGIN_SQ = _SUM_FIELDS.index("margin_sum"), _SUM_FIELDS.index("margin_sq")
# Minima, reduced with MIN: margin of the logits (with bias), NC margin of W h (no bias, ULPM Def 3.1).
_MIN_FIELDS = ("margin_min", "nc_margin")
# Columns per block of the triangular Gram update: wide enough for an efficient GEMM, narrow
# enough that skipping the blocks below the diagonal saves arithmetic (measured: d = 512 in
# 0.73 and d = 1024 in 0.65 of the time of the full product, MKL, one thread).
_GRAM_BLOCK = 128


def _add_upper_gram(gram: torch.Tensor, x: torch.Tensor) -> None:
    """``gram += x^T x`` on the block upper triangle: for each block ``J`` of ``_GRAM_BLOCK``
    columns, ``gram[J, j0:] += x[:, J]^T x[:, j0:]`` (``j0`` the first column of ``J``). The
    entries below the diagonal blocks are left alone; read the sum with :func:`_symmetric_gram`.
    gram: (d, d), x: (B, d)."""
    d = x.shape[1]
    for j in range(0, d, _GRAM_BLOCK):
        gram[j : j + _GRAM_BLOCK, j:].addmm_(x[:, j : j + _GRAM_BLOCK].T, x[:, j:])


def _first_index(z: torch.Tensor, extreme: torch.Tensor) -> torch.Tensor:
    """(B,) int64: for each column of ``z`` (C, B) the first row where ``z`` equals ``extreme``
    (B,), its column minimum or maximum; so ``_first_index(z, z.amin(0))`` is ``z.argmin(0)``
    (ties to the first index, as torch), from a comparison, a product and a vectorised
    ``amax`` instead of an index reduction over the strided class axis."""
    C = z.shape[0]
    # C, C-1, ..., 1: the first hit has the largest rank (int32: the cheapest exact product)
    rank = torch.arange(C, 0, -1, dtype=torch.int32, device=z.device).unsqueeze(1)
    return C - ((z == extreme) * rank).amax(0).long()


def _span_basis(centred: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (d, k) of the row space of ``centred`` (C, d), every direction with a
    singular value above ``C d eps`` times the largest (k = 0 when all rows vanish). Looser
    cuts (the report's rank) select subspaces of this span."""
    if centred.numel() == 0 or float(centred.abs().max()) == 0.0:
        return centred.new_zeros(centred.shape[1], 0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = s > centred.shape[0] * centred.shape[1] * torch.finfo(centred.dtype).eps * s[0]
    return vh[keep].contiguous().T  # a view of the contiguous (k, d) rows


def _symmetric_gram(gram: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle is that of ``gram`` (d, d). Symmetric terms
    added to the whole matrix (:meth:`_State.rebase`, merge, all_reduce) stay correct above
    the diagonal, so the upper triangle is always the full Gram's."""
    return torch.triu(gram) + torch.triu(gram, 1).T


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


@dataclass
class _State:
    """Accumulators (all float64, one device). ``gram`` is None without covariance; only its
    upper triangle is meaningful (:func:`_add_upper_gram`)."""

    shift: torch.Tensor
    counts: torch.Tensor
    sums: torch.Tensor
    sq: torch.Tensor
    gram: torch.Tensor | None
    sample: torch.Tensor
    mins: torch.Tensor
    margin_shift: torch.Tensor  # () the shift K of the margin sums
    basis: torch.Tensor | None = None  # (d, k): gram is U^T G U (k, k) (covariance="span"), full otherwise

    @property
    def basis_t(self) -> torch.Tensor:
        """``U^T`` (k, d), contiguous (``basis`` is its transposed view)."""
        return self.basis.T

    def clone(self) -> "_State":
        return _State(*(None if t is None else t.clone() for t in (self.shift, self.counts, self.sums, self.sq, self.gram, self.sample, self.mins, self.margin_shift, self.basis)))

    def rebase(self, new_shift: torch.Tensor) -> None:
        """Move the shifted sums to ``new_shift`` (exact identities in the module docstring;
        with a span basis ``U`` the Gram identity is applied to ``delta U`` and ``S U``)."""
        delta = self.shift - new_shift
        n = self.counts
        if self.gram is not None:
            du, su = (delta, self.sums) if self.basis is None else (delta @ self.basis, self.sums @ self.basis)
            cross = du.T @ su
            self.gram += cross + cross.T + du.T @ (n.unsqueeze(1) * du)
        self.sq += 2.0 * (delta * self.sums).sum(1) + n * (delta * delta).sum(1)
        self.sums += n.unsqueeze(1) * delta
        self.shift = new_shift.clone()

    def rebase_margins(self, new_shift: torch.Tensor) -> None:
        """Move the shifted margin sums to ``new_shift`` (a 0-d tensor; the identities of
        :meth:`rebase` with ``d = 1`` and every sample counted)."""
        delta = self.margin_shift - new_shift
        n = self.counts.sum()
        self.sample[_MARGIN_SQ] += 2.0 * delta * self.sample[_MARGIN_SUM] + n * delta * delta
        self.sample[_MARGIN_SUM] += n * delta
        self.margin_shift = new_shift.clone()


def check_all_classes(counts: torch.Tensor, classes: torch.Tensor, where: str) -> None:
    """Raise :class:`EmptyClassError` naming the first class with no samples. counts: (C,)"""
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        C = counts.numel()
        label = int(classes[int(empty[0])])
        raise EmptyClassError(
            f"{where}: class {label} of C={C} has no samples ({empty.numel()} empty classes); "
            f"measure on data that contain every class or relabel to the {C - empty.numel()} present ones"
        )


class CollapseStatistics:
    """Streaming, mergeable sufficient statistics of penultimate (or any) features.

    ``update(features, labels)`` per batch; ``merge(other)`` or ``all_reduce()`` to combine
    shards; ``moments()`` for the class-level statistics; ``report(weights, bias)`` for every
    metric (:class:`~collapselab.collapse.CollapseReport`).

    Args:
        num_classes: ``C``; labels must lie in ``[0, C)`` unless ``classes`` is given.
        classes: the distinct label values, when they are not ``0..C-1``; a label ``v`` is
            class ``k`` when ``v`` is the ``k``-th smallest value (``num_classes`` defaults to
            ``len(classes)``).
        dim: feature dimension ``d``; inferred from the first batch. Needed only for
            :meth:`all_reduce` on a rank that may see no data.
        means: (C, d) reference class means from a previous pass (or a previous epoch). They
            become the shift (best precision) and enable nearest-class-centre accuracy, NC4 and
            the ULPM within-class variation.
        weights, bias: (C, d) and (C,) classifier for per-sample accuracy, NC4 and margins;
            :meth:`update` may pass the current classifier per batch (training).
        covariance: ``True``: accumulate the ``d x d`` Gram (``Sigma_W``); ``False``: counts and
            sums only, enough for :meth:`means` (the cheap first pass of a two-pass measurement);
            ``"span"`` (needs ``means``): the Gram restricted to the span of the centred
            reference means, ``U^T G U`` with ``U`` (d, k) an orthonormal basis of
            ``span{m_c - m_G}`` (k <= C - 1). Every metric of :meth:`report` needs ``Sigma_W``
            only there (NC1 = ``sum_k v_k^T Sigma_W v_k / s_k^2`` with ``v_k`` in that span;
            ``Tr Sigma_W`` comes from the class variances), so the report is the same, exactly,
            while a batch costs ``B x d x k`` instead of ``B x d x d``: for ``d = 512, C = 10``
            about 30x less arithmetic. The final means must span what the reference means
            span (true when both come from the same features, as in a two-pass measurement);
            otherwise the report raises :class:`ParameterError`.
        per_sample: accumulate the per-sample rules (accuracy, NC4, margins, ...) when
            reference means or a classifier are given (False: ``means`` only sets the shift;
            saves two ``B x d x C`` GEMMs per batch).
        device: where the float64 accumulators live (default: the first batch's device).

    Features of any floating dtype are accumulated in float64. Memory ``O(C d + d^2)``
    (``O(C d + C^2)`` with ``covariance="span"``).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        classes: Any | None = None,
        dim: int | None = None,
        means: Any | None = None,
        weights: Any | None = None,
        bias: Any | None = None,
        covariance: bool | str = True,
        per_sample: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        where = "CollapseStatistics"
        self._classes = None if classes is None else as_classes(classes, where)
        if num_classes is None:
            if self._classes is None:
                raise ParameterError(f"{where}: give num_classes (labels in [0, C)) or classes (the label values)")
            num_classes = int(self._classes.numel())
        check_param("num_classes", num_classes, Interval(int, 1), where)
        self.num_classes = int(num_classes)
        if self._classes is not None and self._classes.numel() != self.num_classes:
            raise ParameterError(f"{where}: classes lists {self._classes.numel()} values but num_classes={self.num_classes}")
        if dim is not None:
            check_param("dim", dim, Interval(int, 1), where)
        check_param("covariance", covariance, OneOf([True, False, "span"]), where)
        self.covariance: bool | str = covariance if covariance == "span" else bool(covariance)
        self.per_sample = bool(per_sample)
        self._device = None if device is None else torch.device(device)
        self._ref_means = None
        if means is not None:
            self._ref_means = check_matrix(means, "means", where, shape=(self.num_classes, dim), device=self._device)
            dim = int(self._ref_means.shape[1])
            self._device = self._ref_means.device
        elif self.covariance == "span":
            raise ParameterError(f"{where}: covariance='span' restricts Sigma_W to the span of the reference means; pass means= (a first pass's class means)")
        self._weights: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None
        if weights is not None:
            self._weights, self._bias = self._check_classifier(weights, bias, dim, where)
            dim = int(self._weights.shape[1])
        elif bias is not None:
            raise ParameterError(f"{where}: bias given without weights; pass the classifier's weights too")
        self._dim = dim
        self._state: _State | None = None
        self._buffers: dict[str, torch.Tensor] = {}
        if dim is not None and self._device is not None:
            self._allocate(dim, self._device)

    # ------------------------------------------------------------------ set-up
    @property
    def dim(self) -> int | None:
        """``d`` once known."""
        return self._dim

    @property
    def classes(self) -> torch.Tensor:
        """(C,) int64 original label values of classes ``0..C-1``."""
        return torch.arange(self.num_classes) if self._classes is None else self._classes.clone()

    @property
    def tracks_samples(self) -> bool:
        """Whether per-sample quantities (reference means or classifier) are accumulated."""
        return self.per_sample and (self._ref_means is not None or self._weights is not None)

    @property
    def num_samples(self) -> int:
        """Samples seen so far."""
        return 0 if self._state is None else int(self._state.counts.sum())

    @property
    def counts(self) -> torch.Tensor:
        """(C,) int64 samples seen per class so far (on the CPU)."""
        if self._state is None:
            return torch.zeros(self.num_classes, dtype=torch.int64)
        return self._state.counts.round().to(device="cpu", dtype=torch.int64)

    def _check_classifier(
        self, weights: Any, bias: Any | None, dim: int | None, where: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dev = self._device if self._device is not None else (weights.device if isinstance(weights, torch.Tensor) else None)
        W = check_matrix(weights, "weights", where, shape=(self.num_classes, dim), device=dev)
        b = None
        if bias is not None:
            b = check_matrix(torch.as_tensor(bias).reshape(1, -1) if not isinstance(bias, torch.Tensor) else bias.reshape(1, -1),
                             "bias", where, shape=(1, self.num_classes), device=W.device).reshape(-1)
        return W, b

    def _allocate(self, dim: int, device: torch.device) -> None:
        C, f64 = self.num_classes, torch.float64
        shift = torch.zeros(C, dim, dtype=f64, device=device) if self._ref_means is None else self._ref_means.to(device)
        self._dim, self._device = dim, device
        basis = None
        if self._ref_means is not None:
            self._ref_means = self._ref_means.to(device)
            # differences of reference means, for nearest-centre distances without cancellation
            origin = self._ref_means[0]
            offsets = self._ref_means - origin
            self._ref_centred = offsets - offsets.mean(0)  # m_c - m_G
            if self.covariance == "span":
                basis = _span_basis(self._ref_centred)
                # the centred means in that basis (C, k): their products with a batch come from
                # the batch's projection onto the span, one (k, B) GEMM for both (see _update_samples)
                self._ref_in_basis = self._ref_centred @ basis
            g = self._ref_centred @ self._ref_centred.T
            self._ref_sqnorm = torch.diagonal(g).clone()  # |m_c - m_G|^2
            dist2 = (self._ref_sqnorm.unsqueeze(0) + self._ref_sqnorm.unsqueeze(1) - 2.0 * g).clamp(min=0.0)
            self._ref_dist2_t = dist2.T.contiguous()  # row y: |m_c - m_y|^2 for every c
        k = dim if basis is None else int(basis.shape[1])
        self._state = _State(
            shift=shift,
            counts=torch.zeros(C, dtype=f64, device=device),
            sums=torch.zeros(C, dim, dtype=f64, device=device),
            sq=torch.zeros(C, dtype=f64, device=device),
            gram=torch.zeros(k, k, dtype=f64, device=device) if self.covariance else None,
            sample=torch.zeros(len(_SUM_FIELDS), dtype=f64, device=device),
            mins=torch.full((len(_MIN_FIELDS),), math.inf, dtype=f64, device=device),
            margin_shift=torch.zeros((), dtype=f64, device=device),
            basis=basis,
        )
        if self._weights is not None:
            self._weights = self._weights.to(device)
            self._bias = None if self._bias is None else self._bias.to(device)

    def _buffer(self, name: str, shape: tuple[int, int]) -> torch.Tensor:
        """A reused float64 work buffer viewed as ``shape`` (grown when needed); not statistics."""
        n = shape[0] * shape[1]
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=torch.float64, device=self._state.counts.device)
            self._buffers[name] = buf
        return buf[:n].view(shape)

    # ------------------------------------------------------------------ accumulation
    @torch.no_grad()
    def update(self, features: Any, labels: Any, *, weights: Any | None = None, bias: Any | None = None) -> "CollapseStatistics":
        """Add one batch. features: (B, d) any floating dtype; labels: (B,) integers.

        ``weights``/``bias`` replace the classifier (only when one was given at construction)
        for this batch and later reports, for tracking during training. Returns ``self``.
        NaN/Inf features raise :class:`NonFiniteError` and leave the statistics unchanged.
        """
        where = "CollapseStatistics.update"
        h = check_features(features, where, finite=False)  # finiteness: from the row norms below
        if self._state is None:
            if self._dim is not None and h.shape[1] != self._dim:
                raise ShapeError(f"{where}: features have {h.shape[1]} columns but dim={self._dim}; pass features of the declared dimension")
            self._allocate(int(h.shape[1]), self._device if self._device is not None else h.device)
        st = self._state
        if h.shape[1] != self._dim:
            raise ShapeError(f"{where}: features have {h.shape[1]} columns but earlier batches had {self._dim}; pass features of one layer")
        y = check_batch_labels(labels, int(h.shape[0]), self.num_classes, self._classes, st.counts.device, where)
        if weights is not None:
            if self._weights is None:
                raise ParameterError(f"{where}: weights given, but this accumulator was built without a classifier; pass weights= to the constructor")
            self._weights, self._bias = self._check_classifier(weights, bias, self._dim, where)
        if y.numel() == 0:
            return self
        # float64 copies go to reused buffers: fresh multi-megabyte allocations page-fault
        B = int(h.shape[0])
        x = self._buffer("x", (B, self._dim)).copy_(h)
        cnt = torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        shift = st.shift
        logits = None
        if st.gram is None and not self.tracks_samples and self._ref_means is None:
            xs = x  # means only, no reference: plain float64 sums lose nothing, the shift stays 0
        else:
            if self._ref_means is None:
                new = (cnt > 0) & (st.counts == 0)
                if bool(new.any()):
                    # the first batch of a class fixes its shift at that batch's class mean
                    shift = shift.clone()
                    bsum = torch.zeros_like(st.sums).index_add_(0, y, x)
                    shift[new] = bsum[new] / cnt[new].unsqueeze(1)
            if self.tracks_samples and self._weights is not None and st.basis is None:  # class-major (C, B): the faster GEMM orientation on CPU
                logits = torch.mm(self._weights, x.T, out=self._buffer("logits", (self.num_classes, B)))
            xs = x.sub_(torch.index_select(shift, 0, y, out=self._buffer("gather", (B, self._dim))))
        rowsq = torch.linalg.vector_norm(xs, dim=1).square_()
        if not bool(torch.isfinite(rowsq).all()):
            check_finite(h, "features", where)
            raise NonFiniteError(f"{where}: squared feature norms overflow float64 (largest |h| ~ {float(h.abs().max()):.3g}); rescale the features")
        st.shift = shift
        st.counts += cnt
        st.sums.index_add_(0, y, xs)
        st.sq.index_add_(0, y, rowsq)
        proj = None
        if st.basis is not None:  # (k, B) = U^T xs^T: the basis-major product is ~2x faster on CPU
            k = int(st.basis.shape[1])
            if self.tracks_samples and self._weights is not None:
                # logits and projection from one GEMM [W; U^T] xs^T, then W h = W xs + W s_y (the
                # same rounding as W h: both are sums of terms as large as W h's)
                C = self.num_classes
                both = torch.mm(torch.cat([self._weights, st.basis_t]), xs.T, out=self._buffer("both", (C + k, B)))
                logits, proj = both[:C], both[C:]
                logits.add_(torch.index_select(self._weights @ shift.T, 1, y))
            else:
                proj = torch.mm(st.basis_t, xs.T, out=self._buffer("proj", (k, B)))
            st.gram.addmm_(proj, proj.T)
        elif st.gram is not None:
            _add_upper_gram(st.gram, xs)
        if self.tracks_samples:
            self._update_samples(xs, rowsq, logits, y, proj)
        return self

    def _update_samples(self, xs: torch.Tensor, rowsq: torch.Tensor, logits: torch.Tensor | None, y: torch.Tensor, proj: torch.Tensor | None) -> None:
        """Per-sample sums from the shifted features ``xs = h - s_y`` (B, d), ``|xs|^2`` (B,), the
        class-major logits without bias ``W h`` (C, B; overwritten) and, with ``covariance="span"``,
        the projection ``U^T xs^T`` (k, B) onto the span of the centred reference means.

        Decisions use ``amin``/``amax`` and :func:`_first_index` rather than ``argmin``/``max``
        over the class axis (same result, ties included; about 4x faster on CPU)."""
        st = self._state
        s = st.sample
        B, C = xs.shape[0], self.num_classes
        ncc = None
        if self._ref_means is not None:
            # the shift is the reference means: xs = h - m_y, and with P = (m - m_G) xs^T
            # |h - m_c|^2 = |xs|^2 + 2 (P_y - P_c) + |m_y - m_c|^2, |h - m_G|^2 = |xs|^2 + 2 P_y + |m_y - m_G|^2
            # (with the span basis U: m - m_G = ((m - m_G) U) U^T, so P = ((m - m_G) U) (U^T xs^T),
            # a (C, k) x (k, B) product instead of (C, d) x (d, B); the directions the basis drops
            # carry singular values below C d eps of the largest)
            if proj is not None:
                P = torch.mm(self._ref_in_basis, proj, out=self._buffer("P", (C, B)))
            else:
                P = torch.mm(self._ref_centred, xs.T, out=self._buffer("P", (C, B)))
            Py = P.gather(0, y.unsqueeze(0)).squeeze(0)
            # |m_c - m_{y_i}|^2 as a (C, B) matrix: rows of the transposed table, then one
            # transposing add (a column gather over the class axis is several times slower)
            rows = torch.index_select(self._ref_dist2_t, 0, y, out=self._buffer("rows", (B, C)))
            dist2 = torch.add(rows.T, P, alpha=-2.0, out=self._buffer("dist2", (C, B)))
            # + |xs|^2 + 2 P_y is the same for every c: the nearest centre is unchanged
            ncc = _first_index(dist2, dist2.amin(0))
            s[0] += (ncc == y).sum()
            s[3] += rowsq.sqrt().sum()
            g2 = rowsq + 2.0 * Py + self._ref_sqnorm.index_select(0, y)
            s[4] += g2.clamp(min=0.0).sqrt().sum()
        if logits is None:
            return
        if C == 1:
            s[1] += B
            if ncc is not None:
                s[2] += B
            return
        # mask the true class in place, then one max per column gives the runner-up;
        # pred = y only when z_y beats every other class strictly (ties count as errors)
        zy0 = logits.gather(0, y.unsqueeze(0)).squeeze(0)
        logits.scatter_(0, y.unsqueeze(0), -math.inf)
        st.mins[1] = torch.minimum(st.mins[1], (zy0 - logits.amax(0)).min())
        if self._bias is None:
            zy = zy0
        else:
            logits.add_(self._bias.unsqueeze(1))
            zy = zy0 + self._bias.index_select(0, y)
        other = logits.amax(0)
        m = zy - other
        right = m > 0
        s[1] += right.sum()
        # the first batch (counts were already added) fixes the margin shift at its mean margin
        st.margin_shift = torch.where(st.counts.sum() == B, m.mean(), st.margin_shift)
        dm = m - st.margin_shift
        s[_MARGIN_SUM] += dm.sum()
        s[_MARGIN_SQ] += (dm * dm).sum()
        st.mins[0] = torch.minimum(st.mins[0], m.min())
        if ncc is not None:
            # the prediction is y where right, else the first runner-up
            agree = torch.where(right, ncc == y, ncc == _first_index(logits, other))
            s[2] += agree.sum()

    # ------------------------------------------------------------------ combination
    def _check_compatible(self, other: "CollapseStatistics", where: str) -> None:
        if not isinstance(other, CollapseStatistics):
            raise ParameterError(f"{where}: can only merge a CollapseStatistics, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ShapeError(f"{where}: num_classes differ ({self.num_classes} vs {other.num_classes}); merge statistics of the same classes")
        if self._dim is not None and other._dim is not None and self._dim != other._dim:
            raise ShapeError(f"{where}: feature dimensions differ ({self._dim} vs {other._dim}); merge statistics of the same layer")
        if not torch.equal(self.classes, other.classes):
            raise LabelError(f"{where}: the two accumulators map different label values to classes; build both with the same classes")
        if self.covariance != other.covariance or self.per_sample != other.per_sample:
            raise ParameterError(f"{where}: the accumulators differ in covariance or per_sample; build both alike")
        same_means = (self._ref_means is None) == (other._ref_means is None) and (
            self._ref_means is None or torch.equal(self._ref_means, other._ref_means.to(self._ref_means.device))
        )
        if not same_means or (self._weights is None) != (other._weights is None):
            raise ParameterError(f"{where}: the accumulators were built with different reference means or classifier; build both alike")

    @torch.no_grad()
    def merge(self, other: "CollapseStatistics") -> "CollapseStatistics":
        """Add ``other``'s samples to ``self`` (in place; returns ``self``). The result equals one
        pass over both data sets up to float64 rounding."""
        where = "CollapseStatistics.merge"
        self._check_compatible(other, where)
        if other._state is None:
            return self
        if self._state is None:
            self._allocate(int(other._dim), other._state.counts.device)
        st = self._state
        theirs = other._state.clone()
        theirs = _State(*(None if t is None else t.to(st.counts.device) for t in vars(theirs).values()))
        unseen = st.counts == 0
        st.shift[unseen] = theirs.shift[unseen]
        theirs.rebase(st.shift)
        if not bool(st.counts.any()):
            st.margin_shift = theirs.margin_shift.clone()
        theirs.rebase_margins(st.margin_shift)
        st.counts += theirs.counts
        st.sums += theirs.sums
        st.sq += theirs.sq
        if st.gram is not None:
            st.gram += theirs.gram
        st.sample += theirs.sample
        st.mins = torch.minimum(st.mins, theirs.mins)
        return self

    @torch.no_grad()
    def all_reduce(self, group: Any | None = None) -> "CollapseStatistics":
        """Sum the statistics over all ranks of ``group`` with ``torch.distributed.all_reduce``
        (in place; every rank ends with the statistics of all data; returns ``self``).

        Three collectives: the count-weighted means of the ranks' shifts (the common class and
        margin shifts; skipped when neither is needed), the packed sums after rebasing to them,
        and the minima. Use a backend that supports float64 (gloo, nccl).
        """
        import torch.distributed as dist

        where = "CollapseStatistics.all_reduce"
        if not (dist.is_available() and dist.is_initialized()):
            raise ParameterError(f"{where}: torch.distributed is not initialised; call torch.distributed.init_process_group first")
        if self._state is None:
            if self._dim is None:
                raise ShapeError(f"{where}: this rank saw no features and dim is unknown; pass dim= to CollapseStatistics")
            self._allocate(self._dim, self._device if self._device is not None else torch.device("cpu"))
        st = self._state
        C, d = st.sums.shape
        class_shift = self._ref_means is None
        margin_shift = self.tracks_samples and self._weights is not None
        if class_shift or margin_shift:
            n = st.counts.sum().reshape(1)
            parts = ([(st.counts.unsqueeze(1) * st.shift).reshape(-1), st.counts] if class_shift else []) + (
                [n * st.margin_shift, n] if margin_shift else []
            )
            buf = torch.cat(parts)
            dist.all_reduce(buf, group=group)
            if class_shift:
                total = buf[C * d : C * d + C]
                st.rebase(buf[: C * d].reshape(C, d) / total.clamp(min=1.0).unsqueeze(1))
            if margin_shift:
                st.rebase_margins(buf[-2] / buf[-1].clamp(min=1.0))
        parts = [st.counts, st.sums.reshape(-1), st.sq, st.sample] + ([st.gram.reshape(-1)] if st.gram is not None else [])
        buf = torch.cat(parts)
        dist.all_reduce(buf, group=group)
        sizes = [p.numel() for p in parts]
        chunks = buf.split(sizes)
        st.counts, st.sums, st.sq, st.sample = chunks[0].clone(), chunks[1].reshape(C, d).clone(), chunks[2].clone(), chunks[3].clone()
        if st.gram is not None:
            st.gram = chunks[4].reshape(st.gram.shape).clone()
        dist.all_reduce(st.mins, op=dist.ReduceOp.MIN, group=group)
        return self

    # ------------------------------------------------------------------ results
    def _require_complete(self, where: str) -> _State:
        st = self._state
        if st is None or float(st.counts.sum()) == 0:
            raise ShapeError(f"{where}: no samples yet; call update(features, labels) first")
        check_all_classes(self.counts, self.classes, where)
        return st

    def means(self) -> torch.Tensor:
        """(C, d) float64 class means ``mu_c = s_c + S_c / N_c``."""
        st = self._require_complete("CollapseStatistics.means")
        return st.shift + st.sums / st.counts.unsqueeze(1)

    def moments(self) -> ClassMoments:
        """The class-level statistics (:class:`ClassMoments`). Needs ``covariance=True`` (or
        ``"span"``: then ``Sigma_W`` is held on the span of the reference means only)."""
        where = "CollapseStatistics.moments"
        st = self._require_complete(where)
        if st.gram is None:
            raise ParameterError(f"{where}: built with covariance=False (means only); build with covariance=True for Sigma_W")
        n = st.counts
        scaled = st.sums / n.unsqueeze(1)
        if st.basis is None:
            scatter = _symmetric_gram(st.gram) - st.sums.T @ scaled
        else:
            su = st.sums @ st.basis
            scatter = st.gram - su.T @ (su / n.unsqueeze(1))
        within = 0.5 * (scatter + scatter.T) / n.sum()
        # clamp: the shifted difference can round to -1e-17 for a class of identical points
        class_vars = ((st.sq - (st.sums * scaled).sum(1)) / n).clamp(min=0.0)
        # the origin is one of the shifts: shift_c - origin is exact for nearby points (Sterbenz)
        origin = st.shift[0].clone()
        return ClassMoments(
            counts=n.round().to(torch.int64),
            origin=origin,
            offsets=(st.shift - origin) + scaled,
            means=st.shift + scaled,
            within=within,
            class_vars=class_vars,
            classes=self.classes,
            basis=st.basis,
        )

    def sample_sums(self) -> SampleSums | None:
        """Per-sample sums (:class:`SampleSums`), or None without reference means and classifier."""
        if not self.tracks_samples:
            return None
        st = self._require_complete("CollapseStatistics.sample_sums")
        vals = dict(zip(_SUM_FIELDS, st.sample.tolist()))
        mins = dict(zip(_MIN_FIELDS, st.mins.tolist()))
        has_m, has_w = self._ref_means is not None, self._weights is not None
        margins = has_w and self.num_classes > 1
        # the margin sums are shifted by k: sum m = dsum + n k, sum m^2 = sq + 2 k dsum + n k^2
        n, k, dsum, sq = float(self.num_samples), float(st.margin_shift), vals["margin_sum"], vals["margin_sq"]
        return SampleSums(
            num_samples=self.num_samples,
            ncc_correct=vals["ncc_correct"] if has_m else None,
            correct=vals["correct"] if has_w else None,
            nc4_agree=vals["nc4_agree"] if has_m and has_w else None,
            within_dist=vals["within_dist"] if has_m else None,
            global_dist=vals["global_dist"] if has_m else None,
            margin_sum=(dsum + n * k) if margins else None,
            margin_sq=(sq + 2.0 * k * dsum + n * k * k) if margins else None,
            margin_scatter=max(sq - dsum * dsum / n, 0.0) if margins else None,
            margin_min=mins["margin_min"] if margins else None,
            nc_margin=mins["nc_margin"] if margins else None,
        )

    @property
    def classifier(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The latest classifier ``(weights, bias)`` (None when not given)."""
        return self._weights, self._bias

    def report(
        self,
        weights: Any | None = None,
        bias: Any | None = None,
        *,
        rtol: float | None = None,
        global_mean: str = "unweighted",
        center_weights: bool = False,
    ) -> "CollapseReport":
        """All metrics (:class:`~collapselab.collapse.CollapseReport`); ``weights``/``bias`` default to
        the classifier given at construction (or the latest one passed to :meth:`update`).
        Options as in :func:`~collapselab.collapse.collapse_report`."""
        from ._report import build_report

        if weights is None:
            if bias is not None:
                raise ParameterError("CollapseStatistics.report: bias given without weights; pass the classifier's weights too")
            weights, bias = self._weights, self._bias
        else:
            weights, bias = self._check_classifier(weights, bias, self._dim, "CollapseStatistics.report")
        return build_report(
            self.moments(), self.sample_sums(), weights, bias, rtol=rtol, global_mean=global_mean, center_weights=center_weights
        )


