"""The HTML validation report: figures and one PASS/FAIL line per claim, from run folders.

``build_report(runs, path)`` writes one self-contained HTML file (figures embedded as
base64 PNG) with, per experiment, its configuration, a claims table (id, claim,
source, expected, measured, tolerance, verdict) and its figures.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.errors import MissingFileError
from .core.store import CLAIMS, CONFIG, RunFolder, atomic_write_text, read_claims

__all__ = ["RunSummary", "collect_runs", "summarise", "build_report", "format_claims_table"]


@dataclass(frozen=True)
class RunSummary:
    """One run folder as the report sees it."""

    experiment: str
    path: Path
    config: dict[str, Any]
    claims: list[dict[str, Any]]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and any(c.get("passed") for c in self.claims) and all(c.get("passed") is not False for c in self.claims)


def summarise(path: Path, error: str | None = None) -> RunSummary:
    """Read one run folder (config.json and claims.json)."""
    folder = RunFolder.open(Path(path))
    doc = folder.config
    return RunSummary(doc.get("experiment", Path(path).parent.name), Path(path), doc, read_claims(path), error)


def collect_runs(root: Path, *, latest_only: bool = True) -> list[RunSummary]:
    """Every run folder below ``root`` (folders holding config.json); newest per experiment by default."""
    root = Path(root)
    if not root.exists():
        raise MissingFileError(f"{root} does not exist; give the folder that holds the run folders (default runs/)")
    paths = sorted({p.parent for p in root.rglob(CONFIG)})
    if not paths:
        raise MissingFileError(f"no run folders (no {CONFIG}) below {root}")
    runs = [summarise(p) for p in paths]
    if latest_only:
        newest: dict[str, RunSummary] = {}
        for r in runs:  # paths sorted: run ids are UTC timestamps, so later wins
            newest[r.experiment] = r
        runs = list(newest.values())
    return sorted(runs, key=lambda r: r.experiment)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def format_claims_table(runs: Sequence[RunSummary]) -> str:
    """Plain-text claims table: one line per claim, then a totals line."""
    rows = [("experiment", "id", "verdict", "measured", "expected", "tolerance")]
    for r in runs:
        if r.error:
            rows.append((r.experiment, "-", "ERROR", r.error[:60], "-", "-"))
        for c in r.claims:
            rows.append((r.experiment, c["id"], c["verdict"], _fmt(c["measured"]), _fmt(c["expected"]), _fmt(c["tolerance"])))
    widths = [min(max(len(row[i]) for row in rows), 48) for i in range(len(rows[0]))]
    lines = ["  ".join(cell[:48].ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = sum(len(r.claims) for r in runs)
    ok = sum(bool(c["passed"]) for r in runs for c in r.claims)
    errors = sum(r.error is not None for r in runs)
    lines.append(f"{ok} of {n} claims passed" + (f"; {errors} experiment(s) failed to run" if errors else ""))
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 6px;font-size:13px;vertical-align:top;text-align:left}
th{background:#f3f3f3} .PASS{color:#0a6b2a;font-weight:bold} .FAIL,.ERROR{color:#b00020;font-weight:bold}
img{max-width:48%;margin:4px;border:1px solid #eee} code{font-size:12px}
"""


def _figures(path: Path) -> Iterable[tuple[str, str]]:
    for png in sorted((path / "figures").glob("*.png")):
        yield png.stem, base64.b64encode(png.read_bytes()).decode("ascii")


def build_report(runs: Sequence[RunSummary], path: Path, *, title: str = "CollapseLab validation report") -> Path:
    """Write the HTML report to ``path`` and return it."""
    e = html.escape
    n = sum(len(r.claims) for r in runs)
    ok = sum(bool(c["passed"]) for r in runs for c in r.claims)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(title)}</h1><p>{ok} of {n} claims passed in {len(runs)} experiment(s). Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}.</p>",
             "<table><tr><th>experiment</th><th>claims passed</th><th>run folder</th></tr>"]
    for r in runs:
        verdict = "ERROR" if r.error else ("PASS" if r.passed else "FAIL")
        parts.append(f"<tr><td><a href='#{e(r.experiment)}'>{e(r.experiment)}</a></td><td class='{verdict}'>"
                     f"{sum(bool(c['passed']) for c in r.claims)}/{len(r.claims)} {verdict}</td><td><code>{e(str(r.path))}</code></td></tr>")
    parts.append("</table>")
    for r in runs:
        parts.append(f"<h2 id='{e(r.experiment)}'>{e(r.experiment)}</h2>")
        if r.error:
            parts.append(f"<p class='ERROR'>The run stopped with an error: {e(r.error)}</p>")
        cfg = r.config.get("config", {})
        parts.append("<p>Configuration: <code>" + e(json.dumps(cfg, sort_keys=True)) + f"</code> (quick={e(str(r.config.get('quick')))})</p>")
        parts.append("<table><tr><th>id</th><th>claim</th><th>source</th><th>expected</th><th>measured</th><th>tolerance</th><th>why this tolerance</th><th>verdict</th></tr>")
        for c in r.claims:
            v = c["verdict"]
            parts.append("<tr>" + "".join(f"<td>{e(_fmt(c[k]))}</td>" for k in ("id", "claim", "source", "expected", "measured", "tolerance", "tolerance_reason")) + f"<td class='{v}'>{v}</td></tr>")
        parts.append("</table>")
        for name, data in _figures(r.path):
            parts.append(f"<img alt='{e(name)}' title='{e(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(parts))
    return path
