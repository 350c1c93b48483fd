"""square-loss-cnn: the Rangamani et al. 2021 network trained with the square loss from several init scales,
with and without weight decay, over several seeds; rho, margins and neural collapse.

Protocol (Rangamani et al. 2022, Sec 7, completed from the authors' code), implemented in
:mod:`collapselab.train.protocols`: two Fashion-MNIST classes (T-shirt, pullover) padded to
32x32 stand in for CIFAR-10 classes 1 and 2; every input scaled to unit norm; the "3 conv +
FC" network with BN (affine off), every conv weight rescaled to Frobenius norm ``s``; MSE on
one-hot targets (PyTorch ``MSELoss``: mean over batch and outputs); SGD momentum 0.9, batch
128, constant lr 0.01; PyTorch ``weight_decay`` (the paper's lambda = wd/2 on the mean loss).
``rho`` is the product of the conv norms over the product of the BN running-std norms; the
normalised margins are ``y_n (out_0 - out_1) / rho``.

Measurement ("precise BN"): the network is measured at ``nc_points`` log-spaced epochs, each
time after its BN running statistics were reset to the exact statistics of the whole training
set (``Trainer(exact_bn=True)``, :func:`collapselab.train.exact_batchnorm_statistics`). So rho, the margins, the NC
metrics and the test error are those of the eval-mode network with exact training-set BN
statistics, a function of the weights alone: the running statistics of mini-batches lag the
weights by about 45 steps and carry the noise of a few samples, and rho divides by them.

Each (weight decay, init scale) pair is trained from ``n_seeds`` seeds derived from the run's
seed. Claims (Sec 7, Figs 2-4 and 14-15; Theorem 3), each a statistical test over the seeds:

- without weight decay rho grows from the smallest init and shrinks from the largest (Fig 2
  bottom row: "monotonically"). "Small" and "large" are measured against the quantity the
  theory uses: without weight decay the rho flow ``rho_dot ~ mu - rho M`` relaxes to
  ``rho_eq = mu / M`` (eq. 11; ``mu``, ``M`` the mean and second moment of the normalised
  margins), so rho grows where it lies below ``rho_eq`` and shrinks where above. Each run is
  tested from its first measured epoch on the claimed side of ``rho_eq`` (measured at that
  epoch) to the last: Kendall's tau of rho against the epoch, per seed, Stouffer-combined. At
  init 0.01 the conv biases dominate the tiny weights for the first steps and rho starts far
  above ``rho_eq``; the test starts where the growth phase does. A run that never reaches the
  claimed side is not tested and counts as no evidence.
- with weight decay the final rho is nearly independent of the init (Fig 2 top row, Fig 14):
  from 50 weight-decay time scales ``(1 - momentum)/(lr wd)`` steps on (the paper's 1000 epochs
  span 94), TOST that the mean over seeds of ``log rho_final(largest init) - log
  rho_final(smallest init)`` lies within ``log 2``; from 1 to 50 (middle tier 2, quick 4.8), where
  the init is still being forgotten, the forgetting against the weight-decay-free runs: per seed
  the gap ``|log rho_largest(t) - log rho_smallest(t)|`` with weight decay minus the same seed's
  gap without it (:func:`gap_contrast`) decreases (Kendall's tau, Stouffer). The gap alone also
  shrinks without weight decay (rho relaxes to ``rho_eq`` from both inits), the contrast does not;
- with weight decay the margins concentrate (Fig 3 left, Fig 4: "the histogram narrows as
  training progresses"): the coefficient of variation ``sigma/mu`` of the normalised margins
  decreases from each run's terminal-phase onset (all margins positive) on;
- with weight decay NC1 decreases from the terminal-phase onset (Theorem 3: quasi-interpolating
  critical points under weight decay are collapsed; Fig 6);
- with weight decay the classifier rows become antipodal from the onset: ``|cos(w_0, w_1) + 1|``
  decreases (NC2 for two classes; Theorem 3, corrected: ``W^c = k (mu_c - mu_G)``, so
  ``w_0 = -w_1``). Theorem 3 needs an unpenalised last-layer bias (erratum S3,
  docs/theory/errata.md: with a penalised bias the rows keep a common component along the
  global mean of the non-negative post-ReLU features), so this claim is tested when
  ``classifier_bias_decay=false`` (the bias in its own parameter group without weight decay,
  :func:`collapselab.train.exempt_from_weight_decay`) and recorded as not applicable
  under the authors' protocol (weight decay on every parameter), with the reason.

The paper's CNN experiment is binary (Fig 6 measures NC2 on two CIFAR-10 classes). With two
classes the centred class means are ``+-v`` by construction (the global mean is the mean of
the two class means), so their equinorm and equiangularity hold exactly at every epoch, in
every tier: NC2 of the means is a tautology here and is not a claim. The uncentred classifier
rows are not constrained that way, so their NC2 is.

Tiers (``--set tier=...``): ``full`` is the paper's protocol on all 12000 images (1000 epochs
of 94 steps, 2 weight decays x 4 inits x 5 seeds = 40 trainings; the small network makes a
GPU epoch overhead-bound, about 0.5 s (an estimate, not measured here), so about 6 GPU-hours
in all). On Fashion-MNIST the width-1 network at the paper's lr 0.01 is beyond the heavy-ball
stability edge: MSE puts the curvature ``(2/P) lambda_max(E[h h^T])`` on the classifier, at
least the squared norm of the mean of its 2048 post-ReLU batch-normalised inputs ``h`` (about
``2048 / (2 pi) = 326`` when each pre-activation is standardised), measured 515-555 at init 5
on a 128-image batch (mean feature 0.38), so ``lr lambda = 5.2-5.5 > 2 (1 + momentum) = 3.8``
and SGD diverges within two epochs (a CPU run at 400 images: batch loss 4.7, then 2.3e7 at
epoch 2; the trainer stops with a divergence error). This is arithmetic, not the CPU or float32:
the same happens on a GPU. At init 0.01 the BN inputs stay below BN's eps at first and the run
starts. The classifier block is only a lower bound on the network's curvature: at
``--set lr=0.004`` (``lr lambda = 2.2`` on that block) the init-5 runs still climbed (epoch-mean
loss 419, 9.3e3, 4.5e5 over 3 epochs) while the init-0.01 runs trained (0.50 to 0.37). So on
this data the width-1 protocol runs from small inits only. The 1/4-width network of the middle
tier has ``lambda = 105-135`` (``lr lambda <= 1.4``) and trains from every init. ``middle`` keeps the paper's loss, lr, momentum, batch, weight decay 0.01 and
constant schedule for 1000 epochs on 128 images per class with a 1/4-width network ([8, 16,
32] channels), inits 0.01 and 5, 3 seeds (2,000 steps = 2 weight-decay time scales; about
0.1 s per epoch on one core, so about 20 CPU-minutes for the 12 trainings, extrapolated from
3-epoch runs); see docs/results/training.md for its numbers. ``quick`` (``--quick``) trains
64 images full-batch (batch 64: each epoch one deterministic gradient step, and the BN batch
statistics are the exact training-set ones) for 240 epochs with weight decay 0.2, a 1/8-width
network ([4, 8, 16]), 3 seeds per (weight decay, init) pair and the classifier bias exempt from
weight decay. Why: with mini-batches of 16 out of 64 images the SGD noise of the margins and
of rho is as large as their trends over a few hundred steps (in a sweep of seeds 0-9 at batch
16, "rho shrinks from init 5" reached p = 0.08 and "margins concentrate" p = 2.4e-3); full
batch removes that noise, and 240 steps at weight decay 0.2 (time scale 50 steps) span 4.8
time scales, as the batch-16 runs did. The 1/8 width cuts the quick run's CPU time from 52 s
(1/4 width) to 42 s, against 32 s for the batch-16 run of 60 epochs it replaces. Full-batch gradient descent with BN and
weight decay is not stable for ever: the scale-invariant conv weights shrink until their
effective learning rate crosses the stability edge and rho jumps (the periodic instability of
BN with weight decay); in the quick runs rho first jumps at epochs 100-180, after the
terminal-phase onsets (epochs 20-95) the collapse claims are tested from. The jumps make the endpoint
noisy (over run seeds 0-9 the final log ratios ``log rho(5) - log rho(0.01)`` at weight decay
0.2 have mean -0.06 but standard deviation 1.7: a TOST within log 2 at level 1e-3 would need
about 70 seeds); the contrast uses all 32 measured epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..toy import rho  # noqa: E402
from ..train import Series, TrainConfig, Trainer  # noqa: E402
from ..train.protocols import BinaryImages, binary_fashion_mnist, exempt_from_weight_decay, normalised_margins, seed002_model  # noqa: E402
from ._base import Experiment, RunContext  # noqa: E402
from ._stats import derived_seeds, equivalence_test, trend_test  # noqa: E402
from ._tiers import TieredConfig  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run", "gap_contrast", "init_gap", "margin_metrics", "wd_time_scales"]

SOURCE = "Rangamani et al. 2022, Sec 7, Figs 2-4, 6, 14-15"
LEVEL = 1e-3
EQUIVALENCE_LEVEL = 1e-3
MIN_TIME_SCALES = 50.0
MIN_CONTRAST_TIME_SCALES = 1.0
CHECKPOINT_EVERY_S = 30.0
MEASURE_BATCH = 1024  # rows per forward pass of a measurement (one exact-statistics batch up to this size)
TREND_REASON = (
    "level 1e-3 bounds a false pass; Kendall's tau per run over its log-spaced epochs, Stouffer-combined over {n} runs: a trend present in every seed "
    "gives each run tau near 1 in absolute value (one monotone series of 8 points alone has p = 1/8! = 2.5e-5), so a true claim fails only when most runs "
    "stall"
)
CONTRAST_REASON = (
    "level 1e-3 bounds a false pass; the gap with weight decay is compared with the gap without it because the gap alone shrinks without weight decay "
    "too (rho relaxes towards rho_eq from both inits: Kendall's tau of the gap alone gave p from 1e-11 to 1e-25 on the weight-decay-free runs of quick "
    "run seeds 0-9, 31-34, 1234), so only the contrast isolates weight decay's forgetting; when weight decay does nothing the difference has no trend "
    "(each seed's weight-decay-free gap minus another seed's gave p 0.11-0.98 at those 15 run seeds, the contrast with shuffled epochs p 0.07-0.5); "
    "a seed whose gap with weight decay falls from about 5 to about 1 while the other stays near 4 gives tau about -0.8 over 32 epochs (p about 1e-10 "
    "alone), and over those 15 run seeds all 45 inner seeds had tau <= -0.5 and the worst combined p over {n} seeds was 1e-38 (the middle tier at run "
    "seed 0: 9e-36); tested from each seed's first measured epoch, when training spans at least 1 weight-decay time scale (below it weight decay has "
    "barely acted)"
)
QUICK_REASON = (
    "quick tier: 64 images trained full-batch (each epoch one deterministic step, with exact BN batch statistics) at 1/8 width for 240 epochs, weight "
    "decay 0.2 (time scale (1 - momentum)/(lr wd) = 50 steps, so 4.8 time scales) and the classifier bias unpenalised, because at batch 16 the SGD noise "
    "of rho and of the margins matched their trends (p up to 0.08 over seeds 0-9) and Theorem 3 (corrected) needs the unpenalised bias"
)

PositiveInt = Annotated[int, Field(ge=1, le=1024)]
InitScale = Annotated[float, Field(gt=0, le=100)]
WeightDecay = Annotated[float, Field(ge=0, le=1)]


class Config(TieredConfig):
    TIERS = {
        "middle": {"per_class": 128, "channels": [8, 16, 32], "init_scales": [0.01, 5.0], "n_seeds": 3, "nc_points": 30},
        "quick": {"per_class": 32, "test_per_class": 64, "channels": [4, 8, 16], "init_scales": [0.01, 5.0], "epochs": 240, "batch_size": 64, "weight_decays": [0.0, 0.2], "nc_points": 40, "n_seeds": 3,
                  "classifier_bias_decay": False},
    }

    classes: list[Annotated[int, Field(ge=0, le=9)]] = Field([0, 2], min_length=2, max_length=2, description="the two Fashion-MNIST classes (T-shirt, pullover)")
    per_class: int = Field(6000, ge=2, le=6000, description="training images per class (6000 = all)")
    test_per_class: int = Field(1000, ge=1, le=1000, description="test images per class")
    channels: list[PositiveInt] = Field([32, 64, 128], min_length=3, max_length=3, description="conv widths (the paper's 32, 64, 128)")
    init_scales: list[InitScale] = Field([0.01, 0.1, 1.0, 5.0], min_length=2, max_length=8, description="Frobenius norm of every conv weight at init")
    weight_decays: list[WeightDecay] = Field([0.0, 0.01], min_length=1, max_length=4, description="PyTorch weight decay values (0 and the paper's 0.01)")
    epochs: int = Field(1000, ge=3, le=5000, description="epochs per run (paper: 1000)")
    lr: float = Field(0.01, gt=0, le=1, description="constant SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    batch_size: int = Field(128, ge=2, le=12000, description="mini-batch size")
    nc_points: int = Field(30, ge=3, le=1000, description="log-spaced epochs with NC metrics")
    n_seeds: int = Field(5, ge=2, le=32, description="independent trainings per (weight decay, init) pair, seeds derived from seed")
    classifier_bias_decay: bool = Field(True, description="weight decay on the classifier's bias too (the authors' code: on every parameter); false exempts it, as Theorem 3 (corrected) needs")


def margin_metrics(X: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.nn.Module], dict[str, float]]:
    """Metric at the measured epochs: ``rho``; the mean ``mu`` and coefficient of variation
    ``sigma/mu`` of the normalised training margins ``m_n = y_n (out_0 - out_1) / rho`` (eval
    mode); and ``rho_eq = mu / M`` with ``M`` the mean of ``m_n^2``, the critical point of the
    rho flow without weight decay (Rangamani et al. 2022, eq. 11): rho grows while it lies
    below ``rho_eq`` and shrinks while above."""

    def metrics(model: torch.nn.Module) -> dict[str, float]:
        m = normalised_margins(model, X, labels)
        mu, M = float(m.mean()), float((m * m).mean())
        return {"rho": float(rho(model)), "rho_eq": mu / M if M > 0 else float("nan"), "margin_mean": mu, "margin_cv": float(m.std()) / mu if mu != 0 else float("inf")}

    return metrics


def wd_time_scales(steps: int, lr: float, momentum: float, weight_decay: float) -> float:
    """How many weight-decay time scales ``(1 - momentum)/(lr wd)`` (in steps) ``steps`` span."""
    return steps * lr * weight_decay / (1.0 - momentum)


def _build(cfg: Config, data: BinaryImages, ctx: RunContext, scale: float, wd: float, seed: int) -> Callable[[list[Any]], Trainer]:
    def build(callbacks: list[Any]) -> Trainer:
        model = seed002_model(scale, channels=cfg.channels, seed=seed, device=ctx.device)
        tc = TrainConfig(epochs=cfg.epochs, loss="mse", lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd, batch_size=cfg.batch_size, seed=seed, nc_points=cfg.nc_points)
        trainer = Trainer(model, (data.X, data.labels), tc, test=(data.X_test, data.labels_test), callbacks=callbacks, exact_bn=True,
                          measure_batch_size=MEASURE_BATCH)
        metrics = margin_metrics(data.X, data.labels)
        # only at the measured epochs: there the trainer holds the exact statistics (elsewhere the lagging running ones)
        trainer.epoch_metrics = lambda net: metrics(net) if trainer.epoch in trainer.nc_epochs else {}
        if not cfg.classifier_bias_decay:
            exempt_from_weight_decay(trainer.optimizer, [model.classifier.bias])
        return trainer

    return build


def _summary(trainer: Trainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    with trainer.measurement_bn():
        margins_final = normalised_margins(trainer.module, trainer.source.X, trainer.source.labels)
    return {"rows": rows, "terminal_epoch": trainer.terminal_epoch, "margins": margins_final.tolist()}


Runs = dict[tuple[float, float], list[dict[str, Any]]]


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    data = binary_fashion_mnist(cfg.classes, cfg.per_class, cfg.test_per_class)
    series = Series(ctx.save_checkpoint, lambda row: ctx.log_metrics(**row), ctx.checkpoint, ctx.progress, min_interval_s=CHECKPOINT_EVERY_S)
    seeds = derived_seeds(cfg.seed, cfg.n_seeds)
    runs: Runs = {}
    for wd in cfg.weight_decays:
        for s in cfg.init_scales:
            runs[(wd, s)] = [series.run(f"wd={wd:g},init={s:g},seed={seed}", _build(cfg, data, ctx, s, wd, seed), _summary) for seed in seeds]
    steps = cfg.epochs * math.ceil(data.X.shape[0] / cfg.batch_size)
    _rho_claims(ctx, cfg, runs, steps)
    _collapse_claims(ctx, cfg, runs)
    _figures(ctx, cfg, runs)


def _measured(run: dict[str, Any], key: str) -> dict[int, float]:
    """``{epoch: value}`` of ``key`` at the log-spaced (NC-measured) epochs of one run."""
    return {int(r["epoch"]): float(r[key]) for r in run["rows"] if "nc1" in r}


def _final(run: dict[str, Any], key: str) -> float:
    """``key`` at the last measured epoch of one run."""
    return _measured(run, key)[max(_measured(run, key))]


def _trend_claim(ctx: RunContext, cfg: Config, id: str, claim: str, source: str, runs: list[dict[str, Any]], key: str, starts: list[int], *, decreasing: bool, reference: str, extra: dict[str, float] | None = None) -> None:
    res = trend_test([_measured(r, key) for r in runs], starts, decreasing=decreasing)
    ctx.claim_test(id, claim, source, test=f"one-sided Kendall's tau per run, Stouffer-combined over {len(res.taus)} runs", statistic=res.statistic, p_value=res.p_value, level=LEVEL,
                   measured={**res.summary(), **(extra or {})}, reason=TREND_REASON.format(n=len(res.taus)) + (f"; {QUICK_REASON}" if cfg.tier == "quick" else ""), reference=reference)


def _rho_eq_side(run: dict[str, Any], above: bool, never: int) -> int:
    """First measured epoch at which rho lies above (``above``) or below its equilibrium
    ``rho_eq = mu/M``, where the theory's rho flow starts shrinking or growing; ``never`` if none."""
    rows = [r for r in run["rows"] if "rho_eq" in r and math.isfinite(float(r["rho_eq"]))]
    return next((int(r["epoch"]) for r in rows if (float(r["rho"]) > float(r["rho_eq"])) == above), never)


