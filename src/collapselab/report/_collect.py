"""The runs of a report: every run folder below a root, with its verdict.

:func:`collect_runs` reads every run folder below a root (through
:mod:`collapselab.core.verdicts`) and hides none: all runs of an experiment are shown,
oldest first, each with its own verdict (PASS, FAIL, ERROR, INCOMPLETE), so a failed or
killed attempt is never replaced by a later folder of the same experiment. A seed sweep
(``NAME/sweep-<id>/seed-<k>``) is one entry with per-claim pass rates and the measured
min/median/max over its seeds. ``collapselab train`` runs (``train/<run-id>``) have their
own section: they check no claims, and read as finished, incomplete or stopped.

The headline counts claims passed, failed and not applicable (of finished runs) and runs
incomplete or stopped; :attr:`Collection.problems` is what makes ``report`` and
``reproduce`` exit non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import MissingFileError
from ..core.store import CONFIG
from ..core.verdicts import SWEEP_FILE, RunSummary, SweepSummary, summarise, summarise_sweep

__all__ = ["Collection", "Entry", "TRAIN", "collect_runs", "train_state"]

TRAIN = "train"  # `collapselab train` writes OUT/train/<run-id> with config.json's experiment "train"
Entry = RunSummary | SweepSummary


@dataclass(frozen=True)
class Collection:
    """The runs of a report: experiment runs and sweeps (by experiment, oldest first) and training runs."""

    entries: list[Entry]
    train: list[RunSummary] = field(default_factory=list)

    @property
    def runs(self) -> list[RunSummary]:
        """Every experiment run, the seeds of sweeps included."""
        return [r for e in self.entries for r in ([e] if isinstance(e, RunSummary) else [s for _, s in e.runs])]

    @property
    def problems(self) -> list[str]:
        """One line per experiment run or sweep that did not pass and per training run that did not finish."""
        out = [f"{e.experiment}: {e.verdict} ({e.path})" for e in self.entries if not e.passed]
        return out + [f"train: {train_state(r)} ({r.path})" for r in self.train if train_state(r) != "FINISHED"]

    def counts(self) -> dict[str, int]:
        """Claims of finished runs: ``claims``, ``passed``, ``failed``, ``not_applicable``; runs: ``runs``, ``incomplete``, ``error``."""
        finished = [r for r in self.runs if r.verdict in ("PASS", "FAIL")]
        ok, bad, na = (sum(r.count(v) for r in finished) for v in (True, False, None))
        return {"claims": sum(len(r.claims) for r in finished), "passed": ok, "failed": bad, "not_applicable": na, "runs": len(self.runs),
                "incomplete": sum(r.verdict == "INCOMPLETE" for r in self.runs), "error": sum(r.verdict == "ERROR" for r in self.runs)}

    def headline(self) -> str:
        c = self.counts()
        ok, n, bad, na = c["passed"], c["claims"], c["failed"], c["not_applicable"]
        words = [f"{ok} of {n} claims passed ({bad} failed, {na} not applicable) in {len(self.runs)} run(s)"]
        for key, what in (("incomplete", "incomplete"), ("error", "stopped with an error")):
            k = c[key]
            if k:
                words.append(f"{k} run(s) {what}")
        if self.train:
            states = [train_state(r) for r in self.train]
            words.append(f"{len(states)} training run(s): " + ", ".join(f"{states.count(s)} {s.lower()}" for s in ("FINISHED", "INCOMPLETE", "ERROR") if states.count(s)))
        return "; ".join(words)


def train_state(run: RunSummary) -> str:
    """FINISHED, INCOMPLETE or ERROR for a ``collapselab train`` run folder, from its status.json
    (absent or still ``running``: INCOMPLETE, as for experiment runs)."""
    if run.error is not None or run.status in ("failed", "unreadable"):
        return "ERROR"
    return "FINISHED" if run.status == "finished" else "INCOMPLETE"


def _order(path: Path) -> tuple[str, str]:
    return path.parent.name, path.name.removeprefix("sweep-")


def collect_runs(root: Path) -> Collection:
    """Every run folder (holding config.json) and sweep folder below ``root``."""
    root = Path(root)
    if not root.exists():
        raise MissingFileError(f"{root} does not exist; give the folder that holds the run folders (default runs/)")
    paths = {p.parent for p in root.rglob(CONFIG)}
    sweeps = {p.parent for p in root.rglob(SWEEP_FILE)} | {p.parent for p in paths if p.parent.name.startswith("sweep-") and p.name.startswith("seed-")}
    if not paths and not sweeps:
        raise MissingFileError(f"no run folders (no {CONFIG}) below {root}")
    entries: list[Entry] = [summarise_sweep(s) for s in sweeps]
    train: list[RunSummary] = []
    for p in paths:
        if p.parent in sweeps:
            continue
        r = summarise(p)
        (train if r.experiment == TRAIN else entries).append(r)
    entries.sort(key=lambda e: (e.experiment, _order(e.path)))
    return Collection(entries, sorted(train, key=lambda r: _order(r.path)))
