"""ULPM (Ji et al. 2022): gradients, diagnostics, conservation, divergence, Theorem 3.3, Lemma 3.1, Example 3.1."""

import math

import numpy as np
import pytest
import torch

from collapselab.core.errors import AssumptionError, DivergenceError, ParameterError, ShapeError
from collapselab.toy.ulpm import (
    FIGURE_QUANTITIES,
    alignment,
    approximate_kkt,
    collapsed_point,
    example31_escape_gain,
    example31_escape_point,
    example31_escape_threshold,
    example31_gradient_coefficient,
    example31_loss,
    example31_point,
    figure_quantities,
    minimise_on_sphere,
    nc_margin,
    nc_margin_bound,
    sphere_descent,
    sphere_minimum,
    ulpm_descent,
    ulpm_flow,
    ulpm_gradients,
    ulpm_labels,
    ulpm_loss,
    ulpm_step,
)


def _point(K=4, n=3, d=5, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(K, d, dtype=torch.float64, generator=g), scale * torch.randn(d, n * K, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_and_gradients_match_autograd(reduction):
    W, H = _point()
    Wl, Hl = W.clone().requires_grad_(True), H.clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy((Wl @ Hl).T, ulpm_labels(4, 3), reduction=reduction)
    gW_ref, gH_ref = torch.autograd.grad(ref, [Wl, Hl])
    loss, gW, gH = ulpm_gradients(W, H, reduction=reduction)
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-14)
    assert float(ulpm_loss(W, H, reduction=reduction)) == pytest.approx(float(ref.detach()), rel=1e-14)
    torch.testing.assert_close(gW, gW_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gH, gH_ref, rtol=1e-12, atol=1e-14)


def test_gradients_match_finite_differences():
    W, H = _point(K=3, n=2, d=4, seed=1)
    _, gW, gH = ulpm_gradients(W, H, reduction="sum")
    h = 1e-6
    for which, grad in ((0, gW), (1, gH)):
        base = [W, H]
        for idx in [(0, 0), (1, 2), (2, 3)] if which == 0 else [(0, 0), (3, 5), (2, 1)]:
            plus = [t.clone() for t in base]
            minus = [t.clone() for t in base]
            plus[which][idx] += h
            minus[which][idx] -= h
            fd = (float(ulpm_loss(*plus, reduction="sum")) - float(ulpm_loss(*minus, reduction="sum"))) / (2 * h)
            assert fd == pytest.approx(float(grad[idx]), rel=1e-7, abs=1e-9)


def test_flow_conserves_imbalance_and_descent_drift_is_exact():
    W, H = _point(seed=2)
    Wt, Ht = ulpm_flow(W, H, torch.linspace(0.0, 10.0, 6, dtype=torch.float64), reduction="sum")
    imb = Wt.square().sum(dim=(1, 2)) - Ht.square().sum(dim=(1, 2))
    assert float((imb - imb[0]).abs().max()) <= 1e-8
    assert float(ulpm_loss(Wt[-1], Ht[-1], reduction="mean")) < float(ulpm_loss(W, H, reduction="mean"))
    # one step changes |W|^2 - |H|^2 by exactly lr^2 (|grad_W|^2 - |grad_H|^2)
    lr = 0.3
    _, gW, gH = ulpm_gradients(W, H, reduction="mean")
    W1, H1 = ulpm_step(W, H, lr, reduction="mean")
    drift = float(W1.square().sum() - H1.square().sum() - (W.square().sum() - H.square().sum()))
    assert drift == pytest.approx(lr**2 * float(gW.square().sum() - gH.square().sum()), rel=1e-10)
    # over many steps the drift is the sum of those terms; ulpm_descent iterates the same map
    lr, Wk, Hk, predicted = 0.05, W, H, 0.0
    for _ in range(40):
        _, gW, gH = ulpm_gradients(Wk, Hk, reduction="sum")
        predicted += lr**2 * float(gW.square().sum() - gH.square().sum())
        Wk, Hk = ulpm_step(Wk, Hk, lr, reduction="sum")
    tr = ulpm_descent(W, H, lr=lr, steps=40, reduction="sum", record=[0, 40])
    torch.testing.assert_close(tr.W, Wk, rtol=1e-12, atol=1e-14)
    assert float(tr.records["imbalance"][-1] - tr.records["imbalance"][0]) == pytest.approx(predicted, rel=1e-9)
    # ulpm_descent accumulates the same law itself, at every record
    assert tr.imbalance_law.shape == (2,) and float(tr.imbalance_law[0]) == 0.0
    assert float(tr.imbalance_law[-1]) == pytest.approx(predicted, rel=1e-9)


def test_summed_loss_with_lr5_is_detected_as_diverging():
    W, H = _point(K=5, n=10, d=20, scale=0.1, seed=0)
    with pytest.raises(DivergenceError, match=r"diverged by step \d+: .*reduction='sum', lr=5.0; the summed loss multiplies the step by N=50"):
        ulpm_descent(W, H, lr=5.0, steps=1000, reduction="sum")
    tr = ulpm_descent(W, H, lr=5.0, steps=300, reduction="mean", record=[0, 100, 300])
    assert tr.steps.tolist() == [0, 100, 300]
    assert float(tr.records["loss"][-1]) < math.log(2)


def _figure_reference(W, H):
    """Slow per-class/per-pair loops of the Figure 2 definitions (docs/theory/neural-collapse.md)."""
    K = W.shape[0]
    n = H.shape[1] // K
    feats = [H[:, k * n : (k + 1) * n].T for k in range(K)]
    means = [f.mean(dim=0) for f in feats]
    mu_G = sum(means) / K
    cen = [m - mu_G for m in means]
    nm = torch.tensor([float(torch.linalg.norm(c)) for c in cen], dtype=torch.float64)
    nw = torch.tensor([float(torch.linalg.norm(W[k])) for k in range(K)], dtype=torch.float64)

    def cos_err(vs):
        errs = [abs(float(vs[a] @ vs[b] / (torch.linalg.norm(vs[a]) * torch.linalg.norm(vs[b]))) + 1 / (K - 1)) for a in range(K) for b in range(K) if a != b]
        return sum(errs) / len(errs)

    within = sum(float(torch.linalg.norm(h - means[k])) for k in range(K) for h in feats[k]) / (K * n)
    total = sum(float(torch.linalg.norm(h - mu_G)) for k in range(K) for h in feats[k]) / (K * n)
    dual = sum(float(torch.linalg.norm(cen[k] / torch.linalg.norm(cen[k]) - W[k] / torch.linalg.norm(W[k]))) for k in range(K)) / K
    return {
        "feature_norm_variation": float(nm.std() / nm.mean()),
        "classifier_norm_variation": float(nw.std() / nw.mean()),
        "within_class_variation": within / total,
        "feature_cosine": cos_err(cen),
        "classifier_cosine": cos_err([W[k] for k in range(K)]),
        "self_duality": dual,
    }


def test_figure_quantities_match_a_loop_reference_and_vanish_at_collapse():
    W, H = _point(K=4, n=3, d=5, seed=3)
    got = figure_quantities(W, H)
    ref = _figure_reference(W, H)
    assert set(got) == set(FIGURE_QUANTITIES)
    for k in FIGURE_QUANTITIES:
        assert got[k] == pytest.approx(ref[k], rel=1e-12)
    Wc, Hc = collapsed_point(4, 3, 5, 10.0, seed=1)
    assert max(figure_quantities(Wc, Hc).values()) <= 1e-12


def test_lemma31_bound_and_its_equality_case():
    for seed in range(5):
        W, H = _point(K=4, n=3, d=5, seed=seed)
        assert nc_margin(W, H) < nc_margin_bound(W, H)
    Wc, Hc = collapsed_point(4, 3, 5, 10.0)
    assert nc_margin(Wc, Hc) == pytest.approx(nc_margin_bound(Wc, Hc), rel=1e-13)
    assert nc_margin(Wc, Hc) == pytest.approx(10.0 / (2 * 3 * math.sqrt(3)), rel=1e-13)


def test_alignment_sign_and_approximate_kkt():
    W, H = _point(K=3, n=2, d=4, scale=0.3, seed=4)
    tr = ulpm_descent(W, H, lr=1.0, steps=2000, record=[300, 2000], reduction="mean")
    Wf, Hf = tr.W, tr.H
    _, gW, gH = ulpm_gradients(Wf, Hf, reduction="sum")
    z = torch.cat([Wf.reshape(-1), Hf.reshape(-1)])
    g = torch.cat([gW.reshape(-1), gH.reshape(-1)])
    beta = alignment(Wf, Hf)
    assert beta == pytest.approx(float(-(z @ g) / (z.norm() * g.norm())), rel=1e-12)
    assert beta > 0.9  # the printed formula (no minus sign) would give a value near -1
    eps, delta = approximate_kkt(Wf, Hf)
    q = nc_margin(Wf, Hf)
    assert eps == pytest.approx(float(z.norm()) / math.sqrt(q) * math.sqrt(2 * (1 - beta)), rel=1e-9)
    assert delta >= 0
    rec = tr.records
    assert float(rec["kkt_eps"][1]) < float(rec["kkt_eps"][0])
    assert float(rec["kkt_delta"][1]) < float(rec["kkt_delta"][0])
    assert float(rec["beta"][1]) > float(rec["beta"][0])
    with pytest.raises(AssumptionError, match="q_min=.* is not positive"):
        approximate_kkt(W, -H)


def test_theorem33_closed_form_and_sphere_search():
    K, n, d, r2 = 3, 2, 4, 6.0
    best = sphere_minimum(K, n, r2, reduction="sum")
    W, H = collapsed_point(K, n, d, r2, seed=2)
    assert float(W.square().sum()) == pytest.approx(float(H.square().sum()), rel=1e-14)
    assert float(ulpm_loss(W, H, reduction="sum")) == pytest.approx(best, rel=1e-12)
    assert sphere_minimum(K, n, r2, reduction="mean") == pytest.approx(best / (n * K), rel=1e-15)
    search = minimise_on_sphere(K, n, d, r2, starts=2, seed=1, reduction="sum")
    assert float(search.values.min()) == pytest.approx(best, rel=1e-10)
    assert float(search.values.min()) >= best * (1 - 1e-12)
    assert max(figure_quantities(search.W, search.H).values()) <= 1e-6
    with pytest.raises(AssumptionError, match="needs dim >= 2"):
        collapsed_point(3, 2, 1, 1.0)


@pytest.mark.parametrize("c", [0.3, 0.8, 1.0, 1.7, 3.0])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_example31_loss_and_corrected_gradient_coefficient(c, reduction):
    W, H = example31_point(c)
    loss, gW, gH = ulpm_gradients(W, H, reduction=reduction)
    A = W / c
    assert float(loss) == pytest.approx(example31_loss(c, reduction=reduction), rel=1e-12)
    g = example31_gradient_coefficient(c, reduction=reduction)
    torch.testing.assert_close(gW, g * A, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(gH, g * A, rtol=1e-12, atol=1e-15)
    x = math.exp(-2 * c * c)
    printed = -c * (2 + 2 * x) / (2 + 2 * x + 2 / x) * (1 if reduction == "sum" else 0.25)
    assert abs(printed - g) > 1e-3 * abs(g)  # the paper's denominator is wrong


def test_example31_escape_family():
    c = 1.0
    for beta in (-0.05, -0.3, -0.6):
        Wp, Hp = example31_escape_point(c, beta)
        assert float(Wp.square().sum()) == pytest.approx(8 * c * c, rel=1e-14)
        direct = float(ulpm_loss(Wp, Hp, reduction="sum")) - example31_loss(c, reduction="sum")
        assert example31_escape_gain(c, beta, reduction="sum") == pytest.approx(direct, rel=1e-9, abs=1e-15)
    for c in (1.0, 1.5, 2.0):
        thr = example31_escape_threshold(c)
        assert example31_escape_gain(c, thr * 0.9, reduction="sum") > 0 > example31_escape_gain(c, thr * 1.1, reduction="sum")
        assert thr == pytest.approx(-math.exp(-2 * c * c), rel=0.05)
    assert example31_escape_threshold(2.5) == pytest.approx(-math.exp(-12.5), rel=1e-4)
    with pytest.raises(ParameterError, match="beta must be float in"):
        example31_escape_point(1.0, 0.1)


def test_noise_escapes_example31_on_the_sphere_while_plain_descent_stays():
    W, H = example31_point(1.0)
    _, _, plain = sphere_descent(W, H, lr=0.5, steps=400, reduction="sum")
    assert float((plain - example31_loss(1.0, reduction="sum")).abs().max()) <= 1e-13
    Wn, Hn, noisy = sphere_descent(W, H, lr=0.5, steps=1500, noise=1e-3, seed=0, reduction="sum")
    target = sphere_minimum(4, 1, 16.0, reduction="sum")
    assert float(noisy[-1]) == pytest.approx(target, rel=1e-3)
    assert float(Wn.square().sum() + Hn.square().sum()) == pytest.approx(16.0, rel=1e-12)
    # unconstrained plain descent keeps the direction of A exactly
    tr = ulpm_descent(W, H, lr=1.0, steps=500, record=[500], reduction="mean")
    A = W / torch.linalg.norm(W)
    assert float((tr.W / torch.linalg.norm(tr.W) - A).abs().max()) <= 1e-13


def test_descent_is_reproducible_and_rejects_bad_input():
    W, H = _point(seed=5)
    a = ulpm_descent(W, H, lr=0.5, steps=50, noise=0.1, seed=3, record=[50], reduction="mean")
    b = ulpm_descent(W, H, lr=0.5, steps=50, noise=0.1, seed=3, record=[50], reduction="mean")
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)
    with pytest.raises(ShapeError, match="H must have n\\*K columns"):
        ulpm_descent(W, H[:, :-1], lr=0.5, steps=5, reduction="mean")
    with pytest.raises(ParameterError, match="lr must be float in"):
        ulpm_descent(W, H, lr=0.0, steps=5, reduction="mean")
    with pytest.raises(ParameterError, match="steps must be an int >= 1"):
        ulpm_descent(W, H, lr=0.1, steps=0, reduction="mean")
    # a non-numeric count is a ParameterError too (int("ten") used to raise a bare ValueError)
    with pytest.raises(ParameterError, match="ulpm_descent: steps must be an int >= 1, got 'ten'"):
        ulpm_descent(W, H, lr=0.1, steps="ten", reduction="mean")
    with pytest.raises(ParameterError, match="sphere_descent: steps must be an int >= 1, got 2.5"):
        sphere_descent(W, H, lr=0.1, steps=2.5, reduction="sum")
    # minimise_on_sphere checks its sizes before building the problem (dim was taken as int(dim) unchecked)
    with pytest.raises(ParameterError, match="minimise_on_sphere: dim must be an int >= 1, got 0"):
        minimise_on_sphere(3, 2, 0, 1.0, reduction="sum")
    with pytest.raises(ShapeError, match="ulpm_flow: t must be an increasing 1-D grid"):
        ulpm_flow(W, H, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), reduction="mean")
    with pytest.raises(ParameterError, match="reduction must be one of"):
        ulpm_loss(W, H, reduction="avg")
    assert np.isfinite(float(ulpm_descent(W, H, lr=0.5, steps=5, reduction="mean").records["loss"][-1]))