def _rho_claims(ctx: RunContext, cfg: Config, runs: Runs, steps: int) -> None:
    small, large = min(cfg.init_scales), max(cfg.init_scales)
    ref = "Kendall's tau of rho against the epoch (no trend = tau 0), from where rho lies on the claimed side of the equilibrium rho_eq = mu/M measured at the same epoch"
    grow, shrink = "without weight decay rho grows from the smallest init", "without weight decay rho shrinks from the largest init"
    if 0.0 in cfg.weight_decays:
        for cid, what, scale, src, above in (("rho-grows-small-init", grow, small, "; Fig 2 bottom left", False), ("rho-shrinks-large-init", shrink, large, "; Fig 2 bottom right", True)):
            rs = runs[(0.0, scale)]
            starts = [_rho_eq_side(r, above, cfg.epochs + 1) for r in rs]
            side = "above" if above else "below"
            claim = f"{what} ({scale:g}): from the first measured epoch with rho {side} its equilibrium rho_eq = mu/M (eq. 11) to the last"
            _trend_claim(ctx, cfg, cid, claim, SOURCE + src, rs, "rho", starts, decreasing=above, reference=ref, extra={"median_start_epoch": float(np.median(starts))})
    else:
        for cid, what in (("rho-grows-small-init", grow), ("rho-shrinks-large-init", shrink)):
            ctx.claim_not_applicable(cid, what, SOURCE + "; Fig 2", why="weight_decays has no 0 (no run without weight decay)", reference="Kendall's tau of rho against the epoch (no trend = tau 0)")
    _init_imprint_claim(ctx, cfg, runs, steps)


