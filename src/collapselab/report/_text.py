"""The terminal tables: per run its verdict and one row per claim (wrapped, never cut), a pass-rate table per sweep, the headline.

Claims render through :func:`collapselab.core.claims.view`, exactly as in the HTML report:
the check (comparator), the expected value, the tolerance and the measured value.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from ..core.claims import format_value, view
from ..core.verdicts import RunSummary, SweepSummary
from ._collect import Collection, train_state

__all__ = ["format_text", "sweep_rows", "table"]

CLAIM_HEADER = ("id", "verdict", "check", "expected", "tolerance", "measured")
_WIDTHS = (32, 7, 14, 28, 24, 40)
"""Widest column of the claim table (characters); a longer cell wraps onto further lines."""


def table(rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None) -> list[str]:
    """Rows as aligned columns under a rule; a cell wider than its column wraps (at spaces, after
    commas), so no value is ever cut."""
    limits = widths or [48] * len(rows[0])
    cols = [min(max(len(str(row[i])) for row in rows), limits[i]) for i in range(len(rows[0]))]
    lines: list[str] = []
    for k, row in enumerate(rows):
        cells = [textwrap.wrap(str(c), w, break_on_hyphens=False) or [""] for c, w in zip(row, cols)]
        for j in range(max(len(c) for c in cells)):
            lines.append("  ".join((c[j] if j < len(c) else "").ljust(w) for c, w in zip(cells, cols)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in cols))
    return lines


def sweep_rows(s: SweepSummary) -> list[tuple[str, ...]]:
    """One row per claim: pass rate over the seeds, not applicable and missing counts, min/median/max."""
    rows: list[tuple[str, ...]] = [("claim", "passed", "N/A", "missing", "values", "min", "median", "max")]
    for c in s.claims:
        of = "p-value" if c["values"] == "p_value" else "measured"
        rows.append((c["id"], f"{c['passed']}/{len(s.runs)}", str(c["not_applicable"]), str(c["missing"]), of, format_value(c["min"]), format_value(c["median"]), format_value(c["max"])))
    return rows


def format_text(collection: Collection) -> str:
    """The terminal tables: per single run its verdict line and claims, per sweep its pass rates, training runs, headline."""
    lines: list[str] = []
    singles = [e for e in collection.entries if isinstance(e, RunSummary)]
    for r in singles:
        lines += ["", f"{r.experiment} {r.verdict} ({r.path})" + (f": {r.detail}" if r.detail else "")]
        rows = [CLAIM_HEADER] + [(v.id, v.verdict, v.check, v.expected, v.tolerance, v.measured) for v in map(view, r.claims)]
        lines += table(rows, _WIDTHS) if r.claims else []
    for s in (e for e in collection.entries if isinstance(e, SweepSummary)):
        seeds = ",".join(str(k) for k, _ in s.runs)
        lines += ["", f"sweep {s.experiment} over {len(s.runs)} seed(s) [{seeds}]: {s.verdict} ({s.path})"]
        lines += [f"  seed {k}: {r.verdict} {r.detail}".rstrip() for k, r in s.runs if not r.passed]
        lines += table(sweep_rows(s)) if s.claims else ["  (no claim recorded by a finished seed)"]
    if collection.train:
        lines += ["", "training runs (collapselab train):"] + [f"  {train_state(r):10s} {r.path}" for r in collection.train]
    lines += ["", collection.headline()]
    return "\n".join(lines).lstrip("\n")
