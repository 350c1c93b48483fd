"""Per-sample rules of one pass: nearest class centre, classifier decisions, NC4, margins.

With reference class means ``m_c`` (a previous pass) the shift of the accumulators is
``m``, so a batch arrives as ``xs_i = h_i - m_{y_i}``. With ``h~_i = h_i - m_G = xs_i +
(m_{y_i} - m_G)`` and ``P = (m - m_G) h~^T`` (C, B), one product per batch,

    |h_i - m_c|^2 = |h~_i|^2 - 2 P_c + |m_c - m_G|^2,
    |h_i - m_G|^2 = |h~_i|^2 = |xs_i|^2 + 2 P_{y_i} - |m_{y_i} - m_G|^2,

free of a large common offset (``m - m_G`` comes from offsets between means, ``xs`` from the
shift). The nearest class centre drops ``|h~_i|^2``, the same for every ``c``. They give the
nearest-class-centre rule and NC4 (Papyan, Han & Donoho 2020, Sec. 3, NC4) and the ULPM
within-class variation ``Avg|h - m_y| / Avg|h - m_G|`` (Ji et al. 2022, eq. (2)); with a
classifier ``z = W h + b``, accuracy and the margins ``z_y - max_{c != y} z_c`` (Rangamani et al.,
CBMM Memo 117) and ULPM's ``q_min`` without bias (Ji et al. 2022, Def. 3.1); docs/theory/neural-collapse.md.

Rounding. Near collapse (``xs -> 0``) the decision compares ``|m_c - m_G|^2 - 2 P_c`` across
``c``; each ``P_c`` is a length-``k`` dot product (``k`` the dimension of the means' span, or
``d``) with error ``<= k eps |m_c - m_G| |h~_i|``, about ``k eps |m|^2``. The alternative
``|xs_i|^2 + 2 (P'_{y_i} - P'_c) + |m_{y_i} - m_c|^2`` with ``P' = (m - m_G) xs^T`` needs a
second ``B x d x C`` product per batch (or a ``C x C`` table) for
``|m_c - m_y|^2 = |m_c|^2 + |m_y|^2 - 2 m_c.m_y``, whose error ``d eps |m_c| |m_y|`` is of the
same size: one product resolves the decisions as well, at half the cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._accumulate import MARGIN_SQ, MARGIN_SUM, State, first_index, span_basis

__all__ = ["ReferenceTables", "reference_tables", "accumulate_samples"]

Buffer = Callable[[str, tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class ReferenceTables:
    """What the per-sample rules need from the reference means ``m`` (C, d), float64.

    centred: ``m_c - m_G`` (C, d), from offsets to ``m_0`` (no cancellation of a common
    offset); basis: orthonormal basis ``U`` (d, k) of their span (``covariance="span"``) or
    None; in_basis: ``(m - m_G) U`` (C, k) or None; sqnorm: ``|m_c - m_G|^2`` (C,)."""

    centred: torch.Tensor
    basis: torch.Tensor | None
    in_basis: torch.Tensor | None
    sqnorm: torch.Tensor


def reference_tables(means: torch.Tensor, *, span: bool) -> ReferenceTables:
    """Tables for reference means (C, d) float64; ``span``: also the span basis."""
    offsets = means - means[0]
    centred = offsets - offsets.mean(0)  # m_c - m_G
    basis = span_basis(centred) if span else None
    # the centred means in that basis (C, k): their products with a batch come from the
    # batch's projection onto the span, one (k, B) GEMM for both (see accumulate_samples)
    in_basis = None if basis is None else centred @ basis
    return ReferenceTables(centred, basis, in_basis, (centred * centred).sum(1))


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
        # with the span basis U: m - m_G = ((m - m_G) U) U^T, so P = ((m - m_G) U) (U^T h~^T)
        # with U^T h~^T = U^T xs^T + ((m - m_G) U)_y^T, a (C, k) x (k, B) product instead of
        # (C, d) x (d, B); the directions the basis drops carry singular values below C d eps
        # of the largest
        if proj is not None:
            ht = torch.index_select(ref.in_basis, 0, y, out=buffer("ht", (B, ref.in_basis.shape[1]))).T.add_(proj)
        else:
            ht = torch.index_select(ref.centred, 0, y, out=buffer("ht", (B, xs.shape[1]))).add_(xs).T
        P = torch.mm(ref.in_basis if proj is not None else ref.centred, ht, out=buffer("P", (C, B)))
        # |h_i - m_c|^2 - |h~_i|^2 (C, B)
        dist2 = torch.add(ref.sqnorm.unsqueeze(1), P, alpha=-2.0, out=buffer("dist2", (C, B)))
        ncc = first_index(dist2, dist2.amin(0))
        s[0] += (ncc == y).sum()
        s[3] += rowsq.sqrt().sum()
        g2 = rowsq + 2.0 * P.gather(0, y.unsqueeze(0)).squeeze(0) - ref.sqnorm.index_select(0, y)
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