def init_gap(small: list[dict[str, Any]], large: list[dict[str, Any]]) -> list[dict[int, float]]:
    """The init's imprint on rho, per seed: ``{epoch: |log rho(large init) - log rho(small init)|}``
    at the measured epochs of both runs (the two runs of a seed share data and data order)."""
    out = []
    for lo, hi in zip(small, large):
        a, b = _measured(lo, "rho"), _measured(hi, "rho")
        out.append({e: abs(math.log(b[e]) - math.log(a[e])) for e in sorted(set(a) & set(b))})
    return out


def gap_contrast(with_wd: list[dict[int, float]], without_wd: list[dict[int, float]]) -> list[dict[int, float]]:
    """Per seed, ``{epoch: gap with weight decay - the same seed's gap without}`` (:func:`init_gap`):
    zero at every epoch when weight decay leaves the init's imprint as it is."""
    return [{e: g[e] - g0[e] for e in sorted(set(g) & set(g0))} for g, g0 in zip(with_wd, without_wd)]


def _init_imprint_claim(ctx: RunContext, cfg: Config, runs: Runs, steps: int) -> None:
    """Rangamani et al. 2022, Sec 7 (Fig 2 top row, Fig 14): with weight decay the final rho is nearly
    independent of the init. After at least ``MIN_TIME_SCALES`` weight-decay time scales this is tested
    at the endpoint (TOST); with fewer, where the init is still being forgotten, the direction of
    the forgetting is tested against the runs without weight decay (:func:`gap_contrast`)."""
    small, large = min(cfg.init_scales), max(cfg.init_scales)
    wd = max(cfg.weight_decays)
    cid, src = "rho-init-independent-wd", SOURCE + "; Fig 2 top row, Fig 14"
    scales = wd_time_scales(steps, cfg.lr, cfg.momentum, wd)
    endpoint = f"with weight decay {wd:g} the final rho is nearly independent of the init: mean over seeds of log rho_final(init {large:g}) - log rho_final(init {small:g}) lies within +-log 2"
    if wd == 0.0 or (scales < MIN_TIME_SCALES and (0.0 not in cfg.weight_decays or scales < MIN_CONTRAST_TIME_SCALES)):
        why = ("no run with weight decay" if wd == 0.0 else
               f"training spans {scales:.1f} weight-decay time scales (1 - momentum)/(lr wd): fewer than {MIN_TIME_SCALES:g} for the endpoint test, and "
               + ("no run without weight decay to contrast the forgetting with" if 0.0 not in cfg.weight_decays else f"fewer than {MIN_CONTRAST_TIME_SCALES:g} for weight decay to act at all"))
        ctx.claim_not_applicable(cid, endpoint, src, why=why, reference="the final rho of the same seeds trained from the smallest init")
        return
    if scales >= MIN_TIME_SCALES:
        d = [math.log(_final(hi, "rho")) - math.log(_final(lo, "rho")) for hi, lo in zip(runs[(wd, large)], runs[(wd, small)])]
        mean, p = equivalence_test(d, math.log(2.0))
        ctx.claim_test(
            cid, endpoint, src, test=f"TOST (two one-sided t-tests) over {len(d)} seeds, margin log 2", statistic=mean, p_value=p, level=EQUIVALENCE_LEVEL,
            measured={"mean_log_ratio": mean, "max_abs_log_ratio": float(np.max(np.abs(d))), "time_scales": scales},
            reason=(f"'nearly independent' read as within a factor 2 (Fig 14: rho from inits 0.01, 1 and 5 end 'mostly similar', while without weight decay they differ "
                    f"by a factor ~20 here); level 1e-3 bounds a false pass; after {scales:.0f} time scales the init's memory is below e^-10, so the per-seed log ratios "
                    "scatter around 0 by the seed noise only and the t-test clears the margin"),
            reference="the final rho of the same seeds trained from the smallest init",
        )
        return
    gaps = init_gap(runs[(wd, small)], runs[(wd, large)])
    gaps0 = init_gap(runs[(0.0, small)], runs[(0.0, large)])
    contrast = gap_contrast(gaps, gaps0)
    claim = (f"with weight decay {wd:g} the init's imprint on rho fades, and faster than without weight decay: per seed, the gap |log rho(init {large:g}) - "
             f"log rho(init {small:g})| with weight decay minus the same seed's gap without it decreases over the measured epochs (the paper's 'final rho nearly "
             f"independent of the init' is where this forgetting ends; training here spans {scales:.1f} weight-decay time scales, fewer than the "
             f"{MIN_TIME_SCALES:g} its endpoint test needs)")
    res = trend_test(contrast, [min(c, default=0) for c in contrast], decreasing=True)
    ctx.claim_test(
        cid, claim, src, test=f"one-sided Kendall's tau per seed of gap(wd {wd:g}) - gap(wd 0) against the epoch, Stouffer-combined over {len(res.taus)} seeds",
        statistic=res.statistic, p_value=res.p_value, level=LEVEL,
        measured={**res.summary(), "median_final_gap_wd": float(np.median([g[max(g)] for g in gaps if g])), "median_final_gap_no_wd": float(np.median([g[max(g)] for g in gaps0 if g])),
                  "time_scales": scales},
        reason=CONTRAST_REASON.format(n=len(res.taus)) + (f"; {QUICK_REASON}" if cfg.tier == "quick" else ""),
        reference="the same seeds' gap between the two inits trained without weight decay (same initial weights and data; null: weight decay leaves the gap as it is, tau 0)",
    )


