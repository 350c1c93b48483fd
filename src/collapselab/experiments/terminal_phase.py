"""terminal-phase: neural collapse (NC1-NC4) through the terminal phase of training, PHD protocol.

Protocol (Papyan, Han, Donoho 2020 (PHD), Sec 3 and Figs 2-7; Han, Papyan, Donoho 2022 (HPD)
for the MSE loss): a balanced subset of Fashion-MNIST (the first ``per_class`` images of each
class), inputs standardised by the training set's global mean and standard deviation, no
augmentation; SGD momentum 0.9, weight decay 5e-4, batch 128, learning rate divided by 10 at
epochs/3 and 2 epochs/3; cross-entropy and MSE on one-hot targets (PyTorch ``MSELoss``: mean
over batch and outputs); the canonical NC metrics (:mod:`collapselab.collapse`) of the
classifier's input features on the training set at log-spaced epochs.

Every loss is trained from ``n_seeds`` seeds derived from the run's seed. Claims, per loss:

- the training error reaches zero in every seed (the terminal phase begins; PHD Sec 3);
- NC1 (``Tr(Sigma_W Sigma_B^+)/C``), the ETF error of the centred class means (NC2) and the
  distance between the normalised classifier and centred means (NC3) decrease *during the
  terminal phase*: Kendall's tau of each seed's series against the epoch, over the measured
  epochs from that seed's first zero-error epoch on, combined over seeds by Stouffer's method
  (one-sided, level 1e-3). A series that does not change fails;
- NC4: the classifier agrees with the nearest-class-centre rule on every training sample at
  the end (PHD Fig 7: the mismatch converges to 0), in every seed.

Tiers (``--set tier=...``): ``full`` is PHD's protocol (VGG-11 with batch norm on all 60000
images, 350 epochs, 3 seeds x 2 losses = 6 trainings; estimated, not measured here: about
10 s per epoch of 469 steps on one current GPU, so about 6 GPU-hours in all). PHD pick the
learning rate per network and data set by a sweep; with the MSE loss the full tier uses
``lr_mse = 0.01`` instead of 0.05: PyTorch's ``MSELoss`` puts the curvature
``(2/C) lambda_max(E[h h^T])`` on the classifier (``h`` the classifier's input, bias included),
measured 129-130 at initialisation for the width-1 VGG-11 on 128 standardised Fashion-MNIST
images (512 post-ReLU, max-pooled features of mean 1.1), so lr 0.05 gives ``lr lambda = 6.5``,
beyond the heavy-ball stability edge ``2 (1 + momentum) = 3.8``: the loss climbs from the first
epoch (a 3-epoch CPU run: 2.1, then 123). At 0.01 it is 1.3. Cross-entropy's curvature is
bounded by the softmax's, so it keeps 0.05. ``middle`` keeps PHD's learning rate 0.05 for both
losses (the 1/8-width network's 64 features give ``lr lambda = 0.8``), weight decay, batch,
losses and step schedule for 350 epochs on 12 images per class (120 images: one batch of 128
holds them all, so an epoch is one step) with a 1/8-width VGG-11, 2 seeds (about 5
CPU-minutes for the 4 trainings). ``quick`` (``--quick``) trains an MLP (784-128-128-10 with
batch norm) on 10 images per class for 150 epochs with weight decay 0.05, in full batch (one
deterministic heavy-ball step per epoch): the weight-decay time scale ``(1 - momentum)/(lr wd)``
is 4000 steps at PHD's 5e-4, longer than the whole quick run (150 steps); 0.05 makes it 40
steps, so the run spans 3.75 time scales. Full batch removes the mini-batch noise that, with
20-image batches, made the slow MSE NC2 trend too weak for level 1e-3 at some seeds, and costs
no more time per run (the per-step cost of the MLP is overhead, not arithmetic).

Every tier measures the eval-mode network with exact batch-norm statistics: before each
measurement the BN running statistics are recomputed on the training set with the current
weights (``Trainer(exact_bn=True)``, "precise BN": one training-mode pass when the training set
fits one batch of ``MEASURE_BATCH`` images, as in the quick and middle tiers; layer by layer
over the full tier's 1024-image batches), so every tier measures exactly the training-mode
network applied to the whole training set, and restored afterwards, so training is unchanged.
The running averages over past mini-batches of past weights lag and, with small batches, carry
their noise into every NC metric.
"""

from __future__ import annotations

