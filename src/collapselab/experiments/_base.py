"""Experiments: a registry of named, configurable runs that write run folders and claims.

An experiment is a module in :mod:`collapselab.experiments` (not starting with ``_``)
that defines ``EXPERIMENT = Experiment(...)``. The registry discovers them by module
scan, so adding an experiment touches no shared file.

Configuration is a pydantic model (extra keys forbidden). ``--set key=value`` values
are parsed as JSON when they parse (numbers, booleans, lists) and as strings
otherwise, then validated by the model; ``--quick`` applies the experiment's
``quick`` overrides first.

Running one (``run_experiment``, with its status and ``--resume``) is :mod:`._runner`'s job.
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import ConfigError, ParameterError, UnknownNameError
from ..core.claims import Claim, verdict_at_least, verdict_at_most, verdict_close, verdict_test
from ..core.runtime import SEED_MAX, resolve_device
from ..core.store import RunFolder, storage_errors
from . import _figures
from ._progress import progress

__all__ = [
    "Experiment",
    "ExperimentConfig",
    "RunContext",
    "RunResult",
    "experiments",
    "folder_logging",
    "get_experiment",
    "parse_overrides",
    "resolve_device",
    "seed_everything",
    "torch_threads",
]

log = logging.getLogger("collapselab.experiments")


class ExperimentConfig(BaseModel):
    """Base of every experiment's configuration: unknown keys are errors; ``seed`` always exists."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    seed: int = Field(0, ge=0, le=SEED_MAX)  # numpy's and torch's seeds are non-negative 64-bit integers


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    name: the CLI name (``collapselab run NAME``).
    summary: one line: the claim it checks (shown by ``collapselab list``).
    source: where the claims come from (paper and theorem, and the docs page).
    config: the pydantic model of its configuration (subclass of ExperimentConfig).
    run: ``run(ctx: RunContext) -> None``; records metrics, claims and figures via ``ctx``.
    quick: overrides that make the ``--quick`` variant (run by the tests, about a minute or less).
    question: the question the experiment answers, in one sentence (the report's first line of its section).
    theory: the docs pages of the theorems it checks (``"theory/effective-flow.md"``), linked by the report.
    """

    name: str
    summary: str
    source: str
    config: type[ExperimentConfig]
    run: Callable[["RunContext"], None]
    quick: Mapping[str, Any] = field(default_factory=dict)
    question: str = ""
    theory: tuple[str, ...] = ()


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and Python's ``random``; return a numpy Generator for the run."""
    torch.manual_seed(seed)
    random.seed(seed)
    return np.random.default_rng(seed)


class RunContext:
    """What an experiment's ``run`` sees: its config, folder, device, rng and helpers."""

    def __init__(self, experiment: Experiment, config: ExperimentConfig, folder: RunFolder, device: torch.device, quick: bool, checkpoint: dict[str, Any] | None, show_progress: bool | None = None) -> None:
        self.experiment = experiment
        self.config = config
        self.folder = folder
        self.device = device
        self.quick = quick
        self.checkpoint = checkpoint
        self.rng = seed_everything(config.seed)
        self.log = logging.getLogger(f"collapselab.experiments.{experiment.name}")
        self._show_progress = show_progress

    # -- recording -------------------------------------------------------------------
    def log_metrics(self, **row: Any) -> None:
        """Append one row to metrics.csv (flushed)."""
        self.folder.log_metrics(row)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically save the run's state; ``--resume`` hands it back as ``ctx.checkpoint``."""
        self.folder.save_checkpoint(state)

    def figure_path(self, name: str) -> Path:
        """Path for a figure file ``figures/<name>`` (add ``.png``)."""
        return self.folder.figures / name

    def save_figure(self, fig: Any, name: str, *, caption: str = "", claims: Sequence[str] = (), paper_figure: str | None = None) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (and ``.svg`` when light) and close it.

        caption: what the figure shows, in a sentence; claims: the ids of the claims it supports;
        paper_figure: the paper's figure it corresponds to (``"Ji et al. 2022, Fig. 2"``). All
        three go to ``figures/figures.json`` for the report.
        """
        import matplotlib.pyplot as plt

        try:
            return _figures.save_figure(self.folder, fig, name, caption=caption, claims=claims, paper_figure=paper_figure)
        finally:
            plt.close(fig)

    def save_animation(self, anim: Any, name: str, *, fps: int = 10, caption: str = "", claims: Sequence[str] = (), paper_figure: str | None = None) -> Path:
        """Save a ``matplotlib.animation.Animation`` as ``figures/<name>.gif`` (keep it to a few hundred KB) and close its figure."""
        import matplotlib.pyplot as plt

        try:
            return _figures.save_animation(self.folder, anim, name, fps=fps, caption=caption, claims=claims, paper_figure=paper_figure)
        finally:
            plt.close(anim._fig)

    def paper_value(self, quantity: str, *, paper: Any, source: str, ours: Any = None, claims: Sequence[str] = (), differs: str = "") -> None:
        """Record a number the paper prints (or a few digitised points of its curve) beside ours.

        source: where the paper prints it (``"Rangamani et al. 2023, Table 1"``); differs: where
        our setting differs from the paper's (data set, scale, epochs). Stored in paper.json.
        """
        _figures.record_paper_value(self.folder, quantity, paper=paper, source=source, ours=ours, claims=claims, differs=differs)

    def progress(self, iterable: Iterable[Any], *, desc: str = "", total: int | None = None) -> Any:
        return progress(iterable, desc=desc or self.experiment.name, total=total, enabled=self._show_progress)

    # -- claims ----------------------------------------------------------------------
    # Every claim names the independent ``reference`` it is compared with and the error model
    # its tolerance comes from (``reason``); see :mod:`collapselab.core.claims`.
    def claim(self, id: str, claim: str, source: str, *, comparator: str, expected: Any, measured: Any, tolerance: Any, reason: str, reference: str, passed: bool | None) -> Claim:
        """Record a claim with an explicit verdict (``passed=None`` only for ``not_applicable``)."""
        c = Claim(id=id, claim=claim, source=source, comparator=comparator, expected=expected, measured=measured, tolerance=tolerance,
                  tolerance_reason=reason, reference=reference, passed=None if passed is None else bool(passed))
        self.folder.add_claim(c)
        self.log.info("claim %s: %s (measured %s, expected %s, tol %s)", id, c.verdict, measured, expected, tolerance)
        return c

    def claim_close(self, id: str, claim: str, source: str, *, measured: float, expected: float, tolerance: float, reason: str, reference: str, relative: bool = False) -> Claim:
        """PASS iff ``|measured - expected| <= tolerance`` (times ``|expected|`` if relative)."""
        m, e = float(measured), float(expected)
        return self.claim(id, claim, source, comparator="close", expected=e, measured=m, tolerance={"relative" if relative else "absolute": float(tolerance)},
                          reason=reason, reference=reference, passed=verdict_close(m, e, tolerance, relative=relative))

    def claim_at_most(self, id: str, claim: str, source: str, *, measured: float, bound: float, reason: str, reference: str) -> Claim:
        """PASS iff ``measured <= bound``."""
        m = float(measured)
        return self.claim(id, claim, source, comparator="at_most", expected=float(bound), measured=m, tolerance=None, reason=reason, reference=reference, passed=verdict_at_most(m, bound))

    def claim_at_least(self, id: str, claim: str, source: str, *, measured: float, bound: float, reason: str, reference: str) -> Claim:
        """PASS iff ``measured >= bound``."""
        m = float(measured)
        return self.claim(id, claim, source, comparator="at_least", expected=float(bound), measured=m, tolerance=None, reason=reason, reference=reference, passed=verdict_at_least(m, bound))

    def claim_true(self, id: str, claim: str, source: str, *, passed: bool, reason: str, reference: str, measured: Any = None, expected: Any = True) -> Claim:
        """PASS iff ``passed``; ``measured`` documents what was seen (numbers, not sentences)."""
        return self.claim(id, claim, source, comparator="true", expected=expected, measured=bool(passed) if measured is None else measured, tolerance=None,
                          reason=reason, reference=reference, passed=bool(passed))

    def claim_test(self, id: str, claim: str, source: str, *, test: str, statistic: float, p_value: float, level: float, reason: str, reference: str, measured: Any = None) -> Claim:
        """A statistical test of the claim: PASS iff ``p_value <= level`` (the null hypothesis is "the claim is false").

        ``test`` names the test (``"one-sided sign test over 8 seeds"``); ``reason`` says how
        its size (seeds, samples, level) keeps a true claim's failure rate below 1e-3.
        ``measured`` may add named numbers (medians, counts) to the statistic and p-value.
        """
        m = {"test": test, "statistic": float(statistic), "p_value": float(p_value), **(measured or {})}
        return self.claim(id, claim, source, comparator="test", expected={"p_value_at_most": float(level)}, measured=m, tolerance={"level": float(level)},
                          reason=reason, reference=reference, passed=verdict_test(float(p_value), level))

    def claim_not_applicable(self, id: str, claim: str, source: str, *, why: str, reference: str) -> Claim:
        """Record that a claim does not apply to this configuration or outcome (``why``): shown, never counted as passed."""
        return self.claim(id, claim, source, comparator="not_applicable", expected=None, measured=None, tolerance=None, reason=why, reference=reference, passed=None)


@dataclass(frozen=True)
class RunResult:
    """What ``run_experiment`` returns."""

    experiment: str
    path: Path
    claims: list[Claim]

    @property
    def passed(self) -> bool:
        """No claim failed (not-applicable claims neither pass nor fail) and at least one was checked."""
        return any(c.passed for c in self.claims) and all(c.passed is not False for c in self.claims)


_REGISTRY: dict[str, Experiment] | None = None


def experiments() -> dict[str, Experiment]:
    """All registered experiments, by name (modules of this package not starting with ``_``)."""
    global _REGISTRY
    if _REGISTRY is None:
        from .. import experiments as pkg

        found: dict[str, Experiment] = {}
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            exp = getattr(mod, "EXPERIMENT", None)
            if isinstance(exp, Experiment):
                if exp.name in found:
                    raise RuntimeError(f"two experiments are named {exp.name!r}")
                found[exp.name] = exp
        _REGISTRY = dict(sorted(found.items()))
    return _REGISTRY


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name lists the known ones."""
    reg = experiments()
    if name not in reg:
        import difflib

        close = difflib.get_close_matches(name, reg, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownNameError(f"unknown experiment {name!r}{hint}; known: {', '.join(reg)}")
    return reg[name]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["width=64", "lr=0.1", "name=abc"]`` -> ``{"width": 64, "lr": 0.1, "name": "abc"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


def resolve_config(exp: Experiment, overrides: Mapping[str, Any], quick: bool) -> ExperimentConfig:
    """Validate ``quick`` overrides (if asked) plus user overrides against the experiment's model."""
    fields = exp.config.model_fields
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise ConfigError(f"{exp.name}: unknown --set key {unknown[0]!r}; known keys: {', '.join(fields)}")
    values = {**(exp.quick if quick else {}), **overrides}
    try:
        return exp.config(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if not loc:  # a check across several fields (a model validator): the message names them
            raise ConfigError(f"{exp.name}: invalid configuration: {err['msg']}") from None
        raise ConfigError(f"{exp.name}: invalid value for {loc!r}: {err['msg']} (got {err.get('input')!r})") from None


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Inside: torch uses ``threads`` CPU threads (None: unchanged); restored on exit."""
    if threads is not None and threads < 1:
        raise ParameterError(f"threads must be >= 1, got {threads}")
    old = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def folder_logging(folder: RunFolder) -> Iterator[None]:
    """Inside: the ``collapselab`` loggers' records (INFO and up) are appended to the folder's log.txt."""
    with storage_errors(folder.log_file):
        handler = _LogFile(folder.log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("collapselab")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        try:
            handler.close()
        except OSError:  # a full disk: the run's own error (if any) says so
            pass


class _LogFile(logging.FileHandler):
    """log.txt: a line that cannot be written (full disk) is dropped without a traceback;
    the run's writes of metrics, claims and checkpoints report the disk error themselves."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
