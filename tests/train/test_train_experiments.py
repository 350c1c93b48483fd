"""The training experiments: quick variants at seeds other than 0 pass every claim (or record
it as not applicable with a reason); tiers resolve as documented; the statistics they use
reject what they should."""

import numpy as np
import pytest

from collapselab.core.errors import ConfigError
from collapselab.experiments import run_experiment
from collapselab.experiments._base import get_experiment, resolve_config
from collapselab.experiments._stats import derived_seeds, equivalence_test, trend_test

TRAINING = ["terminal-phase", "square-loss-cnn", "square-loss-random-labels", "ulpm-vgg"]


# claims the quick tier records as not applicable by design (every other claim is tested), each with
# its evidence in the reason: ulpm-vgg's "below 0.1 after 500 epochs" is the paper's number for 500
# epochs, which the quick tier does not train; random labels' rho ordering levels off above fraction
# 0.4-0.6 (it fails in the middle tier too), so no quick size tests it at level 1e-3
QUICK_NOT_APPLICABLE = {"terminal-phase": set(), "square-loss-cnn": set(), "ulpm-vgg": {"below-paper-value"}, "square-loss-random-labels": {"rho-grows-with-random-labels"}}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "seed"), [("terminal-phase", 3), ("terminal-phase", 8), ("square-loss-cnn", 5), ("square-loss-random-labels", 6), ("ulpm-vgg", 7)])
def test_quick_experiment_claims_pass_at_other_seeds(name, seed, tmp_path, claims_catalogue):
    result = run_experiment(name, {"seed": seed}, out=tmp_path, quick=True, show_progress=False, threads=1)
    claims_catalogue(result)
    failed = [(c.id, c.measured) for c in result.claims if c.passed is False]
    assert result.claims and not failed, failed
    assert all(c.tolerance_reason.strip() and c.reference.strip() for c in result.claims)
    assert any(c.comparator == "test" and c.passed for c in result.claims)
    if name in QUICK_NOT_APPLICABLE:
        assert {c.id for c in result.claims if c.comparator == "not_applicable"} == QUICK_NOT_APPLICABLE[name]
    assert list((result.path / "figures").glob("*.png"))
    assert (result.path / "checkpoint.pt").exists() and (result.path / "metrics.csv").exists()


@pytest.mark.parametrize("name", TRAINING)
def test_tiers_resolve_and_explicit_values_win(name):
    exp = get_experiment(name)
    quick = resolve_config(exp, {}, quick=True)
    middle = resolve_config(exp, {"tier": "middle"}, quick=False)
    full = resolve_config(exp, {}, quick=False)
    assert (quick.tier, middle.tier, full.tier) == ("quick", "middle", "full")
    for key, value in exp.config.TIERS["middle"].items():
        assert getattr(middle, key) == value
    assert full.epochs == exp.config.model_fields["epochs"].default
    assert resolve_config(exp, {"tier": "middle", "epochs": 7}, quick=False).epochs == 7
    assert resolve_config(exp, {"epochs": 5}, quick=True).tier == "quick"


@pytest.mark.parametrize("name", TRAINING)
def test_absurd_horizons_are_refused_before_training(name):
    exp = get_experiment(name)
    for bad in ({"epochs": 10**7}, {"n_seeds": 1}, {"n_seeds": 10**4}, {"per_class": 10**6}, {"tier": "huge"}):
        with pytest.raises(ConfigError):
            resolve_config(exp, bad, quick=True)


