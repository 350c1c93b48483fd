"""ulpm-vgg: the ULPM quantities (seed 004, Fig 3) on the features of VGG-13 trained on
Fashion-MNIST with cross-entropy and no weight decay.

Protocol: Ji et al. 2022 (seed 004), Sec 4 "Realistic training"; spec/square_loss_and_ulpm.md
(seed 004 experiments). VGG-13 (:class:`collapselab.train.VGG`, 28x28 inputs zero-padded to 32,
batch norm), mean cross-entropy, SGD with momentum, constant learning rate, weight decay 0,
inputs standardised. The quantities of spec/neural_collapse.md "ULPM quantities", measured on
the training set by :mod:`collapselab.collapse` at log-spaced epochs:

(1) Std/Avg of the centred class-mean norms and of the classifier row norms
    (``nc2_equinorm_means``, ``nc2_equinorm_weights``); (2) the within-class variation
    (``ulpm_within_class_variation``); (3) the mean |cos + 1/(K-1)| of centred means and of
    classifier rows (``nc2_equiangular_means``, ``nc2_equiangular_weights``); (4) the distance
    between normalised classifier rows and centred means (``ulpm_self_duality``); and the NC
    margin ``q_min`` with its Lemma 3.1 bound ``(|W|^2 + |H|^2) / (2 (K-1) sqrt(n))``.

Claims: training error reaches zero; each of the six quantities is smaller at the end than at
the first measurement after the terminal phase begins (the paper tracks them "during the
terminal phase" and finds they "either decrease or stay in small values"; before it, values
of the random initialisation can be transiently small); and, a
theorem rather than an observation, ``q_min <= bound`` at every measured epoch (Lemma 3.1,
which holds for any W and balanced H). The quick variant trains a 1/16-width VGG-13 on 20
images per class; the full variant (all 60000 images, 500 epochs) is for a GPU. Without a measurement inside the
terminal phase before the last epoch the decrease claims fail and say so.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..core.data import load_fashion_mnist  # noqa: E402
from ..train import VGG, Series, TrainConfig, Trainer, as_images  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run"]

SOURCE = "Ji et al. 2022 (seed 004), Sec 4, Fig 3 and Lemma 3.1; spec/neural_collapse.md ULPM quantities"

QUANTITIES = {
    "nc2_equinorm_means": "Std/Avg of centred class-mean norms",
    "nc2_equinorm_weights": "Std/Avg of classifier norms",
    "ulpm_within_class_variation": "within-class variation",
    "nc2_equiangular_means": "Avg |cos + 1/(K-1)| of centred means",
    "nc2_equiangular_weights": "Avg |cos + 1/(K-1)| of classifier rows",
    "ulpm_self_duality": "distance of normalised classifier and centred means",
}


class Config(ExperimentConfig):
    per_class: int = Field(6000, ge=1, description="training images per class (balanced; 6000 = all)")
    width: float = Field(1.0, gt=0, description="VGG-13 channel multiplier (1 = 64..512)")
    batch_norm: bool = Field(True, description="batch norm after every convolution")
    epochs: int = Field(500, ge=2, description="epochs (paper: 500 and more)")
    lr: float = Field(0.01, gt=0, description="constant SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    batch_size: int = Field(128, ge=1, description="mini-batch size")
    nc_points: int = Field(40, ge=2, description="log-spaced epochs with measurements")


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    X, labels, _ = as_images(load_fashion_mnist("train", limit_per_class=cfg.per_class), normalise="standardise")
    series = Series(ctx.save_checkpoint, lambda row: ctx.log_metrics(**row), ctx.checkpoint, ctx.progress)

    def build(callbacks: list[Any]) -> Trainer:
        torch.manual_seed(cfg.seed)
        model = VGG(13, in_channels=1, num_classes=10, width=cfg.width, batch_norm=cfg.batch_norm, input_size=28).to(ctx.device)
        tc = TrainConfig(epochs=cfg.epochs, loss="cross_entropy", lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0, batch_size=cfg.batch_size, seed=cfg.seed, nc_points=cfg.nc_points)
        return Trainer(model, (X, labels), tc, num_classes=10, callbacks=callbacks)

    res = series.run("vgg13", build, lambda trainer, rows: {"rows": rows, "terminal_epoch": trainer.terminal_epoch})
    rows = [r for r in res["rows"] if "nc1" in r]
    tpt = res["terminal_epoch"]
    ctx.claim_true("terminal-phase", "the training error reaches zero (first zero-error epoch)", SOURCE, passed=tpt is not None, measured=tpt, expected="an epoch")
    # the paper tracks the quantities during the terminal phase: compare the last measurement with
    # the first one at or after its onset (before it, random-init values can be transiently small)
    ref = next((r for r in rows[:-1] if tpt is not None and int(r["epoch"]) >= tpt), None)
    for key, what in QUANTITIES.items():
        if ref is None:
            ctx.claim_true(f"{key}-decreases", f"{what}: decreases during the terminal phase", SOURCE + " Fig 3", passed=False, measured="no measurement inside the terminal phase before the last epoch; train longer or raise nc_points")
            continue
        ctx.claim_at_most(f"{key}-decreases", f"{what}: the last value is below its value at the start of the terminal phase (epoch {ref['epoch']}, {float(ref[key]):.4g})", SOURCE + " Fig 3", measured=float(rows[-1][key]), bound=float(ref[key]))
    ratio = max(float(r["nc_margin"]) / float(r["nc_margin_bound"]) for r in rows)
    ctx.claim_at_most("nc-margin-bound", "Lemma 3.1: the NC margin q_min never exceeds (|W|^2 + |H|^2) / (2 (K-1) sqrt n); max over epochs of q_min / bound", SOURCE, measured=ratio, bound=1.0)

    epochs = np.array([int(r["epoch"]) for r in rows], dtype=float)
    loglog_t = np.log(np.log(epochs + np.e))  # the paper's log(log t) axis, shifted so t = 1 is finite
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = [("nc2_equinorm_means", "nc2_equinorm_weights"), ("ulpm_within_class_variation",), ("nc2_equiangular_means", "nc2_equiangular_weights"), ("ulpm_self_duality",)]
    for ax, keys in zip(axes, panels):
        for key in keys:
            ax.semilogy(loglog_t, [max(float(r[key]), 1e-12) for r in rows], marker=".", label=QUANTITIES[key])
        ax.set(xlabel="log(log(e + epoch))")
        ax.legend(fontsize=6)
    ctx.save_figure(fig, "ulpm_quantities")


EXPERIMENT = Experiment(
    name="ulpm-vgg",
    summary="VGG-13 on Fashion-MNIST without weight decay: the ULPM collapse quantities decrease and the NC margin obeys Lemma 3.1",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"per_class": 20, "width": 0.0625, "epochs": 120, "lr": 0.05, "batch_size": 50, "nc_points": 18},
)
