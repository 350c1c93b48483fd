"""square-loss-random-labels: the seed-002 network on data with a fraction of random labels.

Protocol: spec/square_loss_and_ulpm.md (seed 002) and the paper's appendix (random-label
experiments): the "3 conv + FC" network with BN, init scale 0.1, weight decay 0.01, square loss,
random-label fractions r in {0.2, ..., 1.0} of the training labels redrawn uniformly
(:func:`collapselab.train.randomise_labels`); here r = 0 is added as the reference. Test labels
are clean. Conventions as in ``square-loss-cnn`` (mean MSE, PyTorch weight decay).

Claims (Rangamani et al. 2022, appendix, Figs 11 and 13): the final rho grows with the fraction
of random labels (the normalised margin 1/rho shrinks), and the test error grows with it. The
quick variant uses weight decay 0.2 for the reason given in ``square-loss-cnn`` (the
weight-decay time scale ``(1 - momentum)/(lr wd)`` steps).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402

from ..train import Series, TrainConfig, Trainer, randomise_labels  # noqa: E402
from ..train.protocols import binary_fashion_mnist, rho_metrics, seed002_model  # noqa: E402
from ._base import Experiment, ExperimentConfig, RunContext  # noqa: E402

__all__ = ["Config", "EXPERIMENT", "run"]

SOURCE = "Rangamani et al. 2022 (seed 002), appendix: random labels, Figs 11, 13; spec/square_loss_and_ulpm.md"


class Config(ExperimentConfig):
    classes: list[int] = Field([0, 2], min_length=2, max_length=2, description="the two Fashion-MNIST classes")
    per_class: int = Field(5000, ge=1, description="training images per class (paper: 10000 in all)")
    test_per_class: int = Field(1000, ge=1, description="test images per class (clean labels)")
    channels: list[int] = Field([32, 64, 128], min_length=3, max_length=3, description="conv widths")
    fractions: list[float] = Field([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], min_length=2, description="fractions of training labels redrawn at random")
    init_scale: float = Field(0.1, gt=0, description="Frobenius norm of every conv weight at init")
    weight_decay: float = Field(0.01, ge=0, description="PyTorch weight decay")
    epochs: int = Field(1000, ge=1, description="epochs per run")
    lr: float = Field(0.01, gt=0, description="constant SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    batch_size: int = Field(128, ge=1, description="mini-batch size")
    nc_points: int = Field(20, ge=1, description="log-spaced epochs with NC metrics and test error")


def run(ctx: RunContext) -> None:
    cfg = ctx.config
    data = binary_fashion_mnist(cfg.classes, cfg.per_class, cfg.test_per_class)
    series = Series(ctx.save_checkpoint, lambda row: ctx.log_metrics(**row), ctx.checkpoint, ctx.progress)
    finals: dict[float, dict[str, Any]] = {}
    for r in cfg.fractions:
        labels = randomise_labels(data.labels, r, 2, generator=torch.Generator().manual_seed(cfg.seed))

        def build(callbacks: list[Any], labels: torch.Tensor = labels) -> Trainer:
            model = seed002_model(cfg.init_scale, channels=cfg.channels, seed=cfg.seed, device=ctx.device)
            tc = TrainConfig(epochs=cfg.epochs, loss="mse", lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=cfg.seed, nc_points=cfg.nc_points)
            return Trainer(model, (data.X, labels), tc, num_classes=2, test=(data.X_test, data.labels_test), epoch_metrics=rho_metrics, callbacks=callbacks)

        finals[r] = series.run(f"random={r:g}", build, lambda trainer, rows: {"rows": rows})
    lo, hi = min(cfg.fractions), max(cfg.fractions)
    last = {r: v["rows"][-1] for r, v in finals.items()}
    ctx.claim_at_least("rho-grows-with-random-labels", f"the final rho with {hi:g} random labels exceeds the final rho with {lo:g} (ratio)", SOURCE + "; Fig 13", measured=float(last[hi]["rho"]) / float(last[lo]["rho"]), bound=1.0)
    ctx.claim_at_least("test-error-grows-with-random-labels", f"the test error with {hi:g} random labels minus the test error with {lo:g}", SOURCE + "; Fig 11", measured=float(last[hi]["test_error"]) - float(last[lo]["test_error"]), bound=0.0)

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r, v in finals.items():
        a.semilogy([int(x["epoch"]) for x in v["rows"]], [float(x["rho"]) for x in v["rows"]], label=f"random {r:g}")
    a.set(xlabel="epoch", ylabel="rho")
    a.legend(fontsize=7)
    rs = sorted(finals)
    b.plot(rs, [1.0 / float(last[r]["rho"]) for r in rs], "o-", label="1 / rho")
    b.set(xlabel="fraction of random labels", ylabel="1 / rho")
    b2 = b.twinx()
    b2.plot(rs, [float(last[r]["test_error"]) for r in rs], "s--", color="C3")
    b2.set_ylabel("test error", color="C3")
    ctx.save_figure(fig, "random_labels")


EXPERIMENT = Experiment(
    name="square-loss-random-labels",
    summary="seed-002 CNN with random labels: the final rho and the test error grow with the fraction of random labels",
    source=SOURCE,
    config=Config,
    run=run,
    quick={"per_class": 64, "test_per_class": 64, "channels": [8, 16, 32], "fractions": [0.0, 1.0], "weight_decay": 0.2, "epochs": 30, "batch_size": 16, "nc_points": 3},
)