def test_trend_test_needs_a_trend():
    rng = np.random.default_rng(1)
    epochs = [1, 2, 3, 5, 8, 13, 21, 34]
    falling = [{e: 1.0 / e + 1e-3 * rng.standard_normal() for e in epochs} for _ in range(3)]
    assert trend_test(falling, [2, 2, 2]).p_value < 1e-6
    assert trend_test(falling, [2, 2, 2], decreasing=False).p_value > 0.99
    flat = [{e: 1.0 for e in epochs} for _ in range(3)]
    assert trend_test(flat, [1, 1, 1]).p_value == 1.0  # nothing changed: no evidence
    assert trend_test(falling, [30, 30, 30]).p_value == 1.0  # fewer than 3 points from the start
    assert trend_test(falling, [30, 30, 30]).skipped == 3
    # one seed rising cancels against one falling (Stouffer), it is not ignored (as Fisher would)
    mixed = [falling[0], {e: float(e) for e in epochs}]
    assert trend_test(mixed, [1, 1]).p_value > 0.4


def test_random_labels_measure_the_training_mode_network():
    """What the experiment measures (its ``epoch_metrics``): the training error of the eval-mode
    network with exact BN statistics is that of the training-mode network on the same full batch
    (their outputs agree to rounding: tests/train/test_train_trainer.py), its rho is not the
    running-statistics rho, the model's running statistics are restored afterwards, and the stale
    running statistics (mean 0, variance 1 at init) give another network."""
    import copy

    import torch

    from collapselab.train import TrainConfig, Trainer
    from collapselab.experiments.square_loss_random_labels import ExactBNMetrics
    from collapselab.toy import rho
    from collapselab.train.protocols import binary_fashion_mnist, seed002_model

    data = binary_fashion_mnist([0, 2], 16, 1)
    X, labels = data.X, data.labels
    model = seed002_model(0.1, channels=[8, 16, 32], seed=3)
    running = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, (X, labels), TrainConfig(epochs=1, loss="mse", lr=0.01, batch_size=32, nc_points=0), num_classes=2)
    metrics = ExactBNMetrics(trainer, (X, labels), (X, labels), frozenset({0}), frozenset({0}))
    with torch.no_grad():
        want = copy.deepcopy(model).train()(X)
        wrong = int((trainer.predict(want) != labels).sum()) / len(labels)
        row = metrics(model)
        stale = model.eval()(X)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in running.items())  # the trained model is untouched
    assert row["train_error_eval"] == wrong and row["test_error"] == wrong
    assert row["rho_running"] == float(rho(model)) != row["rho"]
    scale = float(want.abs().max())
    assert float((stale - want).abs().max()) > 0.1 * scale


def test_random_labels_of_one_seed_are_nested():
    """square-loss-random-labels relies on it (common random numbers across fractions; the label-noise
    claim pools only each seed's largest fraction): with one seed, the labels a smaller fraction
    redraws are redrawn, to the same values, at every larger fraction."""
    import torch

    from collapselab.train import randomise_labels

    clean = torch.arange(64) % 2
    for seed in range(5):
        draws = [randomise_labels(clean, r, 2, generator=torch.Generator().manual_seed(seed)) for r in (0.2, 0.5, 1.0)]
        for small, large in zip(draws, draws[1:]):
            changed = small != clean
            assert changed.any() and torch.equal(small[changed], large[changed])


@pytest.mark.parametrize("tier", ["quick", "middle"])
def test_random_label_trends_fail_without_an_effect(tier):
    """The random-label trend claims pass on values that grow with the fraction (plus noise) and fail
    on the same values with the fraction's effect switched off; the quick tier does not test rho."""
    from collapselab.experiments import square_loss_random_labels as rl

    cfg = resolve_config(get_experiment("square-loss-random-labels"), {"tier": tier}, quick=tier == "quick")
    verdicts = {}

    class Ctx:
        def claim_test(self, cid, *_a, p_value, level, **_k):
            verdicts[cid] = p_value <= level

        def claim_not_applicable(self, cid, *_a, **_k):
            verdicts[cid] = None

        def claim_close(self, cid, *_a, **_k):
            pass

    rng = np.random.default_rng(2)
    for effect in (1.0, 0.0):
        finals = [{"fraction": r, "seed": s, "rho": 10.0 * np.exp(effect * r + 0.05 * rng.standard_normal()), "test_error": 0.1 + effect * r / 2 + 0.01 * rng.standard_normal(),
                   "redrawn": 10, "changed": 5} for s in range(cfg.n_seeds) for r in cfg.fractions]
        rl._claims(Ctx(), cfg, finals)
        rho_verdict = None if tier == "quick" else effect > 0
        assert verdicts == {"rho-grows-with-random-labels": rho_verdict, "test-error-grows-with-random-labels": effect > 0}, (effect, verdicts)


