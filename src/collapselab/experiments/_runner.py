"""Running an experiment: a fresh run folder or ``--resume``, with its status recorded.

A run writes ``status.json`` (``running`` at the start and on ``--resume``, then
``finished`` or ``failed`` with the error), so that a report tells a finished run from
one that stopped. ``--resume`` continues with the recorded configuration, device and
thread count (a different ``--device`` or ``--threads`` is refused); the run folder
checks metrics.csv, checkpoint.pt and config.json against each other
(:meth:`collapselab.core.store.RunFolder.load_checkpoint`), and without a checkpoint the run
starts over, saying so on stderr and in log.txt.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import torch
from pydantic import ValidationError

from ..core.errors import ConfigError, DataFileError, ParameterError
from ..core.store import RunFolder
from ._figures import STYLE
from ._base import Experiment, ExperimentConfig, RunContext, RunResult, folder_logging, get_experiment, resolve_config, resolve_device, torch_threads

__all__ = ["notice", "run_experiment"]

log = logging.getLogger("collapselab.experiments")


def notice(message: str) -> None:
    """A warning the user must see: in log.txt (when inside :func:`folder_logging`) and on stderr."""
    log.warning(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _reopen(exp: Experiment, resume: Path, overrides: Mapping[str, Any] | None, quick: bool, device: str | torch.device | None, threads: int | None) -> tuple[RunFolder, ExperimentConfig, bool, torch.device, int | None]:
    """The run folder of ``--resume`` with its recorded configuration, quick flag, device and threads."""
    folder = RunFolder.open(resume)
    doc = folder.config
    if doc.get("experiment") != exp.name:
        raise ConfigError(f"--resume {resume} is a run of {doc.get('experiment')!r}, not {exp.name!r}")
    if overrides:
        raise ConfigError("--resume continues a run with its recorded configuration; drop --set")
    try:
        config = exp.config(**doc["config"])
    except ValidationError as exc:
        raise DataFileError(f"{folder.path / 'config.json'}: the recorded configuration is not valid for {exp.name} ({exc.errors()[0]['msg']}); start a new run") from None
    if quick and not doc.get("quick", False):
        raise ConfigError(f"--resume {resume} continues a full run; drop --quick (a resumed run keeps its recorded variant)")
    recorded_device, recorded_threads = doc.get("device", "cpu"), doc.get("threads")
    if device is not None and resolve_device(device) != torch.device(recorded_device):
        raise ConfigError(f"--resume {resume}: --device {device} differs from the recorded {recorded_device}; drop --device (a resumed run keeps its device, or its numbers would change)")
    if threads is not None and recorded_threads is not None and threads != recorded_threads:
        raise ConfigError(f"--resume {resume}: --threads {threads} differs from the recorded {recorded_threads}; drop --threads (a resumed run keeps its thread count, or its numbers would change)")
    return folder, config, bool(doc.get("quick", False)), resolve_device(recorded_device), threads if recorded_threads is None else int(recorded_threads)


def run_experiment(
    name: str | Experiment,
    overrides: Mapping[str, Any] | None = None,
    *,
    out: Path | str = "runs",
    device: str | torch.device | None = None,
    quick: bool = False,
    resume: Path | str | None = None,
    show_progress: bool | None = None,
    threads: int | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Run one experiment (a registered name, or an :class:`Experiment` itself, as sweeps' worker
    processes pass it) into a fresh run folder (or continue ``resume``) and return its claims.

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards); ``None``
    keeps the current setting (on ``--resume``: the recorded one). Results are
    bit-reproducible for a fixed thread count. ``run_id`` names the folder below
    ``out/NAME`` (default: a UTC timestamp).
    """
    exp = name if isinstance(name, Experiment) else get_experiment(name)
    if threads is not None and threads < 1:
        raise ParameterError(f"run_experiment: threads must be >= 1, got {threads}")
    if resume is not None:
        folder, config, quick, dev, threads = _reopen(exp, Path(resume), overrides, quick, device, threads)
    else:
        dev = resolve_device(device)
        config = resolve_config(exp, overrides or {}, quick)
        extra = {"quick": quick, "device": str(dev), "seed": config.seed, "threads": threads or torch.get_num_threads()}
        folder = RunFolder.create(Path(out), exp.name, config.model_dump(), run_id=run_id, extra=extra)
    with folder_logging(folder), torch_threads(threads):
        checkpoint = None
        if resume is not None:
            checkpoint = folder.load_checkpoint()
            if checkpoint is None:
                notice(f"{folder.path}: no checkpoint, starting again (metrics and claims of the earlier attempt dropped)")
            else:
                dropped = f"; dropped {folder.dropped_rows} metrics row(s) logged after it" if folder.dropped_rows else ""
                log.info("resumed %s from its checkpoint at metrics row %d%s", folder.path, folder.resumed_at, dropped)
        log.info("running %s into %s (quick=%s, device=%s, threads=%d)", exp.name, folder.path, quick, dev, torch.get_num_threads())
        with folder.running(exp.name), matplotlib.rc_context(STYLE):
            exp.run(RunContext(exp, config, folder, dev, quick, checkpoint, show_progress))
    return RunResult(exp.name, folder.path, folder.claims)
