"""The validation report: every run below a folder, its verdict and its claims, in the terminal and as one HTML page.

:func:`collect_runs` reads the run folders (:mod:`._collect`), :func:`format_text` prints the
terminal table (:mod:`._text`) and :func:`build_report` writes the self-contained HTML page
(:mod:`._html`: summary first, then one section per experiment with its figures, the paper's
numbers beside ours and its claims). Claims render once, through
:func:`collapselab.core.claims.view`, for both.
"""

from __future__ import annotations

from ..core.verdicts import RunSummary, SweepSummary, summarise
from ._collect import Collection, Entry, collect_runs, train_state
from ._html import build_report
from ._text import format_text

__all__ = ["Collection", "Entry", "RunSummary", "SweepSummary", "build_report", "collect_runs", "format_text", "summarise", "train_state"]
