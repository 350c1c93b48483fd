"""The NTK Gram ``D D^T`` of a ReLU MLP assembled layer by layer, without forming ``D``.

For the network of docs/theory/notation.md (rows are samples, a layer is ``x W^T + b``), the
derivative of the output of sample ``i`` with respect to ``W_l[a, b]`` is
``G_{l,i}[:, a] x^{(l-1)}_i[b]`` and with respect to ``b_l[a]`` is ``G_{l,i}[:, a]``, where
``G_{l,i} = d x^{(L+1)}_i / d z_{l,i}`` (``Q x d_l``) is the output derivative with
respect to the pre-activation ``z_l``:

    G_{L+1,i} = 1_Q,    G_{l,i} = G_{l+1,i} W_{l+1} diag(h(z_{l,i})),    h = Heaviside, h(0) = 0.

Summing over the parameters of every layer gives the ``Q x Q`` block ``(i, j)`` of the Gram

    (D D^T)_{ij} = sum_{l=1}^{L+1} (<x^{(l-1)}_i, x^{(l-1)}_j> + 1) G_{l,i} G_{l,j}^T,

that is ``D D^T = sum_l ((X_{l-1} X_{l-1}^T + 1) (x) 1_{QxQ}) o (G_l G_l^T)`` with ``G_l``
stacked as ``(QN, d_l)`` and ``o`` the Hadamard product (derived here; tested against
the autograd ``D D^T`` to 1e-12 relative in tests/flows). Cost
``O((QN)^2 sum_l d_l + N Q sum_l d_l d_{l+1})`` time (half of it with ``upper_only`` on the
CPU: BLAS ``syrk``) and two ``(QN)^2`` buffers, against
``QN K`` memory for the dense Jacobian: at ``N = 4096, Q = 4`` and width 1024 the Gram
takes 2.1 GB where ``D`` would take 140 GB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.linalg import get_blas_funcs

from ..core.errors import ShapeError
from ..core.network import hidden_layers
from ..core.types import Inputs, Matrix
from .linalg import square_buffer, uses_lapack

__all__ = ["relu_gram", "row_gram"]


def relu_gram(
    params: Sequence[tuple[torch.Tensor, torch.Tensor]],
    X: Inputs,
    *,
    hidden: Sequence[torch.Tensor] | None = None,
    upper_only: bool = False,
    out: Matrix | None = None,
    work: Matrix | None = None,
) -> Matrix:
    """``D D^T`` (``(QN, QN)``, sample-major) of the ReLU MLP ``params = [(W_l, b_l)]`` on ``X (N, M)``.

    ``hidden``: the layer outputs ``[x^(0), ..., x^(L+1)]`` of
    :func:`collapselab.core.network.hidden_layers` if already computed (saves a forward pass).
    ``upper_only``: only the upper triangle needs to be right (for solvers that read one
    triangle, :mod:`collapselab.flows.linalg`); on the CPU each ``G_l G_l^T`` is then one BLAS
    ``syrk`` (half the arithmetic of a GEMM) and the strict lower triangle is left undefined.
    ``out``, ``work``: ``(QN, QN)`` tensors of ``X``'s dtype and device to hold the result and
    to work in (``work`` is overwritten); fresh ones if None. Callers that assemble Grams
    repeatedly pass the same two: a fresh buffer costs its first-touch page faults, which
    on a virtual machine can exceed the arithmetic (2 ms for 4 MB measured here, against
    0.8 ms for the float32 ``syrk`` that fills it).
    """
    if X.ndim != 2 or X.shape[1] != params[0][0].shape[1]:
        raise ShapeError(f"relu_gram: X must be (N, {params[0][0].shape[1]}), got {tuple(X.shape)}")
    xs = list(hidden) if hidden is not None else hidden_layers(params, X)
    n, q = X.shape[0], params[-1][0].shape[0]
    gram = square_buffer(out, n * q, X, "out", "relu_gram")
    # half of each GEMM (BLAS syrk) on the CPU, unless autograd must see the products
    half = upper_only and not any(t.requires_grad for t in (X, *xs, *(w for w, _ in params)))
    g = torch.eye(q, dtype=X.dtype, device=X.device).expand(n, q, q)
    for layer in range(len(params) - 1, 0, -1):  # hidden layer l = layer, weights index layer - 1
        w_next = params[layer][0]
        g = (g @ w_next) * (xs[layer] > 0).to(X.dtype).unsqueeze(1)  # (N, Q, d_l); h(z) = [x^(l) > 0]
        flat = g.reshape(n * q, -1)
        # the last hidden layer's term is written into the result, the others into work and added
        term = gram if layer == len(params) - 1 else (work := square_buffer(work, n * q, X, "work", "relu_gram"))
        row_gram(flat, term, upper_only=half)
        # the factor (X X^T + 1) (x) 1_Q with its columns repeated once: a broadcast over the
        # middle axis only (a stride-0 innermost axis of length Q makes the product 3x slower)
        factor = _plus_one_gram(xs[layer - 1]).repeat_interleave(q, dim=1)
        term.view(n, q, n * q).mul_(factor[:, None, :])
        if term is not gram:
            gram += term
    if len(params) == 1:  # no hidden layer: only the output layer's term
        gram.zero_()
    # Output layer: G_{L+1} = 1_Q, so its term (X_L X_L^T + 1) (x) 1_Q only touches the Q x Q block diagonals.
    gram.view(n, q, n, q).diagonal(dim1=1, dim2=3).add_(_plus_one_gram(xs[-2]).unsqueeze(-1))
    return gram


def _plus_one_gram(x: torch.Tensor) -> torch.Tensor:
    """``x x^T + 1`` (the Gram of ``[x, 1]``)."""
    return torch.addmm(torch.ones((), dtype=x.dtype, device=x.device).expand(x.shape[0], x.shape[0]), x, x.T)


def row_gram(flat: torch.Tensor, out: torch.Tensor, *, upper_only: bool = False) -> torch.Tensor:
    """``flat flat^T`` (``(n, n)`` from ``flat (n, k)``) in ``out``. With ``upper_only`` on the CPU
    (float32/64) only the upper triangle, by BLAS ``syrk`` (half the arithmetic of a GEMM), and the
    strict lower triangle of ``out`` keeps whatever it held (for solvers that read one triangle,
    and entrywise products and sums of such terms); otherwise one ``torch.mm``."""
    if upper_only and uses_lapack(flat):
        return _upper_row_gram(flat, out)
    return torch.mm(flat, flat.T, out=out)


def _upper_row_gram(flat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    a = flat.contiguous().numpy()
    c = out.numpy().T  # out^T in Fortran order: its lower triangle is out's upper triangle
    syrk = get_blas_funcs("syrk", (a,))
    res = syrk(1.0, a.T, trans=1, lower=1, beta=0.0, c=c, overwrite_c=1)
    if not np.shares_memory(res, c):  # scipy had to copy (never for these contiguous arrays)
        out.copy_(torch.from_numpy(res.T))
    return out