from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..core.data import load_fashion_mnist  # noqa: E402
from ..train import MLP, Series, TrainConfig, Trainer, as_images, make_model  # noqa: E402
from ._base import Experiment, RunContext  # noqa: E402
from ._stats import derived_seeds, onset_trend_reason, trend_test  # noqa: E402
from ._tiers import TieredConfig  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run"]

SOURCE = "Papyan, Han, Donoho 2020 (PHD), Sec 3, Figs 2-7; Han, Papyan, Donoho 2022 (HPD, MSE)"

DECREASING = {"nc1": "NC1 (within-class variability, Tr(Sigma_W Sigma_B^+)/C)", "nc2_etf_error_means": "NC2 (ETF error of the centred class means)", "nc3": "NC3 (distance of normalised classifier and centred means)"}
LEVEL = 1e-3
CHECKPOINT_EVERY_S = 30.0  # a killed run loses at most this much training; per-epoch saves would dominate short epochs
MEASURE_BATCH = 1024  # exact batch-norm statistics in one batch up to this many images (every quick and middle tier)


class Config(TieredConfig):
    TIERS = {
        "middle": {"model": "vgg11", "width": 0.125, "per_class": 12, "n_seeds": 2, "nc_points": 30, "lr_mse": None},
        "quick": {"model": "mlp", "hidden": [128, 128], "per_class": 10, "epochs": 150, "batch_size": 100, "weight_decay": 0.05, "nc_points": 40, "lr_mse": None},
    }

    model: Literal["mlp", "vgg11", "vgg13", "resnet18"] = Field("vgg11", description="network: mlp, vgg11, vgg13 or resnet18")
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier of vgg/resnet (1 = the paper's widths)")
    hidden: list[int] = Field([512, 512], min_length=1, max_length=8, description="hidden widths of the mlp")
    batch_norm: bool = Field(True, description="batch norm in the model")
    per_class: int = Field(6000, ge=2, le=6000, description="training images per class (balanced; 6000 = all)")
    losses: list[Literal["cross_entropy", "mse"]] = Field(["cross_entropy", "mse"], min_length=1, max_length=2, description="losses to train with (cross_entropy, mse)")
    epochs: int = Field(350, ge=3, le=5000, description="epochs (PHD: 350)")
    lr: float = Field(0.05, gt=0, le=10, description="initial learning rate")
    lr_mse: float | None = Field(0.01, gt=0, le=10, description="initial learning rate with the MSE loss (None: lr); 0.01 keeps the width-1 VGG-11 inside the stability edge")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="PyTorch weight decay (PHD: 5e-4)")
    batch_size: int = Field(128, ge=2, le=60000, description="mini-batch size")
    nc_points: int = Field(50, ge=3, le=1000, description="log-spaced epochs with NC metrics (PHD: about 50)")
    n_seeds: int = Field(3, ge=2, le=32, description="independent trainings per loss (seeds derived from seed)")


def _model(cfg: Config) -> torch.nn.Module:
    if cfg.model == "mlp":
        return MLP([784, *cfg.hidden, 10], batch_norm=cfg.batch_norm)
    if cfg.model == "resnet18":
        return make_model("resnet18", in_channels=1, num_classes=10, width=cfg.width, batch_norm=cfg.batch_norm)
    return make_model(cfg.model, in_channels=1, num_classes=10, width=cfg.width, batch_norm=cfg.batch_norm, input_size=28)


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    X, labels, _ = as_images(load_fashion_mnist("train", limit_per_class=cfg.per_class), normalise="standardise")
    if cfg.model == "mlp":
        X = X.flatten(1)
    series = Series(ctx.save_checkpoint, lambda row: ctx.log_metrics(**row), ctx.checkpoint, ctx.progress, min_interval_s=CHECKPOINT_EVERY_S)
    seeds = derived_seeds(cfg.seed, cfg.n_seeds)
    results: dict[str, list[dict[str, Any]]] = {}
    for loss in cfg.losses:
        results[loss] = []
        for seed in seeds:

            def build(callbacks: list[Any], loss: str = loss, seed: int = seed) -> Trainer:
                torch.manual_seed(seed)
                model = _model(cfg).to(ctx.device)
                tc = TrainConfig(epochs=cfg.epochs, loss=loss, lr=cfg.lr_mse if loss == "mse" and cfg.lr_mse is not None else cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, schedule="phd_step", seed=seed, nc_points=cfg.nc_points)
                return Trainer(model, (X, labels), tc, num_classes=10, callbacks=callbacks, exact_bn=True, measure_batch_size=MEASURE_BATCH)

            results[loss].append(series.run(f"{loss},seed={seed}", build, lambda trainer, rows: {"rows": [r for r in rows if "nc1" in r], "terminal_epoch": trainer.terminal_epoch}))
    for loss, runs in results.items():
        _claims(ctx, cfg, loss, runs)
    _figures(ctx, results)


