"""The validation report: every run below a folder, its verdict and one line per claim.

:func:`collect_runs` reads every run folder below a root (through
:mod:`collapselab.core.verdicts`) and hides none: all runs of an experiment are shown,
oldest first, each with its own verdict (PASS, FAIL, ERROR, INCOMPLETE), so a failed or
killed attempt is never replaced by a later folder of the same experiment. A seed sweep
(``NAME/sweep-<id>/seed-<k>``) is one entry with per-claim pass rates and the measured
min/median/max over its seeds. ``collapselab train`` runs (``train/<run-id>``) have their
own section: they check no claims, and read as finished, incomplete or stopped.

The headline counts claims passed, failed and not applicable (of finished runs) and runs
incomplete or stopped; :attr:`Collection.problems` is what makes ``report`` and
``reproduce`` exit non-zero. :func:`build_report` writes one self-contained HTML file
(figures embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.claims import format_expected, format_measured, format_value
from .core.errors import MissingFileError
from .core.store import CONFIG, atomic_write_text, storage_errors
from .core.verdicts import SWEEP_FILE, RunSummary, SweepSummary, summarise, summarise_sweep

__all__ = ["Collection", "RunSummary", "SweepSummary", "build_report", "collect_runs", "format_text", "summarise", "train_state"]

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

    def headline(self) -> str:
        finished = [r for r in self.runs if r.verdict in ("PASS", "FAIL")]
        n = sum(len(r.claims) for r in finished)
        ok, bad, na = (sum(r.count(v) for r in finished) for v in (True, False, None))
        words = [f"{ok} of {n} claims passed ({bad} failed, {na} not applicable) in {len(self.runs)} run(s)"]
        for verdict, what in (("INCOMPLETE", "incomplete"), ("ERROR", "stopped with an error")):
            k = sum(r.verdict == verdict for r in self.runs)
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




def _verdict(claim: dict[str, Any]) -> str:
    return {True: "PASS", False: "FAIL", None: "N/A"}.get(claim.get("passed"), "FAIL")


def _table(rows: list[Sequence[str]]) -> list[str]:
    widths = [min(max(len(row[i]) for row in rows), 48) for i in range(len(rows[0]))]
    lines = ["  ".join(cell[:48].ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _sweep_rows(s: SweepSummary) -> list[tuple[str, ...]]:
    """One row per claim: pass rate over the seeds, not applicable and missing counts, min/median/max."""
    rows: list[tuple[str, ...]] = [("claim", "passed", "N/A", "missing", "values", "min", "median", "max")]
    for c in s.claims:
        of = "p-value" if c["values"] == "p_value" else "measured"
        rows.append((c["id"], f"{c['passed']}/{len(s.runs)}", str(c["not_applicable"]), str(c["missing"]), of, format_value(c["min"]), format_value(c["median"]), format_value(c["max"])))
    return rows


def format_text(collection: Collection) -> str:
    """The terminal table: one line per claim of single runs, a pass-rate table per sweep, training runs, headline."""
    lines: list[str] = []
    rows: list[Sequence[str]] = [("experiment", "id", "verdict", "measured", "expected")]
    singles = [e for e in collection.entries if isinstance(e, RunSummary)]
    for r in singles:
        if r.verdict != "PASS":
            rows.append((r.experiment, "-", r.verdict, "-", "-"))
        for c in r.claims:
            rows.append((r.experiment, str(c.get("id")), _verdict(c), format_measured(c), format_expected(c)))
    if len(rows) > 1:
        lines += _table(rows)
    lines += [f"{r.experiment} {r.verdict} ({r.path}): {r.detail}" for r in singles if r.verdict != "PASS"]
    for s in (e for e in collection.entries if isinstance(e, SweepSummary)):
        seeds = ",".join(str(k) for k, _ in s.runs)
        lines += ["", f"sweep {s.experiment} over {len(s.runs)} seed(s) [{seeds}]: {s.verdict} ({s.path})"]
        lines += [f"  seed {k}: {r.verdict} {r.detail}".rstrip() for k, r in s.runs if not r.passed]
        lines += _table(_sweep_rows(s)) if s.claims else ["  (no claim recorded by a finished seed)"]
    if collection.train:
        lines += ["", "training runs (collapselab train):"] + [f"  {train_state(r):10s} {r.path}" for r in collection.train]
    lines += ["", collection.headline()]
    return "\n".join(lines).lstrip("\n")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 6px;font-size:13px;vertical-align:top;text-align:left}
th{background:#f3f3f3} .PASS,.FINISHED{color:#0a6b2a;font-weight:bold} .FAIL,.ERROR,.INCOMPLETE{color:#b00020;font-weight:bold}
img{max-width:48%;margin:4px;border:1px solid #eee} code{font-size:12px}
"""
_e = html.escape


