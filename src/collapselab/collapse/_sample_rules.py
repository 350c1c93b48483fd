"""Per-sample rules of one pass: nearest class centre, classifier decisions, NC4, margins.

With reference class means ``m_c`` (a previous pass) the shift of the accumulators is
``m``, so a batch arrives as ``xs_i = h_i - m_{y_i}`` and, with ``P = (m - m_G) xs^T`` (C, B),

    |h_i - m_c|^2 = |xs_i|^2 + 2 (P_{y_i} - P_c) + |m_{y_i} - m_c|^2,
    |h_i - m_G|^2 = |xs_i|^2 + 2 P_{y_i} + |m_{y_i} - m_G|^2,

differences of nearby quantities that lose nothing to a large common offset. They give the
nearest-class-centre rule and NC4 (Papyan, Han & Donoho 2020, Sec. 3, NC4) and the ULPM
within-class variation ``Avg|h - m_y| / Avg|h - m_G|`` (Ji et al. 2022, eq. (2)); with a
classifier ``z = W h + b``, accuracy and the margins ``z_y - max_{c != y} z_c`` (Rangamani et al.,
CBMM Memo 117) and ULPM's ``q_min`` without bias (Ji et al. 2022, Def. 3.1); docs/theory/neural-collapse.md.

The table ``|m_c - m_y|^2`` is ``C x C``; above ``_TABLE_CLASSES`` classes (8 MiB at 1024) its
rows for a batch are computed on the fly, one extra ``B x d x C`` product per batch instead of
``C^2`` memory (the many-classes regime, e.g. a vocabulary of 32,000 classes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._accumulate import MARGIN_SQ, MARGIN_SUM, State, first_index, span_basis

__all__ = ["ReferenceTables", "reference_tables", "accumulate_samples"]

# Largest C whose C x C table of squared distances between reference means is kept.
_TABLE_CLASSES = 1024

Buffer = Callable[[str, tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class ReferenceTables:
    """What the per-sample rules need from the reference means ``m`` (C, d), float64.

    centred: ``m_c - m_G`` (C, d), from offsets to ``m_0`` (no cancellation of a common
    offset); basis: orthonormal basis ``U`` (d, k) of their span (``covariance="span"``) or
    None; in_basis: ``(m - m_G) U`` (C, k) or None; sqnorm: ``|m_c - m_G|^2`` (C,);
    dist2_t: ``|m_c - m_y|^2`` (C, C), row ``y`` (None above ``_TABLE_CLASSES`` classes)."""

    centred: torch.Tensor
    basis: torch.Tensor | None
    in_basis: torch.Tensor | None
    sqnorm: torch.Tensor
    dist2_t: torch.Tensor | None

    def dist2_rows(self, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``|m_c - m_{y_i}|^2`` as (B, C) for labels ``y`` (B,), written to ``out``."""
        if self.dist2_t is not None:
            return torch.index_select(self.dist2_t, 0, y, out=out)
        my = self.centred.index_select(0, y)
        torch.mm(my, self.centred.T, out=out).mul_(-2.0)
        out.add_(self.sqnorm.unsqueeze(0)).add_(self.sqnorm.index_select(0, y).unsqueeze(1))
        return out.clamp_(min=0.0)


def reference_tables(means: torch.Tensor, *, span: bool, per_sample: bool) -> ReferenceTables:
    """Tables for reference means (C, d) float64; ``span``: also the span basis; ``per_sample``:
    also the distance tables (skipped when only the shift and the basis are needed)."""
    offsets = means - means[0]
    centred = offsets - offsets.mean(0)  # m_c - m_G
    basis = span_basis(centred) if span else None
    # the centred means in that basis (C, k): their products with a batch come from the
    # batch's projection onto the span, one (k, B) GEMM for both (see accumulate_samples)
    in_basis = None if basis is None else centred @ basis
    sqnorm = (centred * centred).sum(1)
    dist2_t = None
    if per_sample and centred.shape[0] <= _TABLE_CLASSES:
        g = centred @ centred.T
        sqnorm = torch.diagonal(g).clone()
        dist2_t = (sqnorm.unsqueeze(0) + sqnorm.unsqueeze(1) - 2.0 * g).clamp(min=0.0).T.contiguous()
    return ReferenceTables(centred, basis, in_basis, sqnorm, dist2_t)


def accumulate_samples(
    st: State,
    ref: ReferenceTables | None,
    xs: torch.Tensor,
    rowsq: torch.Tensor,
    logits: torch.Tensor | None,
    y: torch.Tensor,
    proj: torch.Tensor | None,
    bias: torch.Tensor | None,
    buffer: Buffer,
) -> None:
    """Add one batch's per-sample sums to ``st``: the shifted features ``xs = h - s_y`` (B, d),
    ``|xs|^2`` (B,), the class-major logits without bias ``W h`` (C, B; overwritten; None
    without a classifier) and, with ``covariance="span"``, the projection ``U^T xs^T`` (k, B).

    Decisions use ``amin``/``amax`` and :func:`first_index` rather than ``argmin``/``max``
    over the class axis (same result, ties included; about 4x faster on CPU)."""
    s = st.sample
    B, C = xs.shape[0], st.counts.numel()
    ncc = None
    if ref is not None:
        # with the span basis U: m - m_G = ((m - m_G) U) U^T, so P = ((m - m_G) U) (U^T xs^T),
        # a (C, k) x (k, B) product instead of (C, d) x (d, B); the directions the basis drops
        # carry singular values below C d eps of the largest
        if proj is not None:
            P = torch.mm(ref.in_basis, proj, out=buffer("P", (C, B)))
        else:
            P = torch.mm(ref.centred, xs.T, out=buffer("P", (C, B)))
        Py = P.gather(0, y.unsqueeze(0)).squeeze(0)
        # |m_c - m_{y_i}|^2 as (B, C) rows, then one transposing add (a column gather over
        # the class axis is several times slower)
        rows = ref.dist2_rows(y, buffer("rows", (B, C)))
        dist2 = torch.add(rows.T, P, alpha=-2.0, out=buffer("dist2", (C, B)))
        # + |xs|^2 + 2 P_y is the same for every c: the nearest centre is unchanged
        ncc = first_index(dist2, dist2.amin(0))
        s[0] += (ncc == y).sum()
        s[3] += rowsq.sqrt().sum()
        g2 = rowsq + 2.0 * Py + ref.sqnorm.index_select(0, y)
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
    if bias is None:
        zy = zy0
    else:
        logits.add_(bias.unsqueeze(1))
        zy = zy0 + bias.index_select(0, y)
    other = logits.amax(0)
    m = zy - other
    right = m > 0
    s[1] += right.sum()
    # the first batch (counts were already added) fixes the margin shift at its mean margin
    st.margin_shift = torch.where(st.counts.sum() == B, m.mean(), st.margin_shift)
    dm = m - st.margin_shift
    s[MARGIN_SUM] += dm.sum()
    s[MARGIN_SQ] += (dm * dm).sum()
    st.mins[0] = torch.minimum(st.mins[0], m.min())
    if ncc is not None:
        # the prediction is y where right, else the first runner-up
        agree = torch.where(right, ncc == y, ncc == first_index(logits, other))
        s[2] += agree.sum()