def _claims(ctx: RunContext, cfg: Config, loss: str, runs: list[dict[str, Any]]) -> None:
    n = len(runs)
    onsets = [r["terminal_epoch"] for r in runs]
    reached = [t for t in onsets if t is not None]
    ctx.claim_at_least(
        f"terminal-phase-{loss}", f"{loss}: the training error reaches zero (the terminal phase begins) in every one of the {n} seeds; measured: seeds that reached it",
        SOURCE + "; Sec 3", measured=len(reached), bound=n,
        reason="an over-parametrised network interpolates its training set in every seed (PHD Sec 3, all their runs); one seed that does not is a failure of the protocol",
        reference="the training error counted over the whole training set at every epoch (zero errors out of N)",
    )
    tested = [(r, t) for r, t in zip(runs, onsets) if t is not None]
    reason = onset_trend_reason([[int(row["epoch"]) for row in r["rows"]] for r, _ in tested], [t for _, t in tested])
    for key, what in DECREASING.items():
        cid, claim = f"{key}-decreases-{loss}", f"{loss}: {what} decreases during the terminal phase"
        ref = "Kendall's tau of each seed's series against the epoch (no trend = tau 0)"
        if not tested:
            ctx.claim_not_applicable(cid, claim, SOURCE, why="no seed reached the terminal phase (see the terminal-phase claim)", reference=ref)
            continue
        res = trend_test([{int(row["epoch"]): float(row[key]) for row in r["rows"]} for r, _ in tested], [t for _, t in tested])
        ctx.claim_test(cid, claim, SOURCE + "; Figs 6-7", test=f"one-sided Kendall's tau per seed from its terminal-phase onset, Stouffer-combined over {len(tested)} seeds", statistic=res.statistic, p_value=res.p_value,
                       level=LEVEL, measured=res.summary(), reason=reason, reference=ref)
    last_nc4 = max(float(r["rows"][-1]["nc4"]) for r in runs)
    ctx.claim_at_most(
        f"nc4-vanishes-{loss}", f"{loss}: NC4 at the last epoch: the classifier disagrees with the nearest-class-centre rule on no training sample (max over {n} seeds of the disagreeing fraction)",
        SOURCE + "; Fig 7", measured=last_nc4, bound=0.0,
        reason="NC4 counts disagreements among the N training samples; PHD Fig 7 reports convergence to 0, so one disagreement at the end (1/N) is a failure",
        reference="the nearest-class-centre rule computed from the class means of the same features",
    )


def _figures(ctx: RunContext, results: dict[str, list[dict[str, Any]]]) -> None:
    keys = (*DECREASING, "nc4")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    axes = axes.ravel()
    for i, (loss, runs) in enumerate(results.items()):
        for j, res in enumerate(runs):
            epochs = [int(r["epoch"]) for r in res["rows"]]
            for ax, key in zip(axes, keys):
                ax.loglog(epochs, [max(float(r[key]), 1e-6) for r in res["rows"]], color=f"C{i}", alpha=0.7, label=loss if j == 0 else None)
                if res["terminal_epoch"] is not None:
                    ax.axvline(res["terminal_epoch"], ls=":", color=f"C{i}", alpha=0.4)
    for ax, key in zip(axes, keys):
        ax.set(title=f"{key} (dotted: terminal-phase onset)", xlabel="epoch")
        ax.legend()
    claims = [f"{k}-decreases-{loss}" for loss in results for k in DECREASING] + [f"nc4-vanishes-{loss}" for loss in results]
    ctx.save_figure(fig, "neural_collapse", claims=claims, paper_figure="Papyan, Han & Donoho 2020, Figs 6, 7 (NC1 and NC4); HPD 2022 for MSE",
                    caption="NC1-NC4 against the epoch (log-log), one line per seed and loss; a dotted line marks where that seed reaches zero training error; an NC4 of 0 is drawn at 1e-6.")


EXPERIMENT = Experiment(
    name="terminal-phase",
    summary="PHD protocol on Fashion-MNIST over several seeds: zero training error is reached, NC1-NC3 decrease through the terminal phase, NC4 vanishes, for cross-entropy and MSE",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"tier": "quick"},
    question="Once a classifier reaches zero training error, do its last-layer features keep collapsing (NC1-NC3 decrease, NC4 vanishes), with cross-entropy and with MSE?",
    theory=("theory/neural-collapse.md",),
)
