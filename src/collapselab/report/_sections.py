"""HTML pieces of one run: its figures and animations, the paper's numbers beside ours, its
claims, its provenance; and the pass rates of a sweep. Everything is escaped here; images are
embedded as data URIs (SVG when the run saved one, else PNG; GIF animations), so the page
stays one file that works offline.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from ..core.claims import format_value, view
from ..core.verdicts import RunSummary, SweepSummary
from ..experiments._figures import FIGURES_FILE, PAPER_FILE, read_json_list
from ._text import sweep_rows

__all__ = ["claims_html", "figures_html", "paper_html", "provenance_rows", "provenance_html", "sweep_html"]

e = html.escape
_MIME = {".svg": "image/svg+xml", ".png": "image/png", ".gif": "image/gif"}


def _data_uri(path: Path) -> str:
    return f"data:{_MIME[path.suffix]};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure_records(run: Path) -> list[dict[str, Any]]:
    """figures.json's entries whose files exist, then any other PNG/GIF of the folder (older runs, ``train``)."""
    folder = run / "figures"
    records = [r for r in read_json_list(folder / FIGURES_FILE) if any((folder / f).is_file() for f in r.get("files", []))]
    known = {f for r in records for f in r.get("files", [])}
    for p in sorted([*folder.glob("*.png"), *folder.glob("*.gif")]):
        if p.name not in known:
            records.append({"name": p.stem, "kind": "animation" if p.suffix == ".gif" else "figure", "files": [p.name], "caption": "", "claims": [], "paper_figure": None})
    return records


def _best_file(folder: Path, files: list[str]) -> Path:
    present = [folder / f for f in files if (folder / f).is_file()]
    return next((p for p in present if p.suffix == ".svg"), present[0])


def figures_html(run: Path, anchor: str) -> list[str]:
    """Each figure at full width with its caption, the claims it supports (linked) and the paper's figure."""
    parts: list[str] = []
    for k, r in enumerate(_figure_records(run), 1):
        path = _best_file(run / "figures", list(r.get("files", [])))
        caption = e(str(r.get("caption") or r["name"]))
        claims = ", ".join(f"<a href='#{e(anchor)}--{e(str(c))}'>{e(str(c))}</a>" for c in r.get("claims", []))
        extra = (f" Supports {claims}." if claims else "") + (f" Corresponds to {e(str(r['paper_figure']))}." if r.get("paper_figure") else "")
        what = "Animation" if r.get("kind") == "animation" else "Figure"
        cls = "anim" if r.get("kind") == "animation" else path.suffix[1:]
        parts.append(f"<figure id='{e(anchor)}--fig-{e(r['name'])}'><img class='{cls}' src='{_data_uri(path)}' alt='{caption}'>"
                     f"<figcaption><b>{what} {k}</b> <code>{e(path.name)}</code>. {caption}{extra}</figcaption></figure>")  # fmt: skip
    return parts


def paper_html(run: Path) -> list[str]:
    """The paper's numbers (or digitised points) beside ours, with the source and how our setting differs."""
    records = read_json_list(run / PAPER_FILE)
    if not records:
        return []
    rows = ["<h4>The paper beside us</h4><table class='paper'><tr><th>quantity</th><th>paper</th><th>ours</th><th>where the paper prints it</th><th>where our setting differs</th></tr>"]
    for r in records:
        rows.append(f"<tr><td>{e(str(r.get('quantity')))}</td><td>{e(format_value(r.get('paper')))}</td><td>{e(format_value(r.get('ours')))}</td>"
                    f"<td>{e(str(r.get('source')))}</td><td>{e(str(r.get('differs') or '-'))}</td></tr>")  # fmt: skip
    return rows + ["</table>"]


def _own_source(source: str, common: str) -> str:
    """What a claim's source adds to the experiment's (shown once above the table): ``"Fig 7"`` for ``common + "; Fig 7"``."""
    if common and source.startswith(common):
        return source[len(common):].strip(" ;,")
    return "" if source == common else source