def _collapse_claims(ctx: RunContext, cfg: Config, runs: Runs) -> None:
    wd = max(cfg.weight_decays)
    src = SOURCE + "; Theorem 3"
    claims = {
        "margins-concentrate-wd": ("margin_cv", "the normalised training margins concentrate: sigma/mu decreases", "Kendall's tau of sigma/mu of the margins against the epoch (no trend = tau 0)", "; Fig 3-4"),
        "nc1-decreases-wd": ("nc1", "NC1 = Tr(Sigma_W Sigma_B^+)/C decreases", "Kendall's tau of NC1 against the epoch (no trend = tau 0)", "; Fig 6"),
        "nc2-classifier": ("nc2_equiangular_weights", "the classifier rows become antipodal (NC2 for two classes): |cos(w_0, w_1) + 1| decreases",
                           "Kendall's tau of |cos(w_0, w_1) + 1| (uncentred rows) against the epoch (no trend = tau 0)", "; Fig 6"),
    }
    pooled = [r for s in cfg.init_scales for r in runs[(wd, s)]]
    tested = [r for r in pooled if r["terminal_epoch"] is not None]
    for cid, (key, what, ref, fig) in claims.items():
        claim = f"with weight decay {wd:g}, from each run's terminal-phase onset (zero training error, all margins positive): {what}, over all inits and seeds"
        if wd == 0.0 or len(tested) < len(pooled) / 2:
            why = "no run with weight decay" if wd == 0.0 else f"only {len(tested)} of {len(pooled)} runs reached zero training error (quasi-interpolation, the theorem's hypothesis)"
            ctx.claim_not_applicable(cid, claim, src, why=why, reference=ref)
        elif cid == "nc2-classifier" and cfg.classifier_bias_decay:
            ctx.claim_not_applicable(cid, claim, src, reference=ref,
                                     why=("Theorem 3 (corrected) predicts antipodal rows w_0 = -w_1 only with an unpenalised last-layer bias, and classifier_bias_decay=true "
                                          "(the authors' protocol) penalises it, so the rows keep a common component along the global feature mean; "
                                          "set classifier_bias_decay=false to test it"))
        else:
            _trend_claim(ctx, cfg, cid, claim, src + fig, tested, key, [int(r["terminal_epoch"]) for r in tested], decreasing=True, reference=ref)


