"""Shared problems for the effective-flow tests (fixtures returning builder functions).

The suite runs with ``--import-mode=importlib``, so helpers are handed out as fixtures.
"""

from __future__ import annotations

import pytest
import torch

from collapselab.core.data import ClassificationData, check_data
from collapselab.effective import EffectiveState, make_state


def _rotation(Q: int, eps: float, seed: int) -> torch.Tensor:
    """``exp(eps A)`` for a random antisymmetric ``A`` (an orthogonal matrix near 1)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(Q, Q, generator=g, dtype=torch.float64)
    return torch.linalg.matrix_exp(eps * (A - A.T) / 2)


def _separated_problem(Q: int = 3, per_class: int = 12, *, spread: float = 0.3, eps: float = 0.03, seed: int = 0) -> tuple[ClassificationData, EffectiveState]:
    """Cluster ``l`` centred at ``2*1 - 2.2 e_l`` (coordinate ``l`` near -0.2), layer ``l`` with
    ``beta_l = 1 - e_l`` and ``R_l`` near 1: layer ``l`` partially truncates cluster ``l``
    only (cluster separated), labels ``Y = 1``."""
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(Q, dtype=torch.float64)
    centres = 2.0 * torch.ones(Q, Q, dtype=torch.float64) - 2.2 * eye
    X = centres.repeat_interleave(per_class, 0) + spread * (2 * torch.rand(Q * per_class, Q, generator=g, dtype=torch.float64) - 1)
    labels = torch.arange(Q).repeat_interleave(per_class)
    data = check_data(X, labels)
    beta = 1.0 * (1 - eye)
    R = torch.stack([_rotation(Q, eps, seed + 10 + l) for l in range(Q)])
    return data, make_state(beta, R)


def _single_cluster_below_label(Q: int = 3, n: int = 30, *, seed: int = 0) -> tuple[ClassificationData, EffectiveState]:
    """Prop 4.2 scenario: one cluster (one layer) with ``R (x_i - ỹ)`` in the open negative orthant and
    ``eta(0) = R (beta + ỹ)`` large enough that the cluster starts partially truncated."""
    g = torch.Generator().manual_seed(seed)
    y = torch.full((1, Q), 0.5, dtype=torch.float64)
    X = y - 0.6 + 0.25 * (2 * torch.rand(n, Q, generator=g, dtype=torch.float64) - 1)
    data = check_data(X, torch.zeros(n, dtype=torch.int64), Y=y)
    R = _rotation(Q, 0.15, seed + 1).unsqueeze(0)
    eta0 = torch.linspace(0.55, 0.75, Q, dtype=torch.float64)
    beta = (R[0].T @ eta0 - y[0]).unsqueeze(0)
    return data, make_state(beta, R)


@pytest.fixture
def rotation():
    return _rotation


@pytest.fixture
def separated_problem():
    return _separated_problem


@pytest.fixture
def single_cluster():
    return _single_cluster_below_label
