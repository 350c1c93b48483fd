"""The trainer: any ``nn.Module`` on any classification data, with NC tracking and resumable state.

One epoch is a pass over the training set in mini-batches (:mod:`._batches`); after it the
learning-rate schedule steps, and at the log-spaced epochs of ``TrainConfig.nc_points`` the
neural-collapse statistics of the classifier's input features are measured on the whole
training set in eval mode (:func:`.measure.measure_features`; one streaming float64 pass, the
statistics all-reduced across processes). Each epoch yields an :class:`EpochRecord`; callbacks
(metrics logger, checkpoint, TensorBoard) receive it on the main process.

Loss per step (both losses, one formula, exact under DDP): with global batch ``B`` split over
``R`` processes, process ``r`` back-propagates ``(R/B) sum_{i in its share} l_i``; DDP averages
gradients over processes, so the update uses ``(1/B) sum_{i in batch} l_i``, the single-process
mean loss, whatever the shares' sizes (a rank whose share of a short last batch is empty
back-propagates a zero loss, so that it joins the gradient all-reduce).

Training error (and so the terminal phase, "the first epoch of zero training error", PHD 2020)
is counted on the fly during the epoch's training pass, in train mode; the measurement pass
reports the clean eval-mode accuracy beside it.

Resume: :meth:`Trainer.state_dict` holds the model, optimizer, scheduler, the shuffle
generator, the global torch (and CUDA) RNG states and the trainer's counters; loading it into a
trainer built the same way continues bit-identically on the same machine.

Data parallel: build the trainer inside an initialised ``torch.distributed`` process group
(e.g. under ``torchrun``, see :func:`.distributed.init_distributed`); the model is wrapped in
``DistributedDataParallel``, every rank sees its share of each global batch, and loss, error
and NC statistics are summed over ranks. Batch-norm statistics stay per rank (standard DDP)
unless ``sync_batchnorm=True`` converts the BN layers to ``nn.SyncBatchNorm``, whose batch
statistics are those of the global batch, so that a multi-process run equals one process on
the same global batches. torch 2.13 implements SyncBatchNorm for GPUs only: DDP refuses it on
CPU modules ("SyncBatchNorm layers only work with GPU modules") and its forward refuses CPU
tensors, so ``sync_batchnorm`` on CPU ranks raises :class:`ParameterError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..core.data import check_class_labels
from ..core.errors import ConfigError, DivergenceError, ParameterError, ShapeError
from ..core.validation import Interval, check_finite, check_param
from ._batches import EpochBatches, as_source, rank_shard
from ._inputs import check_model_inputs
from .config import TrainConfig, log_spaced_epochs
from .measure import exact_batchnorm_statistics, measure_features
from .models import classifier_of, classifier_weights

__all__ = ["Callback", "EpochRecord", "Trainer"]

log = logging.getLogger("collapselab.train")


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced.

    epoch: 1-based epoch just completed; lr: learning rate used during it; train_loss and
    train_error: means over the epoch's training pass (all processes); metrics: NC report
    scalars and eval loss/accuracy (measured epochs only), test metrics, and the values of the
    trainer's ``epoch_metrics`` function; measured: whether NC metrics were measured;
    terminal_epoch: first epoch with zero training error so far (None before).
    """

    epoch: int
    lr: float
    train_loss: float
    train_error: float
    metrics: dict[str, float] = field(default_factory=dict)
    measured: bool = False
    terminal_epoch: int | None = None

    def row(self) -> dict[str, Any]:
        """Flat metrics.csv row: epoch, lr, train_loss, train_error, terminal_epoch, metrics."""
        return {"epoch": self.epoch, "lr": self.lr, "train_loss": self.train_loss, "train_error": self.train_error, "terminal_epoch": "" if self.terminal_epoch is None else self.terminal_epoch, **self.metrics}

    def postfix(self) -> dict[str, str]:
        """Short progress-bar values: ``loss``, ``err`` (training error) and ``nc1`` (measured epochs only)."""
        post = {"loss": f"{self.train_loss:.3g}", "err": f"{self.train_error:.3f}"}
        if "nc1" in self.metrics:
            post["nc1"] = f"{self.metrics['nc1']:.3g}"
        return post


class Callback(Protocol):
    """Called on the main process after every epoch (after the record is complete)."""

    def on_epoch_end(self, trainer: "Trainer", record: EpochRecord) -> None: ...