def test_diagnostics_agree_with_the_collapse_package():
    # a second, independent implementation (collapselab.collapse, streaming statistics)
    from collapselab.collapse import collapse_report

    W, H = _point(K=4, n=3, d=5, seed=6)
    report = collapse_report(H.T, ulpm_labels(4, 3), W)
    ours = figure_quantities(W, H)
    theirs = {
        "feature_norm_variation": report.nc2_equinorm_means,
        "classifier_norm_variation": report.nc2_equinorm_weights,
        "within_class_variation": report.ulpm_within_class_variation,
        "feature_cosine": report.nc2_equiangular_means,
        "classifier_cosine": report.nc2_equiangular_weights,
        "self_duality": report.ulpm_self_duality,
    }
    for k in FIGURE_QUANTITIES:
        assert ours[k] == pytest.approx(theirs[k], rel=1e-10)
    assert nc_margin(W, H) == pytest.approx(report.nc_margin, rel=1e-12)
    assert nc_margin_bound(W, H) == pytest.approx(report.nc_margin_bound, rel=1e-12)


def test_reduction_is_a_required_keyword_of_every_ulpm_function():
    """One point, one loss: ``ulpm_loss`` and ``example31_loss`` (and Theorem 3.3's
    ``sphere_minimum`` at ``collapsed_point``) agree for the same reduction, and no function
    picks a reduction silently (they defaulted to "mean" and "sum" respectively: the same point
    gave 0.2539 and 1.0154)."""
    import inspect

    from collapselab.toy import ulpm

    takes = [name for name in ulpm.__all__ if callable(f := getattr(ulpm, name)) and "reduction" in inspect.signature(f).parameters]
    assert len(takes) >= 12
    for name in takes:
        p = inspect.signature(getattr(ulpm, name)).parameters["reduction"]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty, name
    with pytest.raises(TypeError, match="reduction"):
        ulpm_loss(*example31_point(1.0))
    for reduction in ("sum", "mean"):
        for c in (0.5, 1.0, 2.0):
            assert float(ulpm_loss(*example31_point(c), reduction=reduction)) == pytest.approx(example31_loss(c, reduction=reduction), rel=1e-12)
        W, H = collapsed_point(3, 2, 4, 5.0, seed=0)
        assert float(ulpm_loss(W, H, reduction=reduction)) == pytest.approx(sphere_minimum(3, 2, 5.0, reduction=reduction), rel=1e-12)