def _figures(ctx: RunContext, cfg: Config, runs: Runs) -> None:
    wds = cfg.weight_decays
    fig, axes = plt.subplots(1, len(wds), figsize=(5 * len(wds), 3.6), squeeze=False)
    for ax, wd in zip(axes[0], wds):
        for i, s in enumerate(cfg.init_scales):
            for j, r in enumerate(runs[(wd, s)]):
                pts = sorted(_measured(r, "rho").items())
                ax.loglog(*zip(*pts), color=f"C{i}", alpha=0.6, label=f"init {s:g}" if j == 0 else None)
        ax.set(title=f"weight decay {wd:g}", xlabel="epoch", ylabel="rho")
        ax.legend()
    ctx.save_figure(fig, "rho", claims=["rho-grows-small-init", "rho-shrinks-large-init", "rho-init-independent-wd"], paper_figure="Rangamani et al. 2022, Fig. 2 and Figs 14, 15",
                    caption="The product norm rho against the epoch, one line per seed, coloured by initialisation scale; one panel per weight decay.")

    fig, axes = plt.subplots(1, len(wds), figsize=(5 * len(wds), 3.6), squeeze=False)
    for ax, wd in zip(axes[0], wds):
        for s in cfg.init_scales:
            ax.hist(np.concatenate([r["margins"] for r in runs[(wd, s)]]), bins=40, alpha=0.5, label=f"init {s:g}")
        ax.set(title=f"final normalised margins, wd {wd:g}", xlabel="y f / rho")
        ax.legend()
    ctx.save_figure(fig, "margins", claims=["margins-concentrate-wd"], paper_figure="Rangamani et al. 2022, Figs 3, 4",
                    caption="Histograms of the final normalised training margins y f / rho over all seeds, by initialisation scale; one panel per weight decay.")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, ((wd, s), rs) in enumerate(runs.items()):
        for j, r in enumerate(rs):
            pts = sorted(_measured(r, "nc1").items())
            ax.loglog(*zip(*pts), color=f"C{i}", alpha=0.6, label=f"wd {wd:g}, init {s:g}" if j == 0 else None)
    ax.set(xlabel="epoch", ylabel="NC1")
    ax.legend()
    ctx.save_figure(fig, "nc1", claims=["nc1-decreases-wd"], paper_figure="Rangamani et al. 2022, Fig. 6 (NC1)",
                    caption="NC1 (within-class variability) against the epoch (log-log), one line per seed, by weight decay and initialisation.")

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, ((wd, s), rs) in enumerate(runs.items()):
        last = [next(x for x in reversed(r["rows"]) if "test_error" in x) for r in rs]
        ax.scatter([1.0 / float(x["rho"]) for x in last], [1.0 - float(x["test_error"]) for x in last], color=f"C{i}", label=f"wd {wd:g}, init {s:g}")
    ax.set(xlabel="1 / rho", ylabel="test accuracy")
    ax.legend()
    ctx.save_figure(fig, "inverse_rho_vs_test_accuracy", paper_figure="Rangamani et al. 2022, Fig. 12",
                    caption="Test accuracy against 1/rho at the last epoch, one point per seed (no claim: shown for comparison with the paper's scatter).")
    key = (0.01, 0.01)
    if key in runs:
        last = [next(x for x in reversed(r["rows"]) if "test_error" in x) for r in runs[key]]
        ctx.paper_value("mean test accuracy, weight decay 0.01, init 0.01", paper=0.9371, source="Rangamani et al. 2022, Appendix (Fig. 16 text): 93.71 % over 10 runs",
                        ours=float(np.mean([1.0 - float(x["test_error"]) for x in last])),
                        differs=f"Fashion-MNIST classes {cfg.classes} with {cfg.per_class} images per class (paper: two CIFAR-10 classes, 10000 images), {cfg.epochs} epochs (paper: 1000), {len(runs[key])} seeds (paper: 10)")


EXPERIMENT = Experiment(
    name="square-loss-cnn",
    summary="Rangamani et al. 2021 CNN with the square loss over several seeds: rho grows from small and shrinks from large inits without weight decay; with it the final rho forgets the init, margins concentrate, NC1 and NC2 decrease",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"tier": "quick"},
    question="Trained with the square loss, does a small CNN's product norm rho grow from small and shrink from large initialisations, and does weight decay make the final rho and margins forget the initialisation while NC1 and NC2 set in?",
    theory=("theory/square-loss.md", "theory/neural-collapse.md"),
)
