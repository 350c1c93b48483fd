"""Nothing in the repository points outside it: no file refers to the development notes
(``spec/``, ``shared/``), which a clone does not have, or to an internal issue number ("issue 5").
The theory, its errata ledger, the data sets and the benchmarks are documented in docs/
(docs/theory/*.md, docs/datasets.md, docs/benchmarks/*.md); cite the paper and those pages instead.

Every file git tracks is scanned (all of the checkout when git is unavailable), this one excepted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"(?<![\w./-])(?:\.\./)*(?:shared|spec)/|\bspec\s+(?:\w+\.md|erratum|errata|\d+\.\d+)|\bissues?[- ]#?\d+", re.I)


def _files() -> list[Path]:
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
        return [ROOT / p for p in out.split("\0") if p]
    skip = {".git", ".venv", "__pycache__", "_build", "generated"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_file_points_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    found = []
    for path in _files():
        if path.resolve() == me or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (figures, archives)
        for lineno, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}")
    assert not found, "references outside the repository (cite the paper and the docs page instead):\n" + "\n".join(found)
