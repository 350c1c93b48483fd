"""square-loss-cnn: the seed-002 network trained with the square loss from several init scales,
with and without weight decay; rho, margins, and neural collapse.

Protocol: spec/square_loss_and_ulpm.md (seed 002, experiments), implemented in
:mod:`collapselab.train.protocols`; two Fashion-MNIST classes stand in for CIFAR-10 classes 1, 2.
Conventions: MSE is the mean over batch and outputs (PyTorch ``MSELoss``); ``weight_decay`` is
PyTorch's (the paper's lambda = wd/2 on the mean loss).

Claims (Rangamani et al. 2022, Sec 7 and Fig 2-3):
- with weight decay the final rho depends less on the init scale: the spread
  ``std_s log rho_final(s)`` is smaller with the largest weight decay than without;
- without weight decay rho grows from the smallest init and shrinks from the largest. rho is
  compared between the end of training and the first epoch at which the BN running statistics
  have forgotten their initial value (:func:`~collapselab.train.protocols.bn_settled_epoch`);
  before that epoch the running variances still hold their initial 1, so rho is not yet the
  network's (the paper's curves start after many more steps);
- with weight decay NC1 decreases over training for every init scale (Theorem 3 predicts
  collapse for quasi-interpolating solutions under weight decay).

The quick variant trains 128 images for 30 epochs with batch 16 and weight decay 0.2: the
weight-decay time scale is ``(1 - momentum) / (lr wd)`` steps, 1000 steps at the paper's wd 0.01
and 50 steps at 0.2, so the quick run's 240 steps span about 5 time scales (the paper's 1000
epochs of 94 steps span about 90). The full variant (the paper's values, 1000 epochs) is for a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import Field  # noqa: E402

from ..train import Series, TrainConfig, Trainer  # noqa: E402
from ..train.protocols import BinaryImages, binary_fashion_mnist, bn_settled_epoch, normalised_margins, rho_metrics, seed002_model  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run"]

SOURCE = "Rangamani et al. 2022 (seed 002), Sec 7, Figs 2-3; spec/square_loss_and_ulpm.md (seed 002 experiments)"


class Config(ExperimentConfig):
    classes: list[int] = Field([0, 2], min_length=2, max_length=2, description="the two Fashion-MNIST classes (T-shirt, pullover)")
    per_class: int = Field(6000, ge=1, description="training images per class (6000 = all)")
    test_per_class: int = Field(1000, ge=1, description="test images per class")
    channels: list[int] = Field([32, 64, 128], min_length=3, max_length=3, description="conv widths (the paper's 32, 64, 128)")
    init_scales: list[float] = Field([0.01, 0.1, 1.0, 5.0], min_length=2, description="Frobenius norm of every conv weight at init")
    weight_decays: list[float] = Field([0.0, 0.01], min_length=1, description="PyTorch weight decay values (0 and the paper's 0.01)")
    epochs: int = Field(1000, ge=1, description="epochs per run (paper: 1000)")
    lr: float = Field(0.01, gt=0, description="constant SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    batch_size: int = Field(128, ge=1, description="mini-batch size")
    nc_points: int = Field(30, ge=1, description="log-spaced epochs with NC metrics")


def _build(cfg: Config, data: BinaryImages, ctx: RunContext, scale: float, wd: float, index: int) -> Callable[[list[Any]], Trainer]:
    def build(callbacks: list[Any]) -> Trainer:
        model = seed002_model(scale, channels=cfg.channels, seed=cfg.seed + index, device=ctx.device)
        tc = TrainConfig(epochs=cfg.epochs, loss="mse", lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd, batch_size=cfg.batch_size, seed=cfg.seed, nc_points=cfg.nc_points)
        return Trainer(model, (data.X, data.labels), tc, test=(data.X_test, data.labels_test), epoch_metrics=rho_metrics, callbacks=callbacks)

    return build


def _summarise(data: BinaryImages) -> Callable[[Trainer, list[dict[str, Any]]], dict[str, Any]]:
    def summarise(trainer: Trainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"rows": rows, "margins": normalised_margins(trainer.module, data.X, data.labels)}

    return summarise


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    data = binary_fashion_mnist(cfg.classes, cfg.per_class, cfg.test_per_class)
    series = Series(ctx.save_checkpoint, lambda row: ctx.log_metrics(**row), ctx.checkpoint, ctx.progress)
    results: dict[tuple[float, float], dict[str, Any]] = {}
    for wd in cfg.weight_decays:
        for i, s in enumerate(cfg.init_scales):
            results[(wd, s)] = series.run(f"wd={wd:g},init={s:g}", _build(cfg, data, ctx, s, wd, i), _summarise(data))

    settled = bn_settled_epoch(data.X.shape[0], cfg.batch_size, cfg.epochs)
    rho_at = {k: [float(r["rho"]) for r in v["rows"]] for k, v in results.items()}
    final = {k: r[-1] for k, r in rho_at.items()}
    small, large = min(cfg.init_scales), max(cfg.init_scales)
    wd_max = max(cfg.weight_decays)

    def spread(wd: float) -> float:
        return float(np.std([math.log(final[(wd, s)]) for s in cfg.init_scales]))

    if 0.0 in cfg.weight_decays and wd_max > 0:
        ctx.claim_at_most("rho-spread-wd", f"with weight decay {wd_max:g} the final rho spread across init scales (std of log rho) is smaller than without", SOURCE + "; Fig 2 top row", measured=spread(wd_max), bound=spread(0.0))
        start = settled - 1
        ctx.claim_at_least("rho-grows-small-init", f"without weight decay rho grows from the smallest init ({small:g}): rho_final / rho(epoch {settled})", SOURCE + "; Fig 2 bottom left", measured=final[(0.0, small)] / rho_at[(0.0, small)][start], bound=1.0)
        ctx.claim_at_most("rho-shrinks-large-init", f"without weight decay rho shrinks from the largest init ({large:g}): rho_final / rho(epoch {settled})", SOURCE + "; Fig 2 bottom right", measured=final[(0.0, large)] / rho_at[(0.0, large)][start], bound=1.0)
    if wd_max > 0:
        ratios = []
        for s in cfg.init_scales:
            nc1 = [float(r["nc1"]) for r in results[(wd_max, s)]["rows"] if "nc1" in r]
            ratios.append(nc1[-1] / nc1[0])
        ctx.claim_at_most("nc1-decreases-wd", f"with weight decay {wd_max:g} NC1 decreases over training for every init scale: max over inits of NC1_last / NC1_first", SOURCE + "; Theorem 3; spec neural collapse under weight decay", measured=max(ratios), bound=1.0)
    _figures(ctx, cfg, results, rho_at)


def _figures(ctx: RunContext, cfg: Config, results: dict[tuple[float, float], dict[str, Any]], rho_at: dict[tuple[float, float], list[float]]) -> None:
    wds = cfg.weight_decays
    fig, axes = plt.subplots(1, len(wds), figsize=(5 * len(wds), 3.6), squeeze=False)
    for ax, wd in zip(axes[0], wds):
        for s in cfg.init_scales:
            ax.semilogy(range(1, len(rho_at[(wd, s)]) + 1), rho_at[(wd, s)], label=f"init {s:g}")
        ax.set(title=f"weight decay {wd:g}", xlabel="epoch", ylabel="rho")
        ax.legend(fontsize=7)
    ctx.save_figure(fig, "rho")

    fig, axes = plt.subplots(1, len(wds), figsize=(5 * len(wds), 3.6), squeeze=False)
    for ax, wd in zip(axes[0], wds):
        for s in cfg.init_scales:
            ax.hist(results[(wd, s)]["margins"].numpy(), bins=40, alpha=0.5, label=f"init {s:g}")
        ax.set(title=f"final normalised margins, wd {wd:g}", xlabel="y f / rho")
        ax.legend(fontsize=7)
    ctx.save_figure(fig, "margins")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for (wd, s), res in results.items():
        pts = [(int(r["epoch"]), float(r["nc1"])) for r in res["rows"] if "nc1" in r]
        ax.loglog(*zip(*pts), marker=".", label=f"wd {wd:g}, init {s:g}")
    ax.set(xlabel="epoch", ylabel="NC1")
    ax.legend(fontsize=6)
    ctx.save_figure(fig, "nc1")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for (wd, s), res in results.items():
        last = res["rows"][-1]
        ax.scatter(1.0 / float(last["rho"]), 1.0 - float(last["test_error"]), label=f"wd {wd:g}, init {s:g}")
    ax.set(xlabel="1 / rho", ylabel="test accuracy")
    ax.legend(fontsize=6)
    ctx.save_figure(fig, "inverse_rho_vs_test_accuracy")


EXPERIMENT = Experiment(
    name="square-loss-cnn",
    summary="seed-002 CNN with the square loss: weight decay makes the final rho init-independent, rho grows from small and shrinks from large inits, NC1 decreases",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"per_class": 64, "test_per_class": 64, "channels": [8, 16, 32], "epochs": 30, "batch_size": 16, "weight_decays": [0.0, 0.2], "nc_points": 4},
)