def claims_html(claims: list[dict[str, Any]], anchor: str, source: str = "") -> list[str]:
    """One row per claim (check, expected, tolerance, measured, verdict) and under it what it is compared with,
    why the tolerance, and what its source adds to the experiment's ``source``."""
    if not claims:
        return ["<p>No claim recorded.</p>"]
    parts = ["<table class='claims'><colgroup><col class='c-id'><col class='c-claim'><col class='c-check'><col class='c-exp'><col class='c-tol'><col class='c-meas'><col class='c-v'></colgroup>"
             "<tr><th>id</th><th>claim</th><th>check</th><th>expected</th><th>tolerance</th><th>measured</th><th>verdict</th></tr>"]  # fmt: skip
    for c in claims:
        v = view(c)
        cls = v.verdict.replace("/", "")
        parts.append(f"<tr id='{e(anchor)}--{e(v.id)}' class='row-{cls}'><td><code>{e(v.id)}</code></td><td>{e(str(c.get('claim', '')))}</td><td>{e(v.check)}</td>"
                     f"<td class='num'>{e(v.expected)}</td><td class='num'>{e(v.tolerance)}</td><td class='num'>{e(v.measured)}</td><td class='{cls}'>{v.verdict}</td></tr>")  # fmt: skip
        why = "why not applicable" if v.verdict == "N/A" else ("why this level" if v.test else "why this tolerance")
        test = f"<b>test</b>: {e(v.test)}. " if v.test else ""
        own = _own_source(str(c.get("source", "")), source)
        cite = f" <b>source</b>: {e(own)}." if own else ""
        parts.append(f"<tr class='detail'><td></td><td colspan='6'>{test}<b>compared with</b>: {e(str(c.get('reference', '-')).rstrip('.'))}. <b>{why}</b>: {e(v.reason.rstrip('.'))}.{cite}</td></tr>")
    return parts + ["</table>"]


def provenance_rows(run: RunSummary) -> list[tuple[str, str]]:
    """(what, value) of a run's config.json: command, versions, threads, device, CPU, commit, time, quick/tier, seed."""
    doc, prov = run.config, run.config.get("provenance", {})
    versions = doc.get("versions", {})
    cfg = doc.get("config", {})
    rows = [("command", prov.get("command")), ("versions", ", ".join(f"{k} {versions[k]}" for k in ("collapselab", "torch", "numpy", "scipy", "python") if k in versions)),
            ("threads", doc.get("threads")), ("device", doc.get("device") if "cuda_device" not in prov else f"{doc.get('device')} ({prov['cuda_device']})"),
            ("CPU", f"{prov.get('cpu')} ({prov.get('cpu_count')} cores)" if prov.get("cpu") else None), ("platform", versions.get("platform")),
            ("git commit", prov.get("git_commit")), ("started", doc.get("created")), ("variant", _variant(doc)), ("seed", cfg.get("seed", doc.get("seed")))]  # fmt: skip
    return [(k, "not recorded" if v is None or v == "" else str(v)) for k, v in rows]


def _variant(doc: dict[str, Any]) -> str:
    tier = doc.get("config", {}).get("tier")
    base = "quick" if doc.get("quick") else "full"
    return f"{base} (tier {tier})" if tier else base


def provenance_html(run: RunSummary) -> list[str]:
    """The run's provenance and configuration, folded."""
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in provenance_rows(run))
    cfg = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(run.config.get("config", {}).items()))
    return [f"<details><summary>Provenance and configuration of <code>{e(str(run.path))}</code></summary><table class='prov'>{rows}"
            f"<tr><th>configuration</th><td><code>{e(cfg)}</code></td></tr></table></details>"]  # fmt: skip


def sweep_html(s: SweepSummary) -> list[str]:
    """Per-claim pass rates over the seeds and the spread (min/median/max) of the measured values, then the seeds."""
    rows = sweep_rows(s)
    parts = [f"<h4>Pass rates over {len(s.runs)} seeds</h4><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in rows[0]) + "</tr>"]
    for c, row in zip(s.claims, rows[1:]):
        cls = "PASS" if c["passed"] == len(s.runs) else "FAIL"
        parts.append(f"<tr><td><code>{e(row[0])}</code></td><td class='{cls}'>{e(row[1])}</td>" + "".join(f"<td class='num'>{e(x)}</td>" for x in row[2:]) + "</tr>")
    parts.append("</table><table><tr><th>seed</th><th>verdict</th><th>run folder</th></tr>")
    parts += [f"<tr><td>{k}</td><td class='{r.verdict}'>{r.verdict} {e(r.detail)}</td><td><code>{e(str(r.path))}</code></td></tr>" for k, r in s.runs]
    return parts + ["</table>"]