def test_equivalence_and_seeds():
    mean, p = equivalence_test([0.01, -0.02, 0.015, 0.0, -0.01], 0.5)
    assert abs(mean) < 0.02 and p < 1e-4
    assert equivalence_test([1.0, 1.2, 0.9, 1.1], 0.5)[1] > 0.5  # clearly outside the margin
    assert derived_seeds(3, 4) == derived_seeds(3, 4) and len(set(derived_seeds(3, 4))) == 4
    assert derived_seeds(3, 4) != derived_seeds(4, 4)


def test_quick_not_applicable_only_for_listed_claims_in_the_quick_tier():
    from collapselab.experiments._tiers import quick_not_applicable

    recorded = []

    class Ctx:
        def claim_not_applicable(self, cid, claim, source, *, why, reference):
            recorded.append((cid, why))

    exp = get_experiment("square-loss-cnn")
    quick, middle = resolve_config(exp, {}, quick=True), resolve_config(exp, {"tier": "middle"}, quick=False)
    listed = {"a": "too weak at this scale"}
    assert quick_not_applicable(Ctx(), quick, listed, "a", "claim", "src", "ref")
    assert not quick_not_applicable(Ctx(), quick, listed, "b", "claim", "src", "ref")
    assert not quick_not_applicable(Ctx(), middle, listed, "a", "claim", "src", "ref")
    assert recorded == [("a", "not tested in the quick tier (tested in the middle and full tiers): too weak at this scale")]


def _mse_classifier_curvature(model, X, outputs):
    """Largest eigenvalue of the MSE loss's Hessian in one classifier row (PyTorch ``MSELoss``, mean
    over the batch and the ``outputs``): ``(2/outputs) lambda_max(E[h h^T])``, ``h`` the classifier's
    input with the bias's constant 1, in training mode (batch statistics)."""
    import torch

    seen = []
    hook = model.classifier.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].flatten(1)))
    model.train()
    with torch.no_grad():
        model(X)
    hook.remove()
    h = torch.cat([seen[0].double(), torch.ones(len(seen[0]), 1, dtype=torch.float64)], 1)
    return (2.0 / outputs) * float(torch.linalg.eigvalsh(h.T @ h / len(h))[-1])


def test_mse_learning_rates_sit_inside_the_heavy_ball_stability_edge():
    """Heavy-ball SGD is linearly unstable along a curvature ``lambda`` once ``lr lambda > 2 (1 + momentum)``.
    The terminal-phase full tier's MSE rate keeps the width-1 VGG-11 inside that edge, where PHD's 0.05
    is beyond it (the reason for ``lr_mse``); the square-loss middle tiers' paper rate 0.01 is inside it
    at width 1/4, from the small and the large init."""
    import torch

    from collapselab.core.data import load_fashion_mnist
    from collapselab.train import VGG, as_images
    from collapselab.train.protocols import binary_fashion_mnist, seed002_model

    torch.set_num_threads(1)
    tp = get_experiment("terminal-phase")
    full, middle = resolve_config(tp, {}, quick=False), resolve_config(tp, {"tier": "middle"}, quick=False)
    edge = 2.0 * (1.0 + full.momentum)
    X = as_images(load_fashion_mnist("train", limit_per_class=13), normalise="standardise")[0][:128]
    torch.manual_seed(0)
    lam = _mse_classifier_curvature(VGG(11, in_channels=1, num_classes=10, width=full.width, input_size=28), X, 10)
    assert full.lr_mse * lam < edge / 2 < edge < full.lr * lam
    torch.manual_seed(0)
    lam = _mse_classifier_curvature(VGG(11, in_channels=1, num_classes=10, width=middle.width, input_size=28), X, 10)
    assert middle.lr_mse is None and middle.lr * lam < edge / 2
    data = binary_fashion_mnist([0, 2], 64, 1)
    for name in ("square-loss-cnn", "square-loss-random-labels"):
        cfg = resolve_config(get_experiment(name), {"tier": "middle"}, quick=False)
        for init in (0.1, 5.0):
            lam = _mse_classifier_curvature(seed002_model(init, channels=cfg.channels, seed=0), data.X, 2)
            assert cfg.lr * lam < edge / 2, (name, init, lam)


