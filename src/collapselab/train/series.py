"""Several named training runs in one run folder, resumable as a whole.

Experiments that train one network per setting (losses, init scales, label-noise levels) run
them through a :class:`Series`: every epoch of the current run is logged (with a ``run``
column) and checkpointed together with the summaries of the runs already finished, so a
killed experiment resumes inside the run it was in and skips the finished ones. The storage
and the progress bar are the caller's (``ctx.save_checkpoint``, ``ctx.log_metrics``,
``ctx.progress`` in an experiment), so this module neither prints nor writes files itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..core.errors import ParameterError
from .callbacks import MetricsLogger
from .trainer import EpochRecord, Trainer

__all__ = ["Series"]

Summarise = Callable[[Trainer, list[dict[str, Any]]], dict[str, Any]]
Progress = Callable[..., Iterable[EpochRecord]]


class _SaveSeries:
    """Checkpoint callback: the trainer's state plus the series' bookkeeping.

    Saves after an epoch when ``min_interval_s`` seconds have passed since the last save,
    and always after a run's last epoch.
    """

    def __init__(self, series: "Series", name: str) -> None:
        self.series, self.name = series, name

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        s = self.series
        s.rows.append(record.row())
        now = time.monotonic()
        if now - s.last_save >= s.min_interval_s or record.epoch == trainer.config.epochs:
            s.save({"series_done": s.done, "series_current": self.name, "series_rows": s.rows, "trainer": trainer.state_dict()})
            s.last_save = now


class Series:
    """Run trainers one after another; resume from ``checkpoint`` (a state this class saved).

    save(state): persist a checkpoint (atomically); log(row): append a metrics row;
    progress(iterable, total=, desc=): a progress bar returning an object with
    ``set_postfix`` (the experiments' ``ctx.progress``), or None for none.
    min_interval_s: checkpoint after an epoch only when this many seconds have passed since the
    last checkpoint (and always after a run's last epoch); 0 (default) checkpoints every epoch.
    Saving less often is safe: the run folder records the metrics row count with each
    checkpoint, so a resume replays the epochs after it. Small runs of short epochs spend
    most of their time pickling checkpoints otherwise.
    """

    def __init__(self, save: Callable[[dict[str, Any]], None], log: Callable[[dict[str, Any]], None], checkpoint: Mapping[str, Any] | None = None, progress: Progress | None = None, *, min_interval_s: float = 0.0) -> None:
        if not min_interval_s >= 0:
            raise ParameterError(f"Series: min_interval_s must be >= 0 seconds, got {min_interval_s}")
        self.save, self.log, self.progress = save, log, progress
        self.min_interval_s = float(min_interval_s)
        self.last_save = time.monotonic()
        ck = dict(checkpoint or {})
        self.done: dict[str, dict[str, Any]] = dict(ck.get("series_done", {}))
        self._resume_name: str | None = ck.get("series_current")
        self._resume_trainer = ck.get("trainer")
        self._resume_rows: list[dict[str, Any]] = list(ck.get("series_rows", []))
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, build: Callable[[list[Any]], Trainer], summarise: Summarise) -> dict[str, Any]:
        """Train the run ``name`` (unless finished before) and return ``summarise(trainer, rows)``.

        ``build(callbacks)`` returns a fresh trainer that uses the given callbacks (seed the
        model inside it); ``rows`` are the metrics rows of all its epochs.
        """
        if name in self.done:
            return self.done[name]
        self.rows = []
        callbacks = [MetricsLogger(self.log, run=name), _SaveSeries(self, name)]
        trainer = build(callbacks)
        if self._resume_name == name and self._resume_trainer is not None:
            trainer.load_state_dict(self._resume_trainer)
            self.rows = self._resume_rows
            self._resume_name = None
        records: Iterator[EpochRecord] = trainer.iterate()
        total = trainer.config.epochs - trainer.epoch
        bar = self.progress(records, total=total, desc=name) if self.progress is not None else records
        post: dict[str, str] = {}
        for rec in bar:
            if hasattr(bar, "set_postfix"):
                post.update(rec.postfix())  # keeps the latest measured NC1 on screen
                bar.set_postfix(**post)
        summary = summarise(trainer, self.rows)
        self.done[name] = summary
        return summary
