"""Epoch-end callbacks: metrics rows, atomic checkpoints, TensorBoard scalars.

They run on the main process only (the trainer calls them there), in the order given; put the
metrics logger before the checkpoint so that a checkpoint covers the row of its own epoch
(``RunFolder.save_checkpoint`` records the row count and ``--resume`` drops later rows).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


from ..core.errors import ParameterError
from ..core.store import atomic_torch_save
from ..core.validation import Interval, check_param
from .trainer import EpochRecord, Trainer

__all__ = ["MetricsLogger", "Checkpoint", "TensorBoardLogger"]


class MetricsLogger:
    """Write ``record.row()`` (plus constant ``extra`` columns, e.g. a run index) through ``log``,
    e.g. ``MetricsLogger(lambda row: ctx.log_metrics(**row))`` or ``RunFolder.log_metrics``."""

    def __init__(self, log: Callable[[dict[str, Any]], None], **extra: Any) -> None:
        self.log, self.extra = log, extra

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self.log({**self.extra, **record.row()})


class Checkpoint:
    """Save ``trainer.state_dict()`` (wrapped by ``wrap`` if given) every ``every`` epochs and at
    the last epoch, through ``save`` (e.g. ``ctx.save_checkpoint``) or atomically to ``path``."""

    def __init__(self, save: Callable[[dict[str, Any]], None] | None = None, *, path: Path | str | None = None, every: int = 1, wrap: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if (save is None) == (path is None):
            raise ParameterError("Checkpoint: give exactly one of save= (a function) or path= (a file)")
        self.save = save if save is not None else (lambda state: atomic_torch_save(Path(path), state))  # type: ignore[arg-type]
        self.every, self.wrap = int(check_param("every", every, Interval(int, 1), "Checkpoint")), wrap

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if record.epoch % self.every == 0 or record.epoch == trainer.config.epochs:
            state = trainer.state_dict()
            self.save(self.wrap(state) if self.wrap is not None else state)


class TensorBoardLogger:
    """The same scalars as the metrics row, to TensorBoard event files in ``logdir``.

    Needs the optional ``tensorboard`` package: constructing the logger raises
    :class:`ParameterError` naming it when missing. The writer (and ``logdir``) is created at
    the first epoch, so a run that fails before training leaves no files behind.
    """

    def __init__(self, logdir: Path | str, prefix: str = "") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ParameterError(f"TensorBoardLogger: tensorboard is not importable ({exc}); pip install tensorboard or drop the logger") from None
        self._make_writer = lambda: SummaryWriter(str(logdir))
        self.writer: Any = None
        self.prefix = prefix

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if self.writer is None:
            self.writer = self._make_writer()
        for key, value in record.row().items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(self.prefix + key, value, record.epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
