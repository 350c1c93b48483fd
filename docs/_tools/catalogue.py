"""The experiments catalogue of the documentation (docs/reference/experiments.md).

Claims are produced at run time, so the catalogue is built from runs and checked against them:

- ``python docs/_tools/catalogue.py claims`` runs every experiment's ``--quick`` variant at
  seed 0 (one torch thread) and writes each claim's signature (id, statement, source,
  comparator, reference, tolerance reason) to ``docs/reference/experiments-claims.json``;
- ``python docs/_tools/catalogue.py page`` writes ``docs/reference/experiments.md`` from the
  registry (summary, source, configuration fields with defaults and bounds, quick overrides)
  and that file. ``make catalogue`` does both.

The page cannot go stale: ``tests/docs/test_catalogue.py`` fails when the page differs from what
``page`` writes, and every test that runs a quick variant (at its own seeds) checks the claims
against the committed file with :func:`differences` (the ``claims_catalogue`` fixture of
``tests/conftest.py``). Rerun ``make catalogue`` after changing an experiment's claims or
configuration.

The comparison masks the numbers in references and tolerance reasons: a reason such as
``cond(D)^2 = 9.28e+03`` reports a value measured in that run, which differs between seeds and
machines; their words, and the ids, sources (exactly) and comparators, must match. A claim recorded as not applicable at one seed and tested at another
(an outcome the claim depends on) is compared by id, source and reference only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
CLAIMS_FILE = DOCS / "reference" / "experiments-claims.json"
PAGE_FILE = DOCS / "reference" / "experiments.md"
SEED = 0
SIGNATURE = ("id", "claim", "source", "comparator", "reference", "tolerance_reason")


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _masked(text: str) -> str:
    return _NUMBER.sub("#", " ".join(str(text).split()))


def differences(name: str, claims: Iterable[Any], catalogue: Mapping[str, list[Mapping[str, str]]] | None = None) -> list[str]:
    """How the claims of a quick run of ``name`` differ from the catalogue (empty: they match)."""
    doc = json.loads(CLAIMS_FILE.read_text()) if catalogue is None else catalogue
    if name not in doc:
        return [f"{name} is not in {CLAIMS_FILE.name}; run `make catalogue`"]
    want = {c["id"]: c for c in doc[name]}
    got = {c["id"]: c for c in claim_signatures(claims)}
    out = [f"{name}: claim {i!r} is not in the catalogue" for i in got if i not in want]
    out += [f"{name}: catalogued claim {i!r} was not recorded" for i in want if i not in got]
    for i in sorted(set(want) & set(got)):
        fields = ["source", "reference"]
        if want[i]["comparator"] == got[i]["comparator"]:
            fields.append("tolerance_reason")
        elif "not_applicable" not in (want[i]["comparator"], got[i]["comparator"]):
            out.append(f"{name}: claim {i!r} comparator {got[i]['comparator']!r}, catalogued {want[i]['comparator']!r}")
        out += [f"{name}: claim {i!r} {f} differs from the catalogue:\n  run:       {got[i][f]}\n  catalogue: {want[i][f]}"
                for f in fields if (got[i][f] != want[i][f] if f == "source" else _masked(got[i][f]) != _masked(want[i][f]))]
    if out:
        out.append("if the change is intended, run `make catalogue` and commit docs/reference/experiments*")
    return out


def claim_signatures(claims: Iterable[Any]) -> list[dict[str, str]]:
    """The fields of each claim that do not depend on the measured numbers, in the run's order."""
    return [{k: str(getattr(c, k)) for k in SIGNATURE} for c in claims]


def quick_run_signatures(name: str, out: Path) -> list[dict[str, str]]:
    """Run ``name``'s quick variant at seed 0 on one thread into ``out``; its claims' signatures."""
    from collapselab.experiments import run_experiment

    result = run_experiment(name, {"seed": SEED}, out=out, quick=True, show_progress=False, threads=1)
    return claim_signatures(result.claims)


def write_claims(names: Iterable[str] | None = None) -> None:
    """Rerun the quick variants (all, or ``names``) and update the claims file."""
    from collapselab.experiments import experiments

    doc = json.loads(CLAIMS_FILE.read_text()) if CLAIMS_FILE.exists() else {}
    todo = list(names or experiments())
    with tempfile.TemporaryDirectory(prefix="collapselab-catalogue-") as tmp:
        for name in todo:
            print(f"quick run of {name} (seed {SEED})", file=sys.stderr, flush=True)
            doc[name] = quick_run_signatures(name, Path(tmp))
    known = set(experiments())
    doc = {k: doc[k] for k in sorted(doc) if k in known}
    CLAIMS_FILE.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


# -- the page ---------------------------------------------------------------------------

