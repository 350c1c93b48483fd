"""Every ```python block of the README and of the hand-written docs pages runs as written.

A small collector rather than pytest-examples: the blocks are scripts, not doctests with printed
output to compare, and one rule is needed beyond "it runs": a block that reads Fashion-MNIST is
skipped, naming the package, when Debian's ``dataset-fashion-mnist`` is not installed (nothing is
ever downloaded). Each block runs alone, in a fresh namespace and an empty working directory, so a
block that relies on a name defined elsewhere fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "docs/getting-started.md", "docs/datasets.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _blocks() -> list[pytest.param]:
    out = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(pytest.param(page, line, m.group(1), id=f"{page}:{line}"))
    return out


def test_the_pages_have_code_blocks() -> None:
    assert len(_blocks()) >= 10


@pytest.mark.parametrize(("page", "line", "code"), _blocks())
def test_code_block_runs_as_written(page, line, code, tmp_path, monkeypatch) -> None:
    if "fashion_mnist" in code:
        from collapselab.core.data import FASHION_MNIST_ROOT

        if not FASHION_MNIST_ROOT.is_dir():
            pytest.skip(f"{page}:{line} reads Fashion-MNIST; install it with `apt-get install dataset-fashion-mnist` (make test does as root)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "__readme__"})
