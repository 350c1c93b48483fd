"""Training configuration: loss, optimizer, schedule, batching, tracking, divergence guard.

Conventions (fixed here, quoted by every experiment):

- ``loss="mse"`` is PyTorch's ``MSELoss`` on the targets: the mean over the batch AND the
  outputs, ``(1/(B P)) sum_i |f(x_i) - y_{c_i}|^2`` (PHD 2020 / HPD 2022, and the Rangamani et al. 2021
  authors' code). ``loss="cross_entropy"`` is the batch mean of ``-log softmax(f)_{c_i}``.
- ``weight_decay=wd`` is PyTorch's (adds ``wd * theta`` to the gradient), i.e. the penalty
  ``(wd/2) |theta|^2`` on the mean loss, the toy model's lambda = wd/2 (docs/theory/square-loss.md,
  conventions). On the loss summed over the N samples and P outputs (``N P`` times the MSE
  mean) it is ``lambda = N P wd / 2`` (P = 2 for the Rangamani et al. 2021 binary network).
- ``schedule="phd_step"`` multiplies the learning rate by 0.1 after ``epochs // 3`` and
  ``2 epochs // 3`` epochs (PHD 2020); ``"constant"`` keeps it; ``"cosine"`` anneals to 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.runtime import check_seed
from ..core.validation import Interval, OneOf, check_param

__all__ = ["TrainConfig", "LOSSES", "OPTIMIZERS", "SCHEDULES", "MAX_EPOCHS", "log_spaced_epochs"]

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "phd_step", "cosine")
MAX_EPOCHS = 100_000
"""Largest ``epochs``: about 300 times PHD 2020's 350-epoch protocol; more is a typo, refused before training."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run except the model and the data.

    epochs: number of passes over the training set, at most :data:`MAX_EPOCHS`.
    loss, optimizer, schedule: see the module docstring; lr, momentum (SGD only),
    weight_decay (PyTorch convention).
    batch_size: global mini-batch size (split over processes under DDP); ``None`` = full batch.
    shuffle: draw a new order every epoch (seeded); False keeps the data order.
    seed: seeds the shuffle generator, in ``[0, 2^63 - 1]`` (model initialisation is the caller's business).
    nc_points: number of log-spaced epochs at which the NC metrics are measured on the training
    set (PHD measure about 50); 0 turns measurement off. Epoch 1 and the last epoch are always in.
    max_loss_ratio: a batch loss above ``max_loss_ratio`` times the first batch loss (or NaN/Inf)
    stops training with :class:`~collapselab.core.errors.DivergenceError`.
    """

    epochs: int
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "constant"
    batch_size: int | None = 128
    shuffle: bool = True
    seed: int = 0
    nc_points: int = 50
    max_loss_ratio: float = 1e6

    def __post_init__(self) -> None:
        where = "TrainConfig"
        check_param("epochs", self.epochs, Interval(int, 1, MAX_EPOCHS), where)
        check_param("loss", self.loss, OneOf(LOSSES), where)
        check_param("optimizer", self.optimizer, OneOf(OPTIMIZERS), where)
        check_param("schedule", self.schedule, OneOf(SCHEDULES), where)
        check_param("lr", self.lr, Interval(float, 0.0, closed="right"), where)
        check_param("momentum", self.momentum, Interval(float, 0.0, 1.0, closed="left"), where)
        check_param("weight_decay", self.weight_decay, Interval(float, 0.0), where)
        if self.batch_size is not None:
            check_param("batch_size", self.batch_size, Interval(int, 1), where)
        check_param("nc_points", self.nc_points, Interval(int, 0), where)
        check_seed(self.seed, where)
        check_param("max_loss_ratio", self.max_loss_ratio, Interval(float, 1.0, closed="right"), where)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_spaced_epochs(epochs: int, count: int) -> list[int]:
    """About ``count`` distinct epochs in ``[1, epochs]``, log-spaced, always with 1 and ``epochs``."""
    if count <= 0:
        return []
    # beyond epochs * ln(epochs) points every epoch is in already: the cap changes no result, only the memory
    pts = np.unique(np.rint(np.geomspace(1, epochs, max(min(count, 100 * epochs), 2))).astype(int))
    return sorted({1, int(epochs), *(int(p) for p in pts)})
