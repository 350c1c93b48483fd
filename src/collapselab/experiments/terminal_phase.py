"""terminal-phase: neural collapse (NC1-NC4) through the terminal phase of training, PHD protocol.

Protocol (spec/square_loss_and_ulpm.md, "Reference protocol for neural collapse in real
training"; Papyan, Han, Donoho 2020 and Han, Papyan, Donoho 2022): a balanced subset of
Fashion-MNIST (the first ``per_class`` images of each class), inputs standardised by the
training set's global mean and standard deviation, no augmentation; SGD momentum 0.9, weight
decay 5e-4, batch 128, learning rate divided by 10 at epochs/3 and 2 epochs/3; cross-entropy
and MSE on one-hot targets (PyTorch ``MSELoss``: mean over batch and outputs); NC metrics of
the classifier's input features on the training set at about 50 log-spaced epochs
(:mod:`collapselab.collapse`, canonical definitions of spec/neural_collapse.md).

Claims, for each loss: training reaches zero error (the terminal phase begins, at the reported
epoch), and from the first measurement (epoch 1) to the last, NC1 (within-class variability
relative to between-class), the ETF error of the centred class means (NC2), the distance
between the normalised classifier and centred means (NC3) and the disagreement between the
network and the nearest-class-centre rule (NC4) all decrease (PHD Figs 2-7).

The quick variant trains an MLP on 20 images per class for 40 epochs (CPU, seconds); the full
variant trains VGG-11 (BN) on all 60000 images for 350 epochs (a GPU).
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
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run"]

SOURCE = "Papyan, Han, Donoho 2020 (PHD), Figs 2-7; Han, Papyan, Donoho 2022 (MSE); spec/square_loss_and_ulpm.md reference protocol"

TRACKED = ("nc1", "nc2_etf_error_means", "nc3", "nc4")


class Config(ExperimentConfig):
    model: Literal["mlp", "vgg11", "vgg13", "resnet18"] = Field("vgg11", description="network: mlp, vgg11, vgg13 or resnet18")
    width: float = Field(1.0, gt=0, description="channel multiplier of vgg/resnet (1 = the paper's widths)")
    hidden: list[int] = Field([512, 512], min_length=1, description="hidden widths of the mlp")
    batch_norm: bool = Field(True, description="batch norm in the model")
    per_class: int = Field(6000, ge=1, description="training images per class (balanced; 6000 = all)")
    losses: list[Literal["cross_entropy", "mse"]] = Field(["cross_entropy", "mse"], min_length=1, description="losses to train with (cross_entropy, mse)")
    epochs: int = Field(350, ge=3, description="epochs (PHD: 350)")
    lr: float = Field(0.05, gt=0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="PyTorch weight decay")
    batch_size: int = Field(128, ge=1, description="mini-batch size")
    nc_points: int = Field(50, ge=2, description="log-spaced epochs with NC metrics")


def _model(cfg: Config) -> torch.nn.Module:
    if cfg.model == "mlp":
        return MLP([784, *cfg.hidden, 10], batch_norm=cfg.batch_norm)
    if cfg.model == "resnet18":
        return make_model("resnet18", in_channels=1, num_classes=10, width=cfg.width, batch_norm=cfg.batch_norm)
    return make_model(cfg.model, in_channels=1, num_classes=10, width=cfg.width, batch_norm=cfg.batch_norm, input_size=28)


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    train = load_fashion_mnist("train", limit_per_class=cfg.per_class)
    X, labels, _ = as_images(train, normalise="standardise")
    if cfg.model == "mlp":
        X = X.flatten(1)
    series = Series(ctx.save_checkpoint, lambda row: ctx.log_metrics(**row), ctx.checkpoint, ctx.progress)
    results: dict[str, dict[str, Any]] = {}
    for loss in cfg.losses:

        def build(callbacks: list[Any], loss: str = loss) -> Trainer:
            torch.manual_seed(cfg.seed)
            model = _model(cfg).to(ctx.device)
            tc = TrainConfig(epochs=cfg.epochs, loss=loss, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, schedule="phd_step", seed=cfg.seed, nc_points=cfg.nc_points)
            return Trainer(model, (X, labels), tc, num_classes=10, callbacks=callbacks)

        results[loss] = series.run(loss, build, lambda trainer, rows: {"rows": rows, "terminal_epoch": trainer.terminal_epoch})

    for loss, res in results.items():
        tpt = res["terminal_epoch"]
        ctx.claim_true(f"terminal-phase-{loss}", f"{loss}: the training error reaches zero (first zero-error epoch; the terminal phase begins)", SOURCE, passed=tpt is not None, measured=tpt, expected="an epoch")
        measured = [r for r in res["rows"] if "nc1" in r]
        first, last = measured[0], measured[-1]
        for key in TRACKED:
            ctx.claim_at_most(f"{key}-decreases-{loss}", f"{loss}: {key} at the last epoch is below its value at epoch {first['epoch']} ({float(first[key]):.4g})", SOURCE, measured=float(last[key]), bound=float(first[key]))
    _figures(ctx, results)


def _figures(ctx: RunContext, results: dict[str, dict[str, Any]]) -> None:
    fig, axes = plt.subplots(1, len(TRACKED) + 1, figsize=(4 * (len(TRACKED) + 1), 3.4))
    for loss, res in results.items():
        measured = [r for r in res["rows"] if "nc1" in r]
        epochs = [int(r["epoch"]) for r in measured]
        for ax, key in zip(axes, TRACKED):
            ax.loglog(epochs, [max(float(r[key]), 1e-12) for r in measured], marker=".", label=loss)
            ax.set(title=key, xlabel="epoch")
        axes[-1].semilogy([int(r["epoch"]) for r in res["rows"]], [max(float(r["train_error"]), 1e-6) for r in res["rows"]], label=f"{loss} train error")
        if res["terminal_epoch"] is not None:
            axes[-1].axvline(res["terminal_epoch"], ls=":", color="k")
    axes[-1].set(title="training error (dotted: terminal phase)", xlabel="epoch")
    for ax in axes:
        ax.legend(fontsize=7)
    ctx.save_figure(fig, "neural_collapse")


EXPERIMENT = Experiment(
    name="terminal-phase",
    summary="PHD protocol on Fashion-MNIST: zero training error is reached and NC1-NC4 decrease through the terminal phase, for cross-entropy and MSE",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"model": "mlp", "hidden": [128, 128], "per_class": 20, "epochs": 40, "batch_size": 50, "nc_points": 8},
)
