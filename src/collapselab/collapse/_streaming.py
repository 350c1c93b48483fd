"""The streaming, mergeable accumulator of neural-collapse statistics.

:class:`CollapseStatistics` adds ``(features, labels)`` batches to shifted float64 sums
(counts, class sums, sums of squares and one Gram; the identities are in
:mod:`collapselab.collapse._accumulate`), merges shards (:meth:`~CollapseStatistics.merge`,
:meth:`~CollapseStatistics.all_reduce`) and returns the class moments and the report. Each
batch costs one ``B x d x d`` GEMM (``B x d x k`` on the span of the class means) plus two
``index_add_``; memory is ``O(C d + d^2)`` whatever the number of samples. With reference
means (a previous pass) the shift is those means and the per-sample rules of
:mod:`collapselab.collapse._sample_rules` run in the same pass; with a classifier, accuracy
and margins. The metrics are those of Papyan, Han & Donoho 2020 (NC1-NC4), Galanti et al.
2022 (CDNV) and Ji et al. 2022 (ULPM); docs/theory/neural-collapse.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..core.errors import LabelError, NonFiniteError, ParameterError, ShapeError
from ..core.validation import Interval, OneOf, check_finite, check_matrix, check_param
from ._accumulate import MIN_FIELDS, SUM_FIELDS, State, add_upper_gram, all_reduce_state, check_all_classes, merge_states, symmetric_gram
from ._labels import as_classes, check_batch_labels, check_features
from ._moments import ClassMoments, SampleSums
from ._sample_rules import ReferenceTables, accumulate_samples, reference_tables

if TYPE_CHECKING:
    from ._report import CollapseReport

__all__ = ["CollapseStatistics"]


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
        self._state: State | None = None
        self._ref: ReferenceTables | None = None
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
        if self._ref_means is not None:
            self._ref_means = self._ref_means.to(device)
            self._ref = reference_tables(self._ref_means, span=self.covariance == "span")
        basis = None if self._ref is None else self._ref.basis
        k = dim if basis is None else int(basis.shape[1])
        self._state = State(
            shift=shift,
            counts=torch.zeros(C, dtype=f64, device=device),
            sums=torch.zeros(C, dim, dtype=f64, device=device),
            sq=torch.zeros(C, dtype=f64, device=device),
            gram=torch.zeros(k, k, dtype=f64, device=device) if self.covariance else None,
            sample=torch.zeros(len(SUM_FIELDS), dtype=f64, device=device),
            mins=torch.full((len(MIN_FIELDS),), math.inf, dtype=f64, device=device),
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
            add_upper_gram(st.gram, xs)
        if self.tracks_samples:
            accumulate_samples(st, self._ref, xs, rowsq, logits, y, proj, self._bias, self._buffer)
        return self

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
    @torch.no_grad()
    def merge(self, other: "CollapseStatistics") -> "CollapseStatistics":
        """Add ``other``'s samples to ``self`` (in place; returns ``self``). The result equals one
        pass over both data sets up to float64 rounding."""
        self._check_compatible(other, "CollapseStatistics.merge")
        if other._state is None:
            return self
        if self._state is None:
            self._allocate(int(other._dim), other._state.counts.device)
        merge_states(self._state, other._state)
        return self

    @torch.no_grad()
    def all_reduce(self, group: Any | None = None) -> "CollapseStatistics":
        """Sum the statistics over all ranks of ``group`` with ``torch.distributed.all_reduce``
        (in place; every rank ends with the statistics of all data; returns ``self``). Use a
        backend that supports float64 (gloo, nccl)."""
        import torch.distributed as dist

        where = "CollapseStatistics.all_reduce"
        if not (dist.is_available() and dist.is_initialized()):
            raise ParameterError(f"{where}: torch.distributed is not initialised; call torch.distributed.init_process_group first")
        if self._state is None:
            if self._dim is None:
                raise ShapeError(f"{where}: this rank saw no features and dim is unknown; pass dim= to CollapseStatistics")
            self._allocate(self._dim, self._device if self._device is not None else torch.device("cpu"))
        margin_shift = self.tracks_samples and self._weights is not None
        all_reduce_state(self._state, class_shift=self._ref_means is None, margin_shift=margin_shift, group=group)
        return self

    # ------------------------------------------------------------------ results
    def _require_complete(self, where: str) -> State:
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
            scatter = symmetric_gram(st.gram) - st.sums.T @ scaled
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
        vals = dict(zip(SUM_FIELDS, st.sample.tolist()))
        mins = dict(zip(MIN_FIELDS, st.mins.tolist()))
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