def _md(text: Any) -> str:
    """Plain text inside a markdown table cell or paragraph: pipes escaped, one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _bounds(info: Any) -> str:
    """The constraints pydantic enforces on a field (``>= 1``, ``<= 1e4``, length 3..12), as text."""
    names = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <="}
    parts = []
    for m in info.metadata:
        for attr, sym in names.items():
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    inner = _item_bounds(info.annotation)
    if inner:
        parts.append(f"each item {inner}")
    return ", ".join(parts)


def _item_bounds(annotation: Any) -> str:
    """Constraints on the items of a ``list[Annotated[int, Field(ge=..)]]`` field."""
    import typing

    args = typing.get_args(annotation)
    for a in args:
        meta = getattr(a, "__metadata__", ())
        found = []
        for m in meta:
            for sub in getattr(m, "metadata", [m]):
                for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    v = getattr(sub, attr, None)
                    if v is not None:
                        found.append(f"{sym} {v}")
        if found:
            return ", ".join(found)
    return ""


def _type_name(annotation: Any) -> str:
    """``list[int]`` for ``list[Annotated[int, Field(...)]]``, ``Literal['a', 'b']`` spelled out."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    name = getattr(origin, "__name__", str(origin))
    if name == "UnionType" or origin is typing.Union:
        return " | ".join(_type_name(a) for a in args)
    return f"{name}[{', '.join(_type_name(a) for a in args)}]"


def _config_rows(exp: Any) -> list[str]:
    from pydantic_core import PydanticUndefined

    rows = ["| field | type | default | bounds | quick | meaning |", "|---|---|---|---|---|---|"]
    tiers = getattr(exp.config, "TIERS", {})
    quick = dict(exp.quick)
    quick_tier = tiers.get(quick.get("tier"), {}) if "tier" in quick else {}
    for name, info in exp.config.model_fields.items():
        default = info.default if info.default is not PydanticUndefined else (info.default_factory() if info.default_factory else None)
        q = quick.get(name, quick_tier.get(name))
        rows.append(
            f"| `{name}` | {_md(_type_name(info.annotation))} | {_code(default)} | {_md(_bounds(info)) or '-'} | "
            f"{_code(q) if q is not None else '-'} | {_md(info.description or '')} |"
        )
    return rows


def _claim_section(exp_name: str, c: Mapping[str, str]) -> list[str]:
    return [
        f"(claim-{exp_name}-{c['id']})=",
        f"#### `{c['id']}`",
        "",
        _md(c["claim"]),
        "",
        f"- comparator: `{c['comparator']}`",
        f"- source: {_md(c['source'])}",
        f"- reference: {_md(c['reference'])}",
        f"- {'why not applicable' if c['comparator'] == 'not_applicable' else 'tolerance'}: {_md(c['tolerance_reason'])}",
        "",
    ]


def render_page(claims: Mapping[str, list[Mapping[str, str]]]) -> str:
    """The catalogue page: every registered experiment with its configuration and its quick-run claims."""
    from collapselab.experiments import experiments

    out = [
        "<!-- Generated by docs/_tools/catalogue.py (make catalogue) from the experiment registry and",
        "     docs/reference/experiments-claims.json; edit the experiments, not this file. -->",
        "",
        "# Experiments catalogue",
        "",
        "Every experiment is a registered, configurable run (`collapselab run NAME`) that writes a",
        "{doc}`run folder <run-folders>` and a verdict for each of its claims. Below, for each",
        "experiment: what it checks, where its claims come from, its configuration (`--set key=value`;",
        "the *quick* column is what `--quick` changes) and the claims its quick variant records at seed 0,",
        "each with its comparator, its source, the independent reference it is compared with, and the",
        "error model behind its tolerance (or why it does not apply to the quick variant).",
        "A full run records the same claims; some that the quick tier records as not applicable are",
        "tested there.",
        "",
        "The page cannot drift from the code: every test that runs an experiment's quick variant (at",
        "seeds other than 0) checks that the run records exactly these claim ids, with these sources,",
        "and references and tolerance reasons that differ from the text below at most in the numbers",
        "they report from the run (a condition number, a measured radius).",
        "",
    ]
    for name, exp in experiments().items():
        out += [
            f"(experiment-{name})=",
            f"## `{name}`",
            "",
            _md(exp.summary),
            "",
            f"Source: {_md(exp.source)}. Code: `{exp.run.__module__}`.",
            "",
            "```bash",
            f"collapselab run {name} --quick",
            "```",
            "",
            "### Configuration",
            "",
            *_config_rows(exp),
            "",
            "### Claims",
            "",
        ]
        recorded = claims.get(name)
        if not recorded:
            out += ["No quick run recorded yet: run `make catalogue`.", ""]
            continue
        for c in recorded:
            out += _claim_section(name, c)
    return "\n".join(out).rstrip() + "\n"


def write_page() -> None:
    claims = json.loads(CLAIMS_FILE.read_text()) if CLAIMS_FILE.exists() else {}
    PAGE_FILE.write_text(render_page(claims))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("claims", help="rerun the quick variants at seed 0 and write the claims file")
    c.add_argument("names", nargs="*", help="experiments to rerun (default: all)")
    sub.add_parser("page", help="write docs/reference/experiments.md")
    args = parser.parse_args(argv)
    if args.what == "claims":
        write_claims(args.names)
    write_page()


if __name__ == "__main__":
    main()