def _build_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "phd_step":
        marks = sorted({max(1, cfg.epochs // 3), max(1, 2 * cfg.epochs // 3)})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=marks, gamma=0.1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return None


class Trainer:
    """Train ``model`` on ``train`` under ``config`` and track neural collapse.

    model: any classifier ``(B, ...) -> (B, P)``; its parameters fix device and dtype (inputs
    are cast to that dtype). train / test: ``(X, labels)`` tensors, a ``TensorDataset`` or a
    sized ``Dataset`` yielding ``(input, label)``. num_classes: ``C`` (default ``max label + 1``
    of tensor data; required for other data sets). targets: ``(C, P)`` regression targets of
    the MSE loss, row ``c`` for class ``c`` (default the ``C x C`` identity, one-hot); the MSE
    prediction is the nearest target, which for one-hot targets is the argmax.
    classifier: the module whose input are the tracked features (default
    :func:`.models.classifier_of`); the classifier metrics (NC2 of the weights, NC3, NC4,
    accuracy, margins) need it to have ``C`` outputs and are NaN otherwise (MSE targets of
    width ``P != C``). epoch_metrics: ``f(model) -> {name: value}`` evaluated after
    every epoch (e.g. the Rangamani et al. 2021 rho). callbacks: see :class:`Callback`. The attribute
    ``on_step``, if set to ``f(step, steps)``, is called after every optimisation step of an
    epoch (progress displays within long epochs).
    measure_batch_size: batch size of measurement passes (default: the training batch size).
    exact_bn: measure with the batch-norm statistics of the current weights on the whole training
    set (:func:`.measure.exact_batchnorm_statistics`, recomputed before every measurement and
    restored after it, so training is unchanged) instead of the running averages; with
    ``measure_batch_size >= len(train)`` the measured eval-mode network is exactly the
    training-mode network applied to the whole training set as one batch. At those epochs
    ``epoch_metrics`` see the same statistics (at the others, the running ones).
    sync_batchnorm: under DDP, convert the model's BatchNorm layers (in place) to
    ``nn.SyncBatchNorm`` (global batch statistics; CUDA only, see the module docstring); no
    effect on one process, where the local batch is the global one.
    The test set, if given, is evaluated (loss, error) at the epochs where NC is measured; its
    labels must lie in ``[0, C)`` (tensor data are checked here, other data sets per batch).
    """

    def __init__(
        self,
        model: nn.Module,
        train: Any,
        config: TrainConfig,
        *,
        num_classes: int | None = None,
        targets: torch.Tensor | None = None,
        classifier: nn.Module | None = None,
        test: Any = None,
        epoch_metrics: Callable[[nn.Module], Mapping[str, float]] | None = None,
        callbacks: Sequence[Callback] = (),
        measure_batch_size: int | None = None,
        num_workers: int = 0,
        sync_batchnorm: bool = False,
        exact_bn: bool = False,
    ) -> None:
        where = "Trainer"
        self.config = config
        self.module = model
        try:
            p0 = next(model.parameters())
        except StopIteration:
            raise ParameterError(f"{where}: the model has no parameters to train") from None
        self.device, self.dtype = p0.device, p0.dtype
        self.source = as_source(train, where, num_workers)
        self.test_source = None if test is None else as_source(test, f"{where} (test set)", num_workers)
        self.num_classes = self._num_classes(num_classes, where)
        C = self.num_classes
        for source in (self.source, self.test_source):
            if source is not None:
                source.check_labels(C)
        if config.loss == "mse":
            T = torch.eye(C) if targets is None else torch.as_tensor(targets)
            if T.ndim != 2 or T.shape[0] != C:
                raise ShapeError(f"{where}: targets must have shape ({C}, P), one row per class, got {tuple(T.shape)}")
            self.targets: torch.Tensor | None = check_finite(T.to(self.device, self.dtype), "targets", where)
        elif targets is not None:
            raise ParameterError(f"{where}: targets are used by loss='mse' only; drop them or set loss='mse'")
        else:
            self.targets = None
        check_model_inputs(model, self.source, self._to, self.num_classes, self.targets, where)
        self.classifier = classifier if classifier is not None else classifier_of(model)
        self.epoch_metrics = epoch_metrics
        self.callbacks = list(callbacks)
        self.on_step: Callable[[int, int], None] | None = None

        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.net: nn.Module = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            if sync_batchnorm:
                self.module = model = self._sync_batchnorm(model, where)
            self.net = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.batches = EpochBatches(len(self.source), config.batch_size, seed=config.seed, shuffle=config.shuffle, rank=self.rank, world=self.world)
        if self.batches.smallest_share < 2 and any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
            # torch's BatchNorm1d cannot normalise one sample in training mode ("Expected more than 1 value
            # per channel"), and one rank failing mid-epoch would leave the others waiting in a collective
            raise ParameterError(
                f"{where}: with {len(self.source)} samples, batch_size {self.batches.batch_size} and {self.world} process(es) some step gives a "
                f"process {self.batches.smallest_share} sample(s), and the model's BatchNorm1d needs at least 2 per process per step; "
                "choose a batch size whose last batch leaves at least 2 samples per process"
            )
        if measure_batch_size is not None:
            check_param("measure_batch_size", measure_batch_size, Interval(int, 1), where)
        self.measure_batch_size = self.batches.batch_size if measure_batch_size is None else int(measure_batch_size)
        self.exact_bn = bool(exact_bn)
        self.optimizer = _build_optimizer(model.parameters(), config)
        self.scheduler = _build_scheduler(self.optimizer, config)
        self.nc_epochs = set(log_spaced_epochs(config.epochs, config.nc_points))
        self.epoch = 0
        self.first_loss: float | None = None
        self.terminal_epoch: int | None = None

    # -- setup helpers -------------------------------------------------------------------
    def _num_classes(self, num_classes: int | None, where: str) -> int:
        """``C``; tensor data are checked here (finite inputs, labels in ``[0, C)``, no empty class)."""
        if num_classes is not None:
            check_param("num_classes", num_classes, Interval(int, 1), where)
        labels = getattr(self.source, "labels", None)
        if labels is None:
            if num_classes is None:
                raise ParameterError(f"{where}: num_classes is required when the training data is a generic Dataset")
            return int(num_classes)
        if self.source.X.is_floating_point():
            check_finite(self.source.X, "training inputs", where)
        return check_class_labels(labels, where, num_classes=num_classes)[1]

    def _sync_batchnorm(self, model: nn.Module, where: str) -> nn.Module:
        """``model`` with its BatchNorm layers converted to ``nn.SyncBatchNorm`` (CUDA only)."""
        if self.device.type == "cpu":
            raise ParameterError(
                f"{where}: sync_batchnorm needs GPU ranks: torch {torch.__version__} implements SyncBatchNorm for CUDA only "
                "(DDP: 'SyncBatchNorm layers only work with GPU modules'); train on CUDA devices or drop sync_batchnorm"
            )
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    @property
    def is_main(self) -> bool:
        """True on the process that logs and checkpoints (rank 0)."""
        return self.rank == 0

    # -- losses and predictions ------------------------------------------------------------
    def per_sample_loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``l_i`` of every sample: cross-entropy, or the mean over outputs of the squared error."""
        if self.targets is None:
            return F.cross_entropy(out, labels, reduction="none")
        return (out - self.targets[labels]).square().mean(dim=1)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        """Predicted class: argmax (cross-entropy), nearest target (MSE)."""
        if self.targets is None:
            return out.argmax(dim=1)
        T = self.targets
        return (2 * out @ T.T - T.square().sum(dim=1)).argmax(dim=1)

    def _to(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if x.is_floating_point():
            x = x.to(self.dtype)
        return x, y.to(self.device, non_blocking=True)

    def _sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a float64 vector over processes (identity on one process)."""
        if self.distributed:
            dist.all_reduce(values)
        return values

    # -- training --------------------------------------------------------------------------
    def _train_epoch(self, lr: float) -> tuple[float, float]:
        self.net.train()
        acc = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, wrong, count
        plan = self.batches.epoch()
        for step, ((x, y), (_, size)) in enumerate(zip(self.source.batches([i for i, _ in plan]), plan)):
            x, y = self._to(x, y)
            out = self.net(x)
            per = self.per_sample_loss(out, y)
            loss = per.sum() * (self.world / size)
            local = per.detach().sum().to(torch.float64)
            # the global batch mean, summed over ranks (one scalar all-reduce per step under DDP)
            # so that every rank takes the same divergence decision
            value = float(self._sum(local.reshape(1).clone())) / size
            self._check_divergence(value, step, lr)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.on_step is not None:
                self.on_step(step + 1, len(plan))
            acc[0] += local
            acc[1] += (self.predict(out.detach()) != y).sum()
            acc[2] += y.shape[0]
        acc = self._sum(acc)
        return float(acc[0] / acc[2]), float(acc[1] / acc[2])

    def _check_divergence(self, value: float, step: int, lr: float) -> None:
        if self.first_loss is None:
            self.first_loss = value
        bound = self.config.max_loss_ratio * max(abs(self.first_loss), 1e-12)
        if not math.isfinite(value) or value > bound:
            what = "is not finite" if not math.isfinite(value) else f"exceeds {self.config.max_loss_ratio:g} x the first batch loss {self.first_loss:.4g}"
            raise DivergenceError(
                f"Trainer: training diverged at epoch {self.epoch + 1}, step {step + 1}: the batch loss {value:.4g} {what}; "
                f"lower the learning rate (lr={lr:g}); the last good state is the end of epoch {self.epoch} (its checkpoint, if any, is kept)"
            )

    def scores(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """float64 ``[sum of losses, number of errors, number of samples]`` of one batch."""
        return torch.stack([self.per_sample_loss(out, labels).sum().to(torch.float64), (self.predict(out) != labels).sum().to(torch.float64), torch.tensor(float(labels.shape[0]), dtype=torch.float64, device=out.device)])

    def _measure(self) -> dict[str, float]:
        W, b = classifier_weights(self.classifier)
        report, sums = measure_features(
            self.module, self.classifier, self.source, self.batches.shard(), self.measure_batch_size, self.num_classes,
            prepare=self._to, scores=self.scores, weights=W, bias=b, reduce=self._sum if self.distributed else None,
        )
        return {**report, "eval_loss": float(sums[0] / sums[2]), "eval_error": float(sums[1] / sums[2])}

    def measurement_bn(self) -> AbstractContextManager[None]:
        """The batch-norm statistics a measurement uses, as a context: the running ones, or
        (``exact_bn``) the exact ones of this process's training shard
        (:func:`.measure.exact_batchnorm_statistics`, in measurement batches held in memory
        together). The trainer measures inside it; use it for a measurement of your own."""
        if not self.exact_bn:
            return nullcontext()
        chunks = [c for c in self.batches.shard().split(self.measure_batch_size) if c.numel()]
        return exact_batchnorm_statistics(self.module, [self._to(x, y)[0] for x, y in self.source.batches(chunks)])

    @torch.no_grad()
    def _test(self, source: Any) -> dict[str, float]:
        idx = rank_shard(len(source), self.rank, self.world)
        acc = torch.zeros(3, dtype=torch.float64, device=self.device)
        was_training = self.module.training
        self.module.eval()
        for x, y in source.batches(list(idx.split(self.measure_batch_size))):
            x, y = self._to(x, y)
            acc += self.scores(self.module(x), y)
        self.module.train(was_training)  # epoch_metrics see the same mode on every epoch
        acc = self._sum(acc)
        return {"test_loss": float(acc[0] / acc[2]), "test_error": float(acc[1] / acc[2])}

    def iterate(self) -> Iterator[EpochRecord]:
        """Train epoch by epoch up to ``config.epochs`` (from where a loaded state stopped),
        yielding each :class:`EpochRecord` after the callbacks have run."""
        while self.epoch < self.config.epochs:
            lr = float(self.optimizer.param_groups[0]["lr"])
            train_loss, train_error = self._train_epoch(lr)
            self.epoch += 1
            if self.scheduler is not None:
                self.scheduler.step()
            if train_error == 0.0 and self.terminal_epoch is None:
                self.terminal_epoch = self.epoch
                log.info("terminal phase: training error reached 0 at epoch %d", self.epoch)
            metrics: dict[str, float] = {}
            measured = self.epoch in self.nc_epochs
            with self.measurement_bn() if measured else nullcontext():
                if measured:
                    metrics.update(self._measure())
                    if self.test_source is not None:
                        metrics.update(self._test(self.test_source))
                if self.epoch_metrics is not None:
                    metrics.update({k: float(v) for k, v in self.epoch_metrics(self.module).items()})
            self.module.train()
            record = EpochRecord(self.epoch, lr, train_loss, train_error, metrics, measured, self.terminal_epoch)
            if self.is_main:
                for cb in self.callbacks:
                    cb.on_epoch_end(self, record)
            yield record

    def fit(self) -> list[EpochRecord]:
        """Run :meth:`iterate` to the end; return the records of the epochs it ran."""
        return list(self.iterate())

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (tensors and plain Python values)."""
        return {
            "config": self.config.as_dict(),
            "epoch": self.epoch,
            "first_loss": self.first_loss,
            "terminal_epoch": self.terminal_epoch,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "shuffle": self.batches.state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` from a trainer of the same configuration."""
        if dict(state["config"]) != self.config.as_dict():
            raise ConfigError(f"Trainer: the checkpoint was written with config {state['config']} but this trainer has {self.config.as_dict()}; resume with the recorded configuration")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.batches.set_state(state["shuffle"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch = int(state["epoch"])
        self.first_loss = state["first_loss"]
        self.terminal_epoch = state["terminal_epoch"]
