"""Matrix exponentials of symmetric and antisymmetric matrices through an eigendecomposition.

``torch.linalg.matrix_exp`` in float64 (torch 2.x, CPU) has relative errors up to ~1e-10 for
arguments of norm between about 0.01 and 0.5 (against ``scipy.linalg.expm``), and the exponential
of an antisymmetric matrix is then orthogonal only to ~1e-11. Both kinds of argument used here
are normal, so a unitary eigendecomposition gives the exponential to a few ulps:

* symmetric ``S = V diag(lambda) V^T``: ``e^S = V diag(e^lambda) V^T``;
* antisymmetric ``A``: ``i A`` is Hermitian, ``i A = U diag(mu) U^H``, so
  ``e^A = 1 + U diag(e^{-i mu} - 1) U^H`` (real up to rounding; the real part is used).
"""

from __future__ import annotations

import torch

__all__ = ["expm_symmetric", "expm_antisymmetric"]


def expm_symmetric(S: torch.Tensor) -> torch.Tensor:
    """``e^S`` for symmetric ``S (..., n, n)`` (only the lower triangle is read, as by ``eigh``)."""
    lam, V = torch.linalg.eigh(S)
    return (V * torch.exp(lam).unsqueeze(-2)) @ V.transpose(-1, -2)


def expm_antisymmetric(A: torch.Tensor) -> torch.Tensor:
    """``e^A`` for antisymmetric real ``A (..., n, n)``: orthogonal to rounding, and ``e^A - 1`` accurate relative to ``|A|``.

    ``e^{-i mu} - 1 = -2 sin^2(mu/2) - i sin(mu)`` is formed without cancellation, so a small
    ``A`` (an integrator's step ``h Omega``) is not rounded against the identity.
    """
    mu, U = torch.linalg.eigh(1j * A.to(torch.complex128 if A.dtype == torch.float64 else torch.complex64))
    d = torch.complex(-2 * torch.sin(mu / 2) ** 2, -torch.sin(mu))
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return eye + ((U * d.unsqueeze(-2)) @ U.conj().transpose(-1, -2)).real.to(A.dtype)
