"""The nearest-class-centre rule at collapse, with a large common offset and two nearly equal
class means: ``|h - m_c|^2 = |h~|^2 - 2 (m_c - m_G).h~ + |m_c - m_G|^2`` (one product per
batch) must resolve every decision the data determine.

Error model: each compared quantity ``|m_c - m_G|^2 - 2 P_c`` has error about
``(2k + 1) eps |m - m_G|^2`` (``k <= d`` the span dimension), ~1e-14 here; the closest pair of
means differs by ``gap^2 = 1e-12`` and the noise (1e-8) is far below ``gap / 2``, so every
sample's nearest centre is its own class: a closed-form expectation.
"""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.collapse import collapse_report


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("C", [12, 1500])
def test_nearest_centre_resolves_close_means_at_collapse(seed, C):
    rng = np.random.default_rng(seed)
    d, n, offset, gap, noise = 8, 2, 1e4, 1e-6, 1e-8
    mu = rng.standard_normal((C, d))
    v = rng.standard_normal(d)
    mu[1] = mu[0] + gap * v / np.linalg.norm(v)  # |mu_1 - mu_0| = gap
    y = np.repeat(np.arange(C), n)
    rng.shuffle(y)
    H = offset + mu[y] + noise * rng.standard_normal((C * n, d))
    rep = collapse_report(H, y)
    assert rep.ncc_accuracy == 1.0
    # ULPM within-class variation against the direct differences in numpy. The class means of
    # the two computations may differ by ~offset * eps, which moves |h - m_y| (~noise sqrt(d))
    # by up to offset * eps / (noise sqrt(d)) relative; |h - m_G| (~1) by far less
    means = np.array([H[y == c].mean(0) for c in range(C)])
    ratio = np.linalg.norm(H - means[y], axis=1).mean() / np.linalg.norm(H - means.mean(0), axis=1).mean()
    assert rep.ulpm_within_class_variation == pytest.approx(ratio, rel=4 * offset * np.finfo(float).eps / (noise * np.sqrt(d)))
