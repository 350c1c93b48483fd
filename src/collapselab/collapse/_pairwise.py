"""Pairwise (class x class) neural-collapse metrics, reduced over row tiles of the ``C x C``
matrices (docs/theory/neural-collapse.md).

CDNV (Galanti et al. 2022), NC2 equiangularity and the ETF errors (Papyan, Han & Donoho 2020,
Fig. 4; Ji et al. 2022, ULPM quantity (3)) are sums over class pairs of functions of a Gram
matrix ``G = X Y^T`` (``X``, ``Y`` (C, d)). The ``C x C`` matrix is never formed: rows
``[a, b)`` of it, ``G[a:b] = X[a:b] Y^T`` (``tile x C``), are computed one tile at a time and
each tile's terms are summed, so memory is ``O(C d + tile C)`` whatever ``C`` (the full matrix
is 7.6 GiB at ``C = 32,000``). The tile height comes from a memory budget
(``PAIRWISE_BUDGET``, 256 MiB): ``tile = floor(budget / (TEMPS * 8 C))`` rows, at least
one, where ``TEMPS`` bounds the float64 ``tile x C`` temporaries live at once. For
``C <= 2590`` the whole matrix fits in one tile, which is the untiled computation itself.

Error model. Each entry ``G_cc'`` is the same dot product of length ``d`` in every tiling (the
GEMM kernel may order it differently: ``|dG| <= d eps |x_c||y_c'|``). The tile partial sums are
torch reductions (``<= log2(n) eps`` relative for positive terms) and the partials are added
exactly by ``math.fsum``, so the tiled sum of positive terms differs from the untiled one
by at most ``~(d + log2 C^2) eps`` relative, times the condition of the terms in ``G``
(e.g. ``max (|mu_c|^2 + |mu_c'|^2) / |mu_c - mu_c'|^2`` for the CDNV distances); the
tests check this bound at several seeds and sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ._moments import ClassMoments

__all__ = ["PAIRWISE_BUDGET", "TEMPS", "tile_rows", "cdnv_pairs", "equiangularity", "etf_error", "self_duality_error"]

PAIRWISE_BUDGET = 256 * 2**20
"""Bytes of ``tile x C`` float64 temporaries one pairwise metric may hold at once."""

TEMPS = 5
"""Upper bound on the ``tile x C`` float64 arrays live at once while a tile's terms are
summed (CDNV, the largest: the Gram tile, the distances, the ratios, the boolean mask and the
masked copy; the terms are formed in place where they can be)."""


def tile_rows(num_classes: int, budget: int | None = None) -> int:
    """Rows per tile: ``max(1, min(C, budget // (TEMPS * 8 * C)))``."""
    b = PAIRWISE_BUDGET if budget is None else budget
    return max(1, min(num_classes, b // (TEMPS * 8 * num_classes)))


def gram_tile(X: torch.Tensor, Y: torch.Tensor, a: int, b: int, start: int) -> torch.Tensor:
    """``X[a:b] Y[start:]^T``, the rows ``[a, b)`` and columns ``[start, C)`` of ``X Y^T``
    (the only product of ``C``-wide shape in this module)."""
    return X[a:b] @ Y[start:].T


def _tiles(C: int, budget: int | None) -> Iterator[tuple[int, int]]:
    T = tile_rows(C, budget)
    return ((a, min(a + T, C)) for a in range(0, C, T))


def _tile_sum(X: torch.Tensor, Y: torch.Tensor, term: Callable[[torch.Tensor, int, int], torch.Tensor], budget: int | None, *, upper: bool) -> float:
    """``fsum`` over row tiles ``[a, b)`` of ``term(G_tile, a, b)`` (a scalar tensor). ``upper``
    (symmetric ``G``): the tile holds the columns ``[a, C)`` only, so row ``i`` of the tile
    meets the diagonal at column ``i`` and ``term`` keeps what it needs of the upper triangle."""
    parts = [float(term(gram_tile(X, Y, a, b, a if upper else 0), a, b)) for a, b in _tiles(X.shape[0], budget)]
    return math.fsum(parts)


def _above_diagonal(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """Mask (rows, cols) of column > row, for a tile starting on the diagonal."""
    return torch.ones(rows, cols, dtype=torch.bool, device=device).triu(1)


def cdnv_pairs(mom: ClassMoments, *, ddof: int = 0, exponent: float = 2.0, budget: int | None = None) -> float:
    """Class-distance normalised variance (Galanti et al. 2022), averaged over unordered pairs:
    ``mean_{c < c'} (var_c + var_c') / (2 |mu_c - mu_c'|^exponent)``.

    ``var_c = (1/(N_c - ddof)) sum_{i in c} |h_i - mu_c|^2`` (canonical ``ddof=0``); distances
    ``|mu_c - mu_c'|^2 = G_cc + G_c'c' - 2 G_cc'`` from the centred Gram ``G = M~ M~^T``
    (translation-free), summed over the upper triangle tile by tile. ``inf`` when two means
    coincide, ``nan`` for ``C = 1``. Callers check ``N_c > ddof``.
    """
    C = mom.num_classes
    if C < 2:
        return math.nan
    n = mom.counts.to(mom.offsets.dtype)
    var = mom.class_vars * n / (n - ddof)
    mc = mom.centred_means()
    sq = (mc * mc).sum(1)

    def term(g: torch.Tensor, a: int, b: int) -> torch.Tensor:
        den = g.mul(-2.0).add_(sq[a:b].unsqueeze(1)).add_(sq[a:].unsqueeze(0)).clamp_(min=0.0)  # |mu_c - mu_c'|^2
        den.pow_(exponent / 2.0).mul_(2.0)
        ratio = torch.add(var[a:b].unsqueeze(1), var[a:].unsqueeze(0)).div_(den)
        return ratio[_above_diagonal(b - a, C - a, g.device)].sum()

    return _tile_sum(mc, mc, term, budget, upper=True) / (C * (C - 1) / 2)


def equiangularity(rows: torch.Tensor, *, budget: int | None = None) -> float:
    """NC2 equiangularity: ``mean_{c != c'} |cos(r_c, r_c') + 1/(C-1)|`` (PHD 2020, Fig. 4;
    ULPM quantity (3)); the cosines are symmetric, so the mean over ``c < c'``, tile by tile."""
    C = rows.shape[0]
    u = rows / rows.norm(dim=1, keepdim=True)

    def term(cos: torch.Tensor, a: int, b: int) -> torch.Tensor:
        return cos.add_(1.0 / (C - 1)).abs_()[_above_diagonal(b - a, C - a, cos.device)].sum()

    return _tile_sum(u, u, term, budget, upper=True) / (C * (C - 1) / 2)


def etf_error(X: torch.Tensor, Y: torch.Tensor, *, budget: int | None = None) -> float:
    """ETF error of ``G = X Y^T`` (X, Y (C, d)): ``|| G/|G|_F - T ||_F`` with
    ``T = (I - 11^T/C)/sqrt(C-1)``, the simplex-ETF Gram of unit Frobenius norm
    (docs/theory/neural-collapse.md). Two passes over the tiles: ``|G|_F^2 = sum G_cc'^2``, then
    ``sum (G_cc'/|G|_F - T_cc')^2`` (a sum of squares: no cancellation at collapse, where the
    error is small). With ``Y is X`` (``G`` symmetric) only the upper triangle is computed and
    an off-diagonal pair counts twice."""
    C = X.shape[0]
    off = -1.0 / (C * math.sqrt(C - 1))
    on = 1.0 / math.sqrt(C - 1) + off
    sym = Y is X

    def fold(sq: torch.Tensor) -> torch.Tensor:
        """Sum of a tile of squares over the whole matrix: the diagonal once, the rest twice if ``sym``."""
        if not sym:
            return sq.sum()
        return 2.0 * sq.triu(1).sum() + sq.diagonal().sum()

    g = math.sqrt(_tile_sum(X, Y, lambda t, a, b: fold(t.square_()), budget, upper=sym))

    def term(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
        e = t.div_(g).sub_(off)
        e.diagonal(0 if sym else a).sub_(on - off)  # row i meets the diagonal at column (a if not sym) + i
        return fold(e.square_())

    return math.sqrt(_tile_sum(X, Y, term, budget, upper=sym))


def self_duality_error(W: torch.Tensor, centred: torch.Tensor, *, budget: int | None = None) -> float:
    """ETF error of ``G = W M~^T`` (the NC3 option ``self-duality`` of docs/theory/neural-collapse.md): zero iff the
    classifier and the centred means are dual simplex ETFs."""
    return etf_error(W, centred, budget=budget)