def _figures(path: Path) -> Iterable[tuple[str, str]]:
    for png in sorted((path / "figures").glob("*.png")):
        yield png.stem, base64.b64encode(png.read_bytes()).decode("ascii")


def _anchor(e: Entry) -> str:
    return _e(f"{e.experiment}-{e.path.name}")


def _run_html(r: RunSummary) -> list[str]:
    parts = [f"<p class='{r.verdict}'>{r.verdict} {_e(r.detail)}</p>"] if r.verdict != "PASS" else []
    cfg = r.config.get("config", {})
    parts.append("<p>Configuration: <code>" + _e(json.dumps(cfg, sort_keys=True)) + f"</code> (quick={_e(str(r.config.get('quick')))})</p>")
    parts.append("<table><tr><th>id</th><th>claim</th><th>source</th><th>reference</th><th>expected</th><th>measured</th><th>why this tolerance</th><th>verdict</th></tr>")
    for c in r.claims:
        values = (c.get("id"), c.get("claim"), c.get("source"), c.get("reference"), format_expected(c), format_measured(c), c.get("tolerance_reason"))
        cells = "".join(f"<td>{_e(format_value(v))}</td>" for v in values)
        parts.append(f"<tr>{cells}<td class='{_verdict(c).replace('/', '')}'>{_verdict(c)}</td></tr>")
    parts.append("</table>")
    parts += [f"<img alt='{_e(n)}' title='{_e(n)}' src='data:image/png;base64,{d}'>" for n, d in _figures(r.path)]
    return parts


def _sweep_html(s: SweepSummary) -> list[str]:
    rows = _sweep_rows(s)
    parts = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in rows[0]) + "</tr>"]
    for c, row in zip(s.claims, rows[1:]):
        cls = "PASS" if c["passed"] == len(s.runs) else "FAIL"
        parts.append(f"<tr><td>{_e(row[0])}</td><td class='{cls}'>{_e(row[1])}</td>" + "".join(f"<td>{_e(x)}</td>" for x in row[2:]) + "</tr>")
    parts.append("</table><table><tr><th>seed</th><th>verdict</th><th>run folder</th></tr>")
    parts += [f"<tr><td>{k}</td><td class='{r.verdict}'>{r.verdict} {_e(r.detail)}</td><td><code>{_e(str(r.path))}</code></td></tr>" for k, r in s.runs]
    parts.append("</table>")
    first = next((r for _, r in s.runs if r.verdict in ("PASS", "FAIL")), None)
    if first is not None:
        parts.append(f"<p>Figures of {_e(first.path.name)}:</p>")
        parts += [f"<img alt='{_e(n)}' title='{_e(n)}' src='data:image/png;base64,{d}'>" for n, d in _figures(first.path)]
    return parts


def _entry_cells(e: Entry) -> str:
    if isinstance(e, SweepSummary):
        passed = sum(r.passed for _, r in e.runs)
        return f"sweep of {len(e.runs)} seeds</td><td class='{e.verdict}'>{passed}/{len(e.runs)} seeds passed: {e.verdict}"
    return f"run</td><td class='{e.verdict}'>{e.count(True)}/{len(e.claims)} claims passed: {e.verdict}"


def build_report(collection: Collection, path: Path, *, title: str = "CollapseLab validation report") -> Path:
    """Write the HTML report of ``collection`` to ``path`` and return it."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1><p>{_e(collection.headline())}. Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}.</p>",
             "<table><tr><th>experiment</th><th>kind</th><th>verdict</th><th>folder</th></tr>"]  # fmt: skip
    for e in collection.entries:
        parts.append(f"<tr><td><a href='#{_anchor(e)}'>{_e(e.experiment)}</a></td><td>{_entry_cells(e)}</td><td><code>{_e(str(e.path))}</code></td></tr>")
    parts.append("</table>")
    for e in collection.entries:
        kind = f"sweep over {len(e.runs)} seeds" if isinstance(e, SweepSummary) else "run"
        parts.append(f"<h2 id='{_anchor(e)}'>{_e(e.experiment)} <small>({kind} {_e(e.path.name)})</small></h2>")
        parts += _sweep_html(e) if isinstance(e, SweepSummary) else _run_html(e)
    if collection.train:
        parts.append("<h2 id='train'>Training runs (collapselab train)</h2><table><tr><th>run folder</th><th>state</th><th>configuration</th></tr>")
        for r in collection.train:
            state = train_state(r)
            note = f" {_e(r.error)}" if r.error else ""
            parts.append(f"<tr><td><code>{_e(str(r.path))}</code></td><td class='{state}'>{state}{note}</td><td><code>{_e(json.dumps(r.config.get('config', {}), sort_keys=True))}</code></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    path = Path(path)
    with storage_errors(path.parent, "create the report's folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(parts))
    return path
