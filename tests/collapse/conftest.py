"""Fixtures for the collapse tests: slow, obvious numpy float64 references for the neural-collapse metrics (loops over
classes, pairs and samples; the textbook formulas with a d x d pseudo-inverse)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

__all__ = ["reference", "reference_metrics", "reference_mse_loss"]


def reference_metrics(H, labels, W=None, b=None):
    H = np.asarray(H, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    C, (N, d) = len(classes), H.shape
    means = np.array([H[y == c].mean(0) for c in classes])
    counts = np.array([(y == c).sum() for c in classes])
    muG = means.mean(0)
    Sw = np.zeros((d, d))
    var = np.zeros(C)
    for k, c in enumerate(classes):
        D = H[y == c] - means[k]
        Sw += D.T @ D
        var[k] = (D**2).sum() / counts[k]
    Sw /= N
    Mc = means - muG
    Sb = Mc.T @ Mc / C
    out = {
        "nc1": np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10, hermitian=True)) / C,
        "nc1_trace_ratio": np.trace(Sw) / np.trace(Sb),
        "rank": np.linalg.matrix_rank(Mc),
    }
    # one class against all later classes at a time
    out["cdnv"] = np.mean(np.concatenate([(var[i] + var[i + 1 :]) / (2 * np.sum((means[i] - means[i + 1 :]) ** 2, axis=1)) for i in range(C - 1)]))

    def nc2(R):
        norms = np.linalg.norm(R, axis=1)
        cos = np.concatenate([np.delete(R @ R[i] / (norms * norms[i]), i) for i in range(C)])
        G = R @ R.T
        target = (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)
        return np.std(norms, ddof=1) / np.mean(norms), np.mean(np.abs(np.array(cos) + 1 / (C - 1))), np.linalg.norm(G / np.linalg.norm(G) - target)

    out["nc2_equinorm_means"], out["nc2_equiangular_means"], out["nc2_etf_error_means"] = nc2(Mc)
    # nearest class centre, one sample at a time
    ncc = np.array([np.argmin(np.linalg.norm(h - means, axis=1)) for h in H])
    yk = np.searchsorted(classes, y)
    out["ncc_accuracy"] = np.mean(ncc == yk)
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        bb = np.zeros(C) if b is None else np.asarray(b, dtype=np.float64)
        out["nc2_equinorm_weights"], out["nc2_equiangular_weights"], out["nc2_etf_error_weights"] = nc2(W)
        out["nc3"] = np.linalg.norm(W / np.linalg.norm(W) - Mc / np.linalg.norm(Mc)) ** 2
        G = W @ Mc.T
        target = (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)
        out["nc3_self_duality_error"] = np.linalg.norm(G / np.linalg.norm(G) - target)
        logits = H @ W.T + bb
        pred = logits.argmax(1)
        out["accuracy"] = np.mean(pred == yk)
        out["nc4"] = np.mean(pred != ncc)
        out["bias_collapse"] = np.linalg.norm(W @ muG + bb)
        margins = np.array([logits[i, yk[i]] - np.max(np.delete(logits[i], yk[i])) for i in range(N)])
        out["margin_mean"] = margins.mean()
        out["margin_std"] = margins.std()
        out["margin_min"] = margins.min()
        # ULPM's q_min of the classifier as given: the bias is part of the logits when passed
        out["nc_margin"] = min(logits[i, yk[i]] - np.max(np.delete(logits[i], yk[i])) for i in range(N))
        out["nc_margin_bound"] = (np.sum(W**2) + np.sum(H**2)) / (2 * (C - 1) * np.sqrt(N / C))
        out["ulpm_self_duality"] = np.mean([np.linalg.norm(Mc[k] / np.linalg.norm(Mc[k]) - W[k] / np.linalg.norm(W[k])) for k in range(C)])
    within = np.mean([np.linalg.norm(H[i] - means[yk[i]]) for i in range(N)])
    out["ulpm_within_class_variation"] = within / np.mean(np.linalg.norm(H - muG, axis=1))
    return out


def reference_mse_loss(H, labels, W, b, weight_decay, Y=None):
    """(1/2N) sum_i |W h_i + b - y_i|^2 + (wd/2)(|W|^2 + |b|^2), one sample at a time."""
    H = np.asarray(H, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    C = W.shape[0]
    Y = np.eye(C) if Y is None else Y
    bb = np.zeros(C) if b is None else np.asarray(b, dtype=np.float64)
    loss = sum(np.sum((W @ h + bb - Y[c]) ** 2) for h, c in zip(H, labels)) / (2 * len(H))
    return loss + weight_decay / 2 * (np.sum(W**2) + np.sum(bb**2))


@pytest.fixture
def reference():
    """The slow references: ``reference.metrics(H, labels, W, b)``, ``reference.mse_loss(...)``."""
    return SimpleNamespace(metrics=reference_metrics, mse_loss=reference_mse_loss)
