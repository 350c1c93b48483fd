"""Shifted float64 accumulators and the kernels that update and combine them.

One pass over ``(features, labels)`` batches accumulates, in float64 whatever the feature
dtype, with a per-class shift ``s_c``:

* ``n_c`` per-class counts, ``S_c = sum_{i in c} (h_i - s_c)`` per-class shifted sums (C, d),
* ``q_c = sum_{i in c} |h_i - s_c|^2`` per-class shifted sums of squares (C,),
* ``G = sum_i (h_i - s_{y_i})(h_i - s_{y_i})^T`` one shifted Gram (d, d),

so memory is ``O(C d + d^2)``. Then ``mu_c = s_c + S_c / n_c`` and the within-class scatter
is ``N Sigma_W = G - S^T diag(1/n) S`` (exact for any shift; Sigma_W as in Papyan, Han &
Donoho 2020, Sec. 3; docs/theory/neural-collapse.md). The shift removes the cancellation of
the textbook ``sum h h^T - N mu mu^T``: ``s_c`` is the mean of class ``c`` in the first batch
that contains it (or the caller's reference means), so the digits lost scale with
``|mu_c - s_c|^2 / var_c``, not with ``|mu_c|^2 / var_c`` (a common offset of 1e6 costs
nothing). This is the pairwise-update identity of Chan, Golub & LeVeque (1983, "Algorithms
for computing the sample variance"), per class and for the cross products.

Statistics move to another shift by exact identities (``delta = s_old - s_new``)::

    S' = S + n delta,   q' = q + 2 delta.S + n |delta|^2,
    G' = G + delta^T S + S^T delta + delta^T diag(n) delta,

which is what :meth:`State.rebase` does before two accumulators are added (merge,
all_reduce). Margins ``m_i`` of the logits are shifted the same way, by ``K`` (the mean
margin of the first batch), so ``sum (m_i - K)`` and ``sum (m_i - K)^2`` give the variance
without the cancellation of ``E[m^2] - E[m]^2`` (which loses ``eps E[m^2] / var`` relative
precision: all of it at collapse, where every margin is equal); they move by the same
identities with ``d = 1``.

``G`` is symmetric, so only its block upper triangle is accumulated (:func:`add_upper_gram`,
blocks of ``_GRAM_BLOCK`` columns: 10/16 of the full product's arithmetic for ``d = 512``,
the same float64 dot products) and it is mirrored when read (:func:`symmetric_gram`); the
symmetric corrections above may touch the whole matrix. With a span basis ``U`` (d, k)
(``covariance="span"``) the Gram is ``U^T G U`` and the identities hold with ``delta U`` and
``S U`` in place of ``delta`` and ``S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import EmptyClassError

__all__ = ["SUM_FIELDS", "MIN_FIELDS", "MARGIN_SUM", "MARGIN_SQ", "State", "add_upper_gram", "first_index", "span_basis", "symmetric_gram", "check_all_classes", "merge_states", "all_reduce_state"]

# Sample sums, in this order, in one float64 vector (so all_reduce is one call); the margin
# sums are shifted by State.margin_shift.
SUM_FIELDS = ("ncc_correct", "correct", "nc4_agree", "within_dist", "global_dist", "margin_sum", "margin_sq")
MARGIN_SUM, MARGIN_SQ = SUM_FIELDS.index("margin_sum"), SUM_FIELDS.index("margin_sq")
# Minima, reduced with MIN: margin of the logits (with bias), NC margin of W h (no bias, ULPM Def 3.1).
MIN_FIELDS = ("margin_min", "nc_margin")
# Columns per block of the triangular Gram update: wide enough for an efficient GEMM, narrow
# enough that skipping the blocks below the diagonal saves arithmetic (measured: d = 512 in
# 0.73 and d = 1024 in 0.65 of the time of the full product, MKL, one thread).
_GRAM_BLOCK = 128


def add_upper_gram(gram: torch.Tensor, x: torch.Tensor) -> None:
    """``gram += x^T x`` on the block upper triangle: for each block ``J`` of ``_GRAM_BLOCK``
    columns, ``gram[J, j0:] += x[:, J]^T x[:, j0:]`` (``j0`` the first column of ``J``). The
    entries below the diagonal blocks are left alone; read the sum with :func:`symmetric_gram`.
    gram: (d, d), x: (B, d)."""
    d = x.shape[1]
    for j in range(0, d, _GRAM_BLOCK):
        gram[j : j + _GRAM_BLOCK, j:].addmm_(x[:, j : j + _GRAM_BLOCK].T, x[:, j:])


def first_index(z: torch.Tensor, extreme: torch.Tensor) -> torch.Tensor:
    """(B,) int64: for each column of ``z`` (C, B) the first row where ``z`` equals ``extreme``
    (B,), its column minimum or maximum; so ``first_index(z, z.amin(0))`` is ``z.argmin(0)``
    (ties to the first index, as torch), from a comparison, a product and a vectorised
    ``amax`` instead of an index reduction over the strided class axis."""
    C = z.shape[0]
    # C, C-1, ..., 1: the first hit has the largest rank (int32: the cheapest exact product)
    rank = torch.arange(C, 0, -1, dtype=torch.int32, device=z.device).unsqueeze(1)
    return C - ((z == extreme) * rank).amax(0).long()


def span_basis(centred: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (d, k) of the row space of ``centred`` (C, d), every direction with a
    singular value above ``C d eps`` times the largest (k = 0 when all rows vanish). Looser
    cuts (the report's rank) select subspaces of this span."""
    if centred.numel() == 0 or float(centred.abs().max()) == 0.0:
        return centred.new_zeros(centred.shape[1], 0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = s > centred.shape[0] * centred.shape[1] * torch.finfo(centred.dtype).eps * s[0]
    return vh[keep].contiguous().T  # a view of the contiguous (k, d) rows


def symmetric_gram(gram: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle is that of ``gram`` (d, d). Symmetric terms
    added to the whole matrix (:meth:`State.rebase`, merge, all_reduce) stay correct above
    the diagonal, so the upper triangle is always the full Gram's."""
    return torch.triu(gram) + torch.triu(gram, 1).T


@dataclass
class State:
    """Accumulators (all float64, one device). ``gram`` is None without covariance; only its
    upper triangle is meaningful (:func:`add_upper_gram`)."""

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

    def clone(self) -> "State":
        return State(*(None if t is None else t.clone() for t in (self.shift, self.counts, self.sums, self.sq, self.gram, self.sample, self.mins, self.margin_shift, self.basis)))

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
        self.sample[MARGIN_SQ] += 2.0 * delta * self.sample[MARGIN_SUM] + n * delta * delta
        self.sample[MARGIN_SUM] += n * delta
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


def merge_states(st: State, other: State) -> None:
    """Add the accumulators ``other`` (any device; left unchanged) to ``st`` in place: classes
    that ``st`` has not seen take ``other``'s shifts, then ``other`` is rebased to ``st``'s
    shifts and everything is added (exact up to float64 rounding)."""
    theirs = State(*(None if t is None else t.to(st.counts.device) for t in vars(other.clone()).values()))
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


def all_reduce_state(st: State, *, class_shift: bool, margin_shift: bool, group: Any | None) -> None:
    """Sum ``st`` over the ranks of ``group`` in place (``torch.distributed`` initialised).

    Three collectives: the count-weighted means of the ranks' shifts (the common class shift
    when ``class_shift``, the margin shift when ``margin_shift``; skipped when neither is
    needed), the packed sums after rebasing to them, and the minima."""
    import torch.distributed as dist

    C, d = st.sums.shape
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
    chunks = buf.split([p.numel() for p in parts])
    st.counts, st.sums, st.sq, st.sample = chunks[0].clone(), chunks[1].reshape(C, d).clone(), chunks[2].clone(), chunks[3].clone()
    if st.gram is not None:
        st.gram = chunks[4].reshape(st.gram.shape).clone()
    dist.all_reduce(st.mins, op=dist.ReduceOp.MIN, group=group)
