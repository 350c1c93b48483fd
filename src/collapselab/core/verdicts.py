"""What a run folder says: its claims, its status and the verdict they make, alone or as a sweep.

A run's verdict is one of

- ``PASS``: status ``finished``, no claim failed and at least one passed;
- ``FAIL``: status ``finished`` and a claim failed, or no claim was checked at all;
- ``ERROR``: the run stopped with an error (status ``failed``), or its files are unreadable;
- ``INCOMPLETE``: status ``running`` (killed, or still running) or no status.json (stopped
  before it started, or written before run folders recorded a status).

Only ``PASS`` counts as passed; the terminal table, the HTML report and a sweep's summary
read run folders through :func:`summarise` and :func:`summarise_sweep` alone.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CollapseLabError
from .store import CONFIG, RunFolder, read_claims

__all__ = ["RunSummary", "SweepSummary", "VERDICTS", "claim_statistics", "summarise", "summarise_sweep"]

VERDICTS = ("PASS", "FAIL", "ERROR", "INCOMPLETE")
SWEEP_FILE = "sweep.json"
_SEED_FOLDER = re.compile(r"^seed-(\d+)$")


@dataclass(frozen=True)
class RunSummary:
    """One run folder as a report sees it (``status``: running, finished, failed, missing, unreadable)."""

    experiment: str
    path: Path
    config: dict[str, Any]
    claims: list[dict[str, Any]]
    status: str = "finished"
    error: str | None = None

    @property
    def verdict(self) -> str:
        if self.error is not None or self.status in ("failed", "unreadable"):
            return "ERROR"
        if self.status != "finished":
            return "INCOMPLETE"
        if any(c.get("passed") is False for c in self.claims) or not any(c.get("passed") for c in self.claims):
            return "FAIL"
        return "PASS"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def detail(self) -> str:
        """Why the verdict is not PASS, in words (empty for PASS)."""
        v = self.verdict
        if v == "ERROR":
            return f"stopped with an error: {self.error or 'unknown error'}"
        if v == "INCOMPLETE":
            if self.status == "running":
                return "incomplete: status still 'running' (the run was killed, or is still running)"
            return "incomplete: no status.json (stopped before it started, or written by an older collapselab)"
        if v == "FAIL":
            failed = [c["id"] for c in self.claims if c.get("passed") is False]
            return f"failed claims: {', '.join(failed)}" if failed else "no claim was checked (none passed)"
        return ""

    def count(self, passed: bool | None) -> int:
        """Claims with this ``passed`` value (True, False, or None for not applicable)."""
        return sum(c.get("passed") is passed for c in self.claims)


def summarise(path: Path, error: str | None = None) -> RunSummary:
    """Read one run folder (config.json, status.json, claims.json); damage reads as an ERROR, never raises."""
    path = Path(path)
    try:
        folder = RunFolder.open(path)
        doc = folder.config
    except CollapseLabError as exc:
        return RunSummary(path.parent.name, path, {}, [], "unreadable", error or str(exc))
    experiment = str(doc.get("experiment", path.parent.name))
    status = folder.status
    state = "missing" if status is None else status["status"]
    error = error or (status or {}).get("error")
    try:
        claims = read_claims(path)
    except CollapseLabError as exc:
        return RunSummary(experiment, path, doc, [], "unreadable", error or str(exc))
    return RunSummary(experiment, path, doc, claims, state, error)


def _number(value: Any) -> float | None:
    """A measured value as a float (``"nan"``/``"inf"`` as claims.json writes them); None if not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def claim_statistics(claims_per_run: Sequence[Sequence[Mapping[str, Any]] | None]) -> list[dict[str, Any]]:
    """Per claim id over the runs of a sweep (None: a run that did not finish, so no verdict):

    ``passed``, ``failed``, ``not_applicable`` and ``missing`` (runs without a verdict for
    it) counts, and ``min``/``median``/``max`` of the measured value over the runs where it is
    a finite number (for a ``test`` claim its p-value: ``values`` says which), with the
    count of non-finite values (``nonfinite``).
    """
    found: dict[str, list[Mapping[str, Any]]] = {}
    for claims in claims_per_run:
        for c in claims or []:
            found.setdefault(c["id"], []).append(c)
    out = []
    for cid, cs in found.items():
        test = cs[0].get("comparator") == "test"
        numbers = [v for v in (_number(c["measured"].get("p_value") if test and isinstance(c.get("measured"), dict) else c.get("measured")) for c in cs) if v is not None]
        finite = sorted(v for v in numbers if abs(v) < float("inf"))  # NaN fails the comparison too
        out.append({
            "id": cid, "claim": cs[0].get("claim", ""), "comparator": cs[0].get("comparator"),
            "passed": sum(c.get("passed") is True for c in cs), "failed": sum(c.get("passed") is False for c in cs),
            "not_applicable": sum(c.get("passed") is None for c in cs), "missing": len(claims_per_run) - len(cs),
            "values": "p_value" if test else "measured", "nonfinite": len(numbers) - len(finite),
            "min": finite[0] if finite else None, "median": statistics.median(finite) if finite else None, "max": finite[-1] if finite else None,
        })  # fmt: skip
    return out


@dataclass(frozen=True)
class SweepSummary:
    """A seed sweep: its seeds' run summaries (seed order) and the per-claim statistics."""

    experiment: str
    path: Path
    runs: list[tuple[int, RunSummary]]
    claims: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """PASS iff every seed passed; else the worst seed's verdict (ERROR, INCOMPLETE, FAIL)."""
        verdicts = {r.verdict for _, r in self.runs}
        for v in ("ERROR", "INCOMPLETE", "FAIL"):
            if v in verdicts:
                return v
        return "PASS" if self.runs else "INCOMPLETE"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    def to_json(self) -> dict[str, Any]:
        runs = [{"seed": s, "path": r.path.name, "verdict": r.verdict, "error": r.error} for s, r in self.runs]
        return {"runs": runs, "claims": self.claims}


def summarise_sweep(root: Path, errors: Mapping[int, str | None] | None = None) -> SweepSummary:
    """Read a sweep folder: the seeds of sweep.json and every ``seed-<k>`` folder found.

    A seed without a folder (it never started) reads as ERROR with ``errors[seed]`` or as
    INCOMPLETE; the statistics take the claims of finished seeds only.
    """
    root = Path(root)
    errors = dict(errors or {})
    seeds: set[int] = set()
    experiment = root.parent.name
    try:
        doc = json.loads((root / SWEEP_FILE).read_text())
        seeds.update(int(s) for s in doc.get("seeds", []))
        experiment = str(doc.get("experiment", experiment))
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # a sweep killed before its summary: the seed folders say what it did
    if root.is_dir():
        seeds.update(int(m.group(1)) for p in root.iterdir() if (m := _SEED_FOLDER.match(p.name)) and p.is_dir())
    runs = []
    for seed in sorted(seeds):
        path = root / f"seed-{seed}"
        if (path / CONFIG).is_file():
            runs.append((seed, summarise(path, error=None)))
        else:
            err = errors.get(seed)
            runs.append((seed, RunSummary(experiment, path, {}, [], "failed" if err else "missing", err)))
        if errors.get(seed) and runs[-1][1].verdict != "ERROR":  # the worker's error when the folder could not record it
            r = runs[-1][1]
            runs[-1] = (seed, RunSummary(r.experiment, r.path, r.config, r.claims, "failed", errors[seed]))
    stats = claim_statistics([r.claims if r.status == "finished" and r.error is None else None for _, r in runs])
    return SweepSummary(experiment, root, runs, stats)
