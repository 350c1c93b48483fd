"""Exponentials of symmetric and antisymmetric matrices against scipy's expm (Al-Mohy & Higham)."""

import numpy as np
import pytest
import scipy.linalg as sl
import torch

from collapselab.effective._expm import expm_antisymmetric, expm_symmetric


@pytest.mark.parametrize("scale", [1e-8, 1e-3, 0.03, 0.3, 3.0])
def test_expm_antisymmetric_matches_scipy_and_is_orthogonal(scale):
    rng = np.random.default_rng(1)
    for Q in (2, 3, 5):
        A = rng.standard_normal((Q, Q))
        K = scale * (A - A.T) / 2
        E = expm_antisymmetric(torch.as_tensor(K)).numpy()
        ref = sl.expm(K)
        # e^K - 1 relative to |K| (a step h Omega must not be rounded against the identity): a few ulps times Q
        assert np.abs((E - np.eye(Q)) - (ref - np.eye(Q))).max() <= 50 * Q * np.finfo(float).eps * max(1.0, scale) * np.abs(K).max()
        assert np.abs(E.T @ E - np.eye(Q)).max() <= 10 * Q * np.finfo(float).eps


@pytest.mark.parametrize("scale", [1e-3, 0.03, 0.3, 3.0])
def test_expm_symmetric_matches_scipy(scale):
    rng = np.random.default_rng(2)
    for Q in (2, 3, 5):
        A = rng.standard_normal((Q, Q))
        S = -scale * A @ A.T / Q
        E = expm_symmetric(torch.as_tensor(S)).numpy()
        assert np.abs(E - sl.expm(S)).max() <= 50 * Q * np.finfo(float).eps * max(1.0, np.abs(S).max())


def test_expm_batched():
    K = torch.randn(4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    K = K - K.transpose(1, 2)
    E = expm_antisymmetric(K)
    assert torch.allclose(E[2], expm_antisymmetric(K[2]), rtol=0, atol=1e-14)