class _Recorder:
    """Stands in for a RunContext: records each claim call as (method, id, keyword arguments)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        return lambda cid, *args, **kw: self.calls.append((method, cid, kw))


def _runs(values, onset=5, epochs=(1, 2, 3, 5, 8, 12, 17, 25, 36, 50)):
    """Fake per-seed summaries: every metric of row ``i`` is ``values[i]`` (a flat or rising series)."""
    keys = ("nc1", "nc2_etf_error_means", "nc3", "nc4", "nc2_equinorm_means", "nc2_equinorm_weights", "ulpm_within_class_variation", "nc2_equiangular_means",
            "nc2_equiangular_weights", "ulpm_self_duality")
    rows = [{"epoch": e, **dict.fromkeys(keys, v), "nc4": 0.0, "nc_margin": 0.1, "nc_margin_bound": 1.0} for e, v in zip(epochs, values)]
    return [{"rows": rows, "terminal_epoch": onset} for _ in range(3)]


@pytest.mark.parametrize("name", ["terminal-phase", "ulpm-vgg"])
def test_trend_claims_fail_when_nothing_collapses(name):
    """The trend claims of the quick tiers reject a series that stays flat or rises after the onset
    (the effect switched off), and pass a falling one."""
    import importlib

    module = importlib.import_module(f"collapselab.experiments.{name.replace('-', '_')}")
    cfg = resolve_config(get_experiment(name), {}, quick=True)
    verdicts = {}
    for label, values in {"flat": [0.5] * 10, "rising": [0.02 * (i + 1) for i in range(10)], "falling": [0.9**i for i in range(10)]}.items():
        ctx = _Recorder()
        if name == "terminal-phase":
            module._claims(ctx, cfg, "mse", _runs(values))
        else:
            module._claims(ctx, cfg, _runs(values))
        trend = [kw for m, cid, kw in ctx.calls if "-decreases" in cid]
        assert trend and all(m == "claim_test" for m, cid, _ in ctx.calls if "-decreases" in cid)
        verdicts[label] = [kw["p_value"] <= kw["level"] for kw in trend]
    assert not any(verdicts["flat"]) and not any(verdicts["rising"]) and all(verdicts["falling"])


def test_square_loss_cnn_rho_trend_starts_on_the_theorys_side_of_rho_eq_and_fails_without_a_trend():
    """The rho claims test each run from its first measured epoch with rho on the claimed side of
    rho_eq = mu/M; a run that never gets there, or a flat rho, gives no evidence (p = 1)."""
    from collapselab.experiments._stats import trend_test
    from collapselab.experiments.square_loss_cnn import _measured, _rho_eq_side

    def run(rho, rho_eq):
        return {"rows": [{"epoch": e, "rho": r, "rho_eq": q, "nc1": 0.0} for e, (r, q) in enumerate(zip(rho, rho_eq), start=1)]}

    shrinking = run([900.0, 400.0, 200.0, 120.0, 100.0, 93.0], [1.0, 5.0, 30.0, 80.0, 95.0, 94.0])
    assert _rho_eq_side(shrinking, True, 99) == 1 and _rho_eq_side(shrinking, False, 99) == 6
    assert trend_test([_measured(shrinking, "rho")], [1], decreasing=True).p_value < 0.01
    below = run([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0])
    assert _rho_eq_side(below, True, 99) == 99
    assert trend_test([_measured(below, "rho")], [99], decreasing=True).p_value == 1.0
    flat = run([50.0] * 6, [1.0] * 6)
    assert trend_test([_measured(flat, "rho")], [_rho_eq_side(flat, True, 99)], decreasing=True).p_value > 0.5


def test_square_loss_cnn_init_imprint_contrast_needs_weight_decay_to_act():
    """The quick tier's "init forgotten under weight decay" test: the gap |log rho(5) - log rho(0.01)|
    with weight decay minus the same seed's gap without it must decrease. When weight decay does
    nothing (both gaps shrink alike, as rho relaxes to rho_eq from both inits, plus independent
    noise) the contrast has no trend and fails, though the gap alone would pass; when the gap with
    weight decay falls to ~1 while the other stays near 4, it passes."""
    from collapselab.experiments.square_loss_cnn import gap_contrast, init_gap

    rng = np.random.default_rng(12345)
    epochs = sorted({int(e) for e in np.geomspace(1, 240, 40)})
    t = np.asarray(epochs, dtype=float)
    shared = 4.0 + 1.5 * np.exp(-t / 20.0)  # the gap without weight decay: relaxes, then stays near 4

    def runs(log_gap_seeds):
        small = [{"rows": [{"epoch": e, "rho": 1.0, "nc1": 0.0} for e in epochs]} for _ in log_gap_seeds]
        large = [{"rows": [{"epoch": e, "rho": float(np.exp(g)), "nc1": 0.0} for e, g in zip(epochs, gap)]} for gap in log_gap_seeds]
        return small, large

    def noisy(base):
        return [base + rng.normal(0.0, 0.3, len(t)) for _ in range(3)]

    gaps0 = init_gap(*runs(noisy(shared)))
    assert trend_test(gaps0, [1, 1, 1], decreasing=True).p_value < 1e-3  # the gap alone shrinks without weight decay too
    absent = gap_contrast(init_gap(*runs(noisy(shared))), gaps0)
    assert trend_test(absent, [1, 1, 1], decreasing=True).p_value > 1e-3
    forgotten = gap_contrast(init_gap(*runs(noisy(shared * np.exp(-t / 50.0)))), gaps0)
    assert trend_test(forgotten, [1, 1, 1], decreasing=True).p_value < 1e-6


def test_square_loss_cnn_init_claim_tests_the_endpoint_after_50_time_scales_and_the_contrast_before():
    """rho-init-independent-wd: TOST of the final log ratio from 50 weight-decay time scales on, the
    series contrast with the weight-decay-free runs from 1 on, not applicable without those runs."""
    from collapselab.experiments.square_loss_cnn import _init_imprint_claim

    recorded = []

    class Ctx:
        def claim_test(self, cid, claim, source, *, test, **_):
            recorded.append((cid, test.split(" ")[0]))

        def claim_not_applicable(self, cid, claim, source, *, why, reference):
            recorded.append((cid, "N/A"))

    exp = get_experiment("square-loss-cnn")
    quick = resolve_config(exp, {}, quick=True)
    run = {"rows": [{"epoch": e, "rho": 1.0 + e, "nc1": 0.0} for e in range(1, 6)]}
    runs = {(wd, s): [run, run] for wd in (0.0, 0.2) for s in (0.01, 5.0)}
    _init_imprint_claim(Ctx(), quick, runs, 240)  # 4.8 time scales, wd 0 present: contrast
    _init_imprint_claim(Ctx(), quick, runs, 2500)  # 50 time scales: endpoint
    _init_imprint_claim(Ctx(), resolve_config(exp, {"weight_decays": [0.2]}, quick=True), runs, 240)
    _init_imprint_claim(Ctx(), quick, runs, 40)  # 0.8 time scales
    assert [r[1] for r in recorded] == ["one-sided", "TOST", "N/A", "N/A"]
