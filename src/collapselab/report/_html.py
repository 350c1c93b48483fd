"""The HTML report: one self-contained page a scientist reads from the top.

Order: the headline counts and what needs attention (failed, stopped and incomplete runs);
verdicts per paper and per experiment; what the runs covered (quick or full, tiers, seeds) and
on what (versions, threads, device, CPU, commit); then one section per experiment: the
question it answers, the theory pages and sources (once), each figure at full width with its
caption, the paper's numbers beside ours, the claims; sweeps with their pass rates; training
runs (``collapselab train``) last. The headline element carries the counts as ``data-``
attributes, which the browser test compares with claims.json.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from pathlib import Path

from ..core.provenance import source_checkout
from ..core.store import atomic_write_text, storage_errors
from ..core.verdicts import RunSummary, SweepSummary
from ..experiments import Experiment, experiments
from ._collect import Collection, Entry, train_state
from ._sections import claims_html, e, figures_html, paper_html, provenance_html, provenance_rows, sweep_html

__all__ = ["PAPERS", "build_report"]

PAPERS = {
    "theory/minimizers.md": "Chen & Munoz Ewald 2023, 2024: explicit global minimizers",
    "theory/effective-flow.md": "Chen 2025: effective gradient flow and dynamical truncation",
    "theory/adapted-flow.md": "Chen & Munoz Ewald 2024: gradient flow = linear interpolation in output space",
    "theory/square-loss.md": "Rangamani et al. 2022: neural collapse with the square loss",
    "theory/ulpm.md": "Ji et al. 2022: the unconstrained layer-peeled model",
    "theory/neural-collapse.md": "Papyan, Han & Donoho 2020: neural collapse (the metrics)",
}
"""The paper behind each theory page; an experiment counts towards every paper of its ``theory`` pages."""

_CSS = """
*{box-sizing:border-box} body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;padding:1em 24px 4em;max-width:1400px;color:#1d1d1f}
h1{font-size:1.7em;margin:.3em 0} h2{border-top:2px solid #ddd;padding-top:.8em;margin-top:2em} h3{margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.4em 0 1.2em;table-layout:auto}
th,td{border:1px solid #d6d6d6;padding:4px 7px;font-size:13.5px;vertical-align:top;text-align:left;overflow-wrap:break-word}
th{background:#f3f4f6;overflow-wrap:normal} td.num{font-family:ui-monospace,monospace;font-size:12.5px}
table.claims{table-layout:fixed} table.claims td{overflow-wrap:anywhere} col.c-id{width:13%} col.c-claim{width:30%} col.c-check{width:8%} col.c-exp{width:12%} col.c-tol{width:11%} col.c-meas{width:20%} col.c-v{width:6%}
tr.detail td{border-top:none;color:#555;font-size:12.5px;background:#fafafa} tr.detail td:first-child{border-right:none}
.PASS,.FINISHED{color:#0a6b2a;font-weight:bold} .FAIL,.ERROR,.INCOMPLETE{color:#b00020;font-weight:bold} .NA{color:#666}
.badge{font-size:.6em;padding:2px 8px;border-radius:4px;vertical-align:middle;border:1px solid currentColor}
.attention{border:2px solid #b00020;background:#fff4f4;padding:.5em 1em;margin:1em 0} .ok{border:2px solid #0a6b2a;background:#f3fbf5;padding:.5em 1em}
figure{margin:1.2em 0;border:1px solid #e3e3e3;padding:8px;background:#fff} figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figure img.svg{width:100%} figcaption{font-size:13.5px;color:#333;margin-top:6px} .question{font-size:1.1em;font-style:italic}
code{font-size:12.5px;overflow-wrap:anywhere} details{margin:.5em 0 1em} summary{cursor:pointer;color:#444}
table.prov th{width:12em} .meta{color:#444;font-size:14px} td.PASS,td.FAIL,td.ERROR,td.INCOMPLETE,td.NA,td>a,th:last-child{white-space:nowrap;overflow-wrap:normal}
"""


def _meta(name: str) -> Experiment | None:
    return experiments().get(name)


def _anchor(e_: Entry) -> str:
    return f"{e_.experiment}-{e_.path.name}"


def _docs_link(page: str) -> str:
    """A link to the built docs page (docs/_build/html of the source checkout) or, unbuilt, the page's path as text."""
    root = source_checkout()
    built = root / "docs" / "_build" / "html" / page.replace(".md", ".html") if root else None
    if built is not None and built.is_file():
        return f"<a href='{e(built.as_uri())}'>{e(page)}</a>"
    return f"<code>docs/{e(page)}</code>"


def _entry_counts(entry: Entry) -> Counter[str]:
    runs = [entry] if isinstance(entry, RunSummary) else [r for _, r in entry.runs]
    c: Counter[str] = Counter()
    for r in runs:
        c[r.verdict] += 1
        if r.verdict in ("PASS", "FAIL"):
            c["passed"] += r.count(True)
            c["failed"] += r.count(False)
            c["na"] += r.count(None)
    return c


def _verdict_of(counts: Counter[str]) -> str:
    for v in ("ERROR", "INCOMPLETE", "FAIL"):
        if counts[v]:
            return v
    return "PASS"


def _summary(col: Collection) -> list[str]:
    c = col.counts()
    attrs = " ".join(f"data-{k.replace('_', '-')}='{v}'" for k, v in c.items())
    parts = [f"<p id='headline' class='meta' {attrs}><b>{e(col.headline())}</b>.</p>"]
    bad = [x for x in col.entries if not x.passed]
    bad_train = [r for r in col.train if train_state(r) != "FINISHED"]
    if bad or bad_train:
        items = [f"<li><a href='#{e(_anchor(x))}'>{e(x.experiment)}</a> <span class='{x.verdict}'>{x.verdict}</span>: "
                 f"{e(x.detail if isinstance(x, RunSummary) else f'{sum(not r.passed for _, r in x.runs)} of {len(x.runs)} seeds did not pass')} <code>{e(str(x.path))}</code></li>" for x in bad]  # fmt: skip
        items += [f"<li>training run <span class='{train_state(r)}'>{train_state(r)}</span> <code>{e(str(r.path))}</code>{': ' + e(r.error) if r.error else ''}</li>" for r in bad_train]
        parts.append(f"<div class='attention' id='attention'><b>Needs attention ({len(items)})</b><ul>{''.join(items)}</ul></div>")
    else:
        parts.append("<div class='ok'>Every run finished and passed.</div>")
    by_paper: dict[str, Counter[str]] = {}
    names: dict[str, list[str]] = {}
    for x in col.entries:
        meta = _meta(x.experiment)
        for page in (meta.theory if meta else ()):
            if page in PAPERS:
                by_paper.setdefault(page, Counter()).update(_entry_counts(x))
                names.setdefault(page, []).append(x.experiment)
    if by_paper:
        parts.append("<h2>Verdicts per paper</h2><table><tr><th>paper</th><th>theory</th><th>experiments</th><th>claims passed / failed / n/a</th><th>verdict</th></tr>")
        for page, cnt in by_paper.items():
            exps = ", ".join(f"{n}" for n in dict.fromkeys(names[page]))
            v = _verdict_of(cnt)
            parts.append(f"<tr><td>{e(PAPERS[page])}</td><td>{_docs_link(page)}</td><td>{e(exps)}</td><td>{cnt['passed']} / {cnt['failed']} / {cnt['na']}</td><td class='{v}'>{v}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Verdicts per experiment</h2><table><tr><th>experiment</th><th>question</th><th>kind</th><th>claims passed / failed / n/a</th><th>verdict</th></tr>")
    for x in col.entries:
        cnt, meta = _entry_counts(x), _meta(x.experiment)
        kind = f"sweep of {len(x.runs)} seeds: {sum(r.passed for _, r in x.runs)}/{len(x.runs)} seeds passed" if isinstance(x, SweepSummary) else _run_kind(x)
        question = meta.question or meta.summary if meta else ""
        parts.append(f"<tr><td><a href='#{e(_anchor(x))}'>{e(x.experiment)}</a></td><td>{e(question)}</td><td>{e(kind)}</td><td>{cnt['passed']} / {cnt['failed']} / {cnt['na']}</td><td class='{x.verdict}'>{x.verdict}</td></tr>")
    parts.append("</table>")
    return parts + _coverage(col)


def _run_kind(r: RunSummary) -> str:
    rows = dict(provenance_rows(r))
    return f"{rows['variant']}, seed {rows['seed']}"


def _coverage(col: Collection) -> list[str]:
    """What the runs covered (variants, seeds) and on what (versions, threads, device, CPU, commit): one line each, with every distinct value."""
    runs = [r for r in col.runs if r.config] + [r for r in col.train if r.config]
    if not runs:
        return []
    values: dict[str, Counter[str]] = {}
    for r in runs:
        for k, v in provenance_rows(r):
            if k not in ("command", "started"):
                values.setdefault(k, Counter())[v] += 1
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e('; '.join(f'{v} ({n} runs)' if len(cnt) > 1 else v for v, n in sorted(cnt.items())))}</td></tr>" for k, cnt in values.items())
    return ["<h2>What the runs covered, and on what</h2>", f"<table class='prov'>{rows}</table>", "<p class='meta'>Each run's exact command line and configuration are under its section's provenance.</p>"]


def _experiment_head(name: str, entries: list[Entry]) -> list[str]:
    meta = _meta(name)
    cnt = Counter(x.verdict for x in entries)
    v = _verdict_of(cnt)
    parts = [f"<section id='exp-{e(name)}'><h2>{e(name)} <span class='badge {v}'>{v}</span></h2>"]
    if meta is not None:
        parts.append(f"<p class='question'>{e(meta.question or meta.summary)}</p>")
        theory = ", ".join(_docs_link(p) for p in meta.theory) or "-"
        parts.append(f"<p class='meta'><b>Source</b>: {e(meta.source)}. <b>Theory</b>: {theory}.</p>")
    return parts


def _entry_html(x: Entry, several: bool) -> list[str]:
    anchor, meta = _anchor(x), _meta(x.experiment)
    source = meta.source if meta else ""
    label = f"sweep over {len(x.runs)} seeds" if isinstance(x, SweepSummary) else _run_kind(x)
    parts = [f"<h3 id='{e(anchor)}'>{e(x.path.name)} <small>({e(label)})</small> <span class='badge {x.verdict}'>{x.verdict}</span></h3>"] if several or isinstance(x, SweepSummary) else [f"<span id='{e(anchor)}'></span>"]
    if isinstance(x, SweepSummary):
        parts += sweep_html(x)
        first = next((r for _, r in x.runs if r.verdict in ("PASS", "FAIL")), None)
        if first is not None:
            parts.append(f"<p class='meta'>Figures and claims of one seed, <code>{e(first.path.name)}</code>:</p>")
            parts += figures_html(first.path, anchor) + paper_html(first.path) + claims_html(first.claims, anchor, source) + provenance_html(first)
        return parts
    if x.verdict != "PASS":
        parts.append(f"<p class='{x.verdict}'>{x.verdict}: {e(x.detail)}</p>")
    return parts + figures_html(x.path, anchor) + paper_html(x.path) + ["<h4>Claims</h4>"] + claims_html(x.claims, anchor, source) + (provenance_html(x) if x.config else [])


def _train_html(col: Collection) -> list[str]:
    if not col.train:
        return []
    parts = ["<h2 id='train'>Training runs (collapselab train)</h2>"]
    for r in col.train:
        state = train_state(r)
        parts.append(f"<h3 id='{e(_anchor(r))}'><code>{e(r.path.name)}</code> <span class='badge {state}'>{state}</span></h3>" + (f"<p class='ERROR'>{e(r.error)}</p>" if r.error else ""))
        parts += figures_html(r.path, _anchor(r)) + (provenance_html(r) if r.config else [])
    return parts


def build_report(collection: Collection, path: Path, *, title: str = "CollapseLab reproduction report") -> Path:
    """Write the HTML report of ``collection`` to ``path`` (one self-contained file) and return it."""
    now = _dt.datetime.now(_dt.timezone.utc)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1><p class='meta'>Generated {now:%Y-%m-%d %H:%M} UTC.</p>"]  # fmt: skip
    parts += _summary(collection)
    groups: dict[str, list[Entry]] = {}
    for x in collection.entries:
        groups.setdefault(x.experiment, []).append(x)
    for name, entries in groups.items():
        parts += _experiment_head(name, entries)
        for x in entries:
            parts += _entry_html(x, len(entries) > 1)
        parts.append("</section>")
    parts += _train_html(collection)
    parts.append("</body></html>\n")
    path = Path(path)
    with storage_errors(path.parent, "create the report's folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(parts))
    return path
