"""Synthetic classification data with known structure (docs/datasets.md, "synthetic").

* :func:`gaussian_clusters`: ``Q`` clusters whose every point lies within ``delta`` of
  its mean (CE23's ``delta = sup |Δx|``), means linearly independent.
* :func:`sequentially_separable`: elongated, well separated classes in ``R^M`` that are
  sequentially linearly separable (CE24 Def 5.1).
* :func:`simplex_etf` and :func:`etf_features`: a simplex equiangular tight frame and
  features ``scale * M_{label} + sigma * noise`` (neural collapse with known answer).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ParameterError
from ..validation import Interval, check_param
from ._check import ClassificationData, check_data

__all__ = ["gaussian_clusters", "sequentially_separable", "simplex_etf", "etf_features"]


def _ball(rng: np.random.Generator, n: int, dim: int, radius: float) -> np.ndarray:
    """``n`` points uniform in the ball of ``radius`` in ``R^dim`` (all within ``radius``)."""
    g = rng.standard_normal((n, dim))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    r = radius * rng.random(n) ** (1.0 / dim)
    return g * r[:, None]


def gaussian_clusters(
    num_classes: int,
    per_class: int | list[int],
    *,
    dim: int | None = None,
    delta: float = 0.05,
    separation: float = 1.0,
    jitter: float = 0.2,
    seed: int = 0,
) -> ClassificationData:
    """``Q`` clusters in ``R^M`` (``M = dim``, default ``Q``): mean ``j`` is
    ``separation * (e_j + jitter * g_j)`` (``g_j`` standard normal; for ``M > Q`` then a
    random rotation), points are the mean plus a vector uniform in the ball of radius
    ``delta``, so ``sup_i |x_{j,i} - mean_j| <= delta`` exactly (the sample mean
    differs slightly from the generating mean; ``data.class_means`` is authoritative).
    """
    where = "gaussian_clusters"
    check_param("num_classes", num_classes, Interval(int, 1), where)
    m = num_classes if dim is None else dim
    check_param("dim", m, Interval(int, num_classes), where)
    check_param("delta", delta, Interval(float, 0.0), where)
    check_param("separation", separation, Interval(float, 0.0, closed="neither"), where)
    counts = [per_class] * num_classes if isinstance(per_class, int) else list(per_class)
    if len(counts) != num_classes:
        raise ParameterError(f"{where}: per_class lists {len(counts)} counts for {num_classes} classes")
    for c in counts:
        check_param("per_class", c, Interval(int, 1), where)
    rng = np.random.default_rng(seed)
    means = np.zeros((num_classes, m))
    means[:, :num_classes] = np.eye(num_classes) + jitter * rng.standard_normal((num_classes, num_classes))
    if m > num_classes:
        q, _ = np.linalg.qr(rng.standard_normal((m, m)))
        means = means @ q.T
    means *= separation
    X = np.concatenate([means[j] + _ball(rng, c, m, delta) for j, c in enumerate(counts)])
    labels = np.repeat(np.arange(num_classes), counts)
    perm = rng.permutation(len(labels))
    return check_data(X[perm], labels[perm], name=f"gaussian_clusters(Q={num_classes},M={m})", where=where)


def sequentially_separable(
    num_classes: int,
    dim: int,
    per_class: int,
    *,
    length: float = 1.0,
    thickness: float = 0.05,
    separation: float = 4.0,
    seed: int = 0,
) -> ClassificationData:
    """Elongated classes in ``R^M`` (``M >= Q``): class ``j`` is a thin needle of
    ``length`` and ``thickness`` around ``separation * e_j`` (after a random rotation),
    pointing in a random direction. Needles far apart relative to their length are
    sequentially linearly separable in every order (CE24 Def 5.1); the constructions
    verify it rather than trust it.
    """
    where = "sequentially_separable"
    check_param("num_classes", num_classes, Interval(int, 2), where)
    check_param("dim", dim, Interval(int, num_classes), where)
    check_param("per_class", per_class, Interval(int, 2), where)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    X, labels = [], []
    for j in range(num_classes):
        centre = np.zeros(dim)
        centre[j] = separation
        direction = rng.standard_normal(dim)
        direction /= np.linalg.norm(direction)
        t = rng.uniform(-length / 2, length / 2, per_class)
        pts = centre + t[:, None] * direction + thickness * rng.standard_normal((per_class, dim)) / math.sqrt(dim)
        X.append(pts @ q.T)
        labels.append(np.full(per_class, j))
    return check_data(np.concatenate(X), np.concatenate(labels), name=f"sequentially_separable(Q={num_classes},M={dim})", where=where)


def simplex_etf(num_classes: int, dim: int | None = None, *, seed: int | None = None, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
    """``(Q, d)`` simplex ETF: rows of unit norm with pairwise cosine ``-1/(Q-1)`` (PHD 2020).

    ``M = sqrt(Q/(Q-1)) P (I - 11^T/Q)`` with ``P`` a ``(d, Q)`` partial isometry; ``d >= Q - 1``
    is required (``d = Q - 1`` uses the minimal embedding). ``seed`` picks a random ``P``;
    ``None`` uses the canonical one.
    """
    where = "simplex_etf"
    check_param("num_classes", num_classes, Interval(int, 2), where)
    d = num_classes if dim is None else dim
    check_param("dim", d, Interval(int, num_classes - 1), where)
    q = num_classes
    centred = torch.eye(q, dtype=dtype) - 1.0 / q
    M = math.sqrt(q / (q - 1)) * centred  # rows in R^q, spanning the sum-zero hyperplane
    # orthonormal basis of the sum-zero hyperplane: last q-1 eigenvectors of the centring matrix
    _, vecs = torch.linalg.eigh(centred)
    basis = vecs[:, 1:]  # (q, q-1)
    rows = M @ basis  # (q, q-1), same Gram matrix
    if seed is None:
        P = torch.eye(d, q - 1, dtype=dtype)
    else:
        g = torch.Generator().manual_seed(seed)
        P, _ = torch.linalg.qr(torch.randn(d, q - 1, dtype=dtype, generator=g))
    return (rows @ P.T).to(device)


def etf_features(
    num_classes: int,
    dim: int,
    per_class: int | list[int],
    *,
    sigma: float = 0.0,
    scale: float = 1.0,
    seed: int = 0,
) -> tuple[ClassificationData, torch.Tensor]:
    """Features ``h_i = scale * M_{label_i} + sigma * g_i`` with ``M = simplex_etf`` and
    ``g_i`` standard normal in ``R^d``; returns ``(data, M)`` where ``data.X`` holds the
    features. With ``sigma = 0`` every NC metric is exactly zero.
    """
    where = "etf_features"
    check_param("sigma", sigma, Interval(float, 0.0), where)
    counts = [per_class] * num_classes if isinstance(per_class, int) else list(per_class)
    if len(counts) != num_classes:
        raise ParameterError(f"{where}: per_class lists {len(counts)} counts for {num_classes} classes")
    M = scale * simplex_etf(num_classes, dim, seed=seed)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), counts)
    rng.shuffle(labels)
    X = M.numpy()[labels] + sigma * rng.standard_normal((len(labels), dim))
    return check_data(X, labels, name=f"etf_features(Q={num_classes},d={dim})", where=where), M
